"""Exchange adapters: one module per exchange turns its messages into the normalized Event.

Each adapter module exposes NAME, decode_message (a raw websocket message), decode_delta and
decode_snapshot (a payload whose kind is already known), and the URL helpers the capture formats need.
Anything an adapter cannot use raises Rejected with a reason code; a message of another stream
(trades, tickers, klines) decodes to None and is counted as ignored.
"""
from __future__ import annotations

from beam_pipeline.core.adapters import binance
from beam_pipeline.core.reasons import Reason, Rejected


_ADAPTERS = {binance.NAME: binance}     # adding an exchange is one line here


def adapter_for(exchange: str):
    try:
        return _ADAPTERS[exchange]
    except KeyError:
        raise Rejected(Reason.UNSUPPORTED_EXCHANGE, f"no adapter for exchange {exchange!r}") from None
