"""Tardis.dev raw replays as its clients save them: `{"localTimestamp": ISO-8601, "message": {...}}`
per line, the message being the exchange's own frame (Binance: combined-stream, snapshots in-stream
as `<sym>@depthSnapshot`). In a replay saved with disconnects an empty line marks a disconnect: a
point where a gap may follow."""
from __future__ import annotations

from typing import Optional, Sequence

import msgspec

from beam_pipeline.core.decoding import rejection
from beam_pipeline.core.framings._stamps import iso_ms
from beam_pipeline.core.framings.base import MESSAGE, Control, FileContext, Record

NAME = "tardis"
PRIORITY = 30
DESCRIPTION = 'Tardis.dev raw replays: {"localTimestamp": ISO-8601, "message": {...}} per line'
EXAMPLE = (b'{"localTimestamp":"2024-08-08T23:54:15.123456Z","message":{"stream":'
           b'"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255308,"s":"BTCUSDT",'
           b'"U":5,"u":6,"b":[],"a":[]}}}')
BLANK_IS_DISCONNECT = True
EXCHANGE = "binance"        # a replay line does not name its exchange


class _Line(msgspec.Struct):
    localTimestamp: str
    message: msgspec.Raw


_decoder = msgspec.json.Decoder(_Line)


def looks_like(line: bytes) -> bool:
    return b'"localTimestamp"' in line and b'"message"' in line and line.lstrip().startswith(b"{")


def open(head: Sequence[bytes], path: str) -> FileContext:   # noqa: A001
    return FileContext(NAME)


def control(line: bytes, ctx: FileContext) -> Optional[Control]:
    return None


def split(line: bytes, ctx: FileContext) -> Record:
    try:
        parsed = _decoder.decode(line)
    except msgspec.DecodeError as error:
        raise rejection(error) from None
    return Record(MESSAGE, bytes(parsed.message), iso_ms(parsed.localTimestamp.encode()),
                  ctx.exchange or EXCHANGE, ctx.market)
