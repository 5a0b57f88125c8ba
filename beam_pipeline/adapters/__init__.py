"""Exchange adapters: one module per exchange turns its messages into the normalized Event.

Each adapter module exposes NAME, decode_message (a raw websocket message), decode_delta and
decode_snapshot (a payload whose kind is already known), and the URL helpers the capture formats need.
Anything an adapter cannot use raises Rejected with a reason code; a message of another stream
(trades, tickers, klines) decodes to None and is counted as ignored.
"""
from __future__ import annotations


class Rejected(Exception):
    """A record that cannot be used: `reason` is a stable code, the message says what was wrong."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


_ADAPTERS: dict = {}


def adapter_for(exchange: str):
    if not _ADAPTERS:           # filled on first use: the adapter modules import this one
        from beam_pipeline.adapters import binance  # adding an exchange is one line here
        _ADAPTERS.update({binance.NAME: binance})
    try:
        return _ADAPTERS[exchange]
    except KeyError:
        raise Rejected("unsupported_exchange", f"no adapter for exchange {exchange!r}") from None
