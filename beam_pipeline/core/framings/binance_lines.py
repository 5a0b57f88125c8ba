"""Raw Binance websocket messages, one a line: bare (`{"e":"depthUpdate",...}`) or combined-stream
(`{"stream":"btcusdt@depth@100ms","data":{...}}`), no receive time. Lines that are envelopes are
read as envelopes (a mixed file, or an envelope file whose first lines were garbage)."""
from __future__ import annotations

from typing import Optional, Sequence

from beam_pipeline.core.framings import envelope
from beam_pipeline.core.framings.base import MESSAGE, Control, FileContext, Record

NAME = "binance"
PRIORITY = 50
DESCRIPTION = "raw Binance websocket messages, bare or combined-stream, one a line"
EXAMPLE = (b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1700000000000,'
           b'"s":"BTCUSDT","U":5,"u":6,"b":[["1.00","2.0"]],"a":[]}}')
BLANK_IS_DISCONNECT = False
EXCHANGE = "binance"        # the lines do not say; this format is Binance's by definition


def looks_like(line: bytes) -> bool:
    return line.lstrip().startswith(b"{")


def open(head: Sequence[bytes], path: str) -> FileContext:   # noqa: A001
    return FileContext(NAME)


def control(line: bytes, ctx: FileContext) -> Optional[Control]:
    return None


def split(line: bytes, ctx: FileContext) -> Record:
    if envelope.looks_like(line):
        return envelope.split(line, ctx)
    return Record(MESSAGE, line, None, ctx.exchange or EXCHANGE, ctx.market)
