"""Our envelope: JSON Lines {"exchange", "market", "symbol", "recv_ts_ms", "type", "payload"}."""
from __future__ import annotations

from typing import Optional, Sequence

import msgspec

from beam_pipeline.core.decoding import TimeMs, rejection
from beam_pipeline.core.framings.base import (CONTROL, DELTA, OTHER, SNAPSHOT, Control, FileContext,
                                              Record)
from beam_pipeline.core.markers import MARKER_TYPE

NAME = "envelope"
PRIORITY = 40
DESCRIPTION = ("JSON Lines envelopes {exchange, market, symbol, recv_ts_ms, type, payload}, type "
               "delta, snapshot or disconnect (the collector's marker)")
EXAMPLE = (b'{"exchange":"binance","market":"spot","symbol":"BTCUSDT","recv_ts_ms":1700000000007,'
           b'"type":"delta","payload":{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT","U":5,'
           b'"u":6,"b":[["1.00","2.0"]],"a":[]}}')
BLANK_IS_DISCONNECT = False
_KINDS = {"delta": DELTA, "snapshot": SNAPSHOT, MARKER_TYPE: CONTROL}   # CONTROL: core/markers.py


class _Envelope(msgspec.Struct):
    exchange: str
    market: str
    symbol: str
    recv_ts_ms: TimeMs
    type: str
    payload: msgspec.Raw


_decoder = msgspec.json.Decoder(_Envelope)


def looks_like(line: bytes) -> bool:
    return b'"payload"' in line and b'"exchange"' in line and line.lstrip().startswith(b"{")


def open(head: Sequence[bytes], path: str) -> FileContext:   # noqa: A001  (the contract's name)
    return FileContext(NAME)


def control(line: bytes, ctx: FileContext) -> Optional[Control]:
    return None


def split(line: bytes, ctx: FileContext) -> Record:
    try:
        env = _decoder.decode(line)
    except msgspec.DecodeError as error:
        raise rejection(error) from None
    # another stream's message wrapped in an envelope is ignored, but its exchange still checked
    return Record(_KINDS.get(env.type, OTHER), bytes(env.payload), env.recv_ts_ms, env.exchange,
                  env.market, env.symbol)
