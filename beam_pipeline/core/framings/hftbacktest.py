"""hftbacktest's collector files: `<local_timestamp> <raw websocket text frame>` per line, one
symbol a file; the REST depth snapshot taken at subscribe time is a line too, its body without a
symbol: it belongs to the file's symbol, the one its depth frames carry.

The local timestamp is in ns (µs in older files), as the recorder's clock gave it: that clock may
run behind the exchange's (the shared capture's ran ~1.3 s behind `E`); it is kept as is.
"""
from __future__ import annotations

import os
import re
from typing import Optional, Sequence

from beam_pipeline.core.adapters import adapter_for
from beam_pipeline.core.framings._stamps import epoch_integer_ms
from beam_pipeline.core.framings.base import MESSAGE, Control, FileContext, Record
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "hftbacktest"
PRIORITY = 20
DESCRIPTION = "hftbacktest collector files: `<local_timestamp_ns> <raw frame>`, one symbol a file"
EXAMPLE = (b'1723161254036052868 {"stream":"ethusdt@depth@100ms","data":{"e":"depthUpdate",'
           b'"E":1723161255308,"s":"ETHUSDT","U":35346513499,"u":35346513505,"b":[],"a":[]}}')
BLANK_IS_DISCONNECT = False
EXCHANGE = "binance"        # the files do not name the exchange: the collector's Binance feeds

_LINE = re.compile(rb"^\d{13,19} [{\[]")
_FILE_NAME = re.compile(r"^([A-Za-z0-9]+)_\d{8}")       # the collector names files <symbol>_<date>


def looks_like(line: bytes) -> bool:
    return bool(_LINE.match(line))


def open(head: Sequence[bytes], path: str) -> FileContext:   # noqa: A001
    return FileContext(NAME, symbol=_file_symbol(head, path))


def _file_symbol(head: Sequence[bytes], path: str) -> Optional[str]:
    """The symbol the file's first depth frames carry; else the one its name starts with."""
    adapter = adapter_for(EXCHANGE)
    symbols = set()
    for line in head:
        if not _LINE.match(line):
            continue
        try:
            event = adapter.decode_message(line.partition(b" ")[2], None, path)
        except Rejected:
            continue
        if event is not None:
            symbols.add(event.symbol)
    if len(symbols) == 1:
        return symbols.pop()
    if symbols:
        return None              # several symbols: a snapshot line could be any one's
    match = _FILE_NAME.match(os.path.basename(path))
    return match.group(1).upper() if match else None


def control(line: bytes, ctx: FileContext) -> Optional[Control]:
    return None


def split(line: bytes, ctx: FileContext) -> Record:
    stamp, _, raw = line.partition(b" ")
    if not _LINE.match(line):
        raise Rejected(Reason.BAD_FRAMING, "not an hftbacktest line: expected '<local_timestamp> <frame>'")
    return Record(MESSAGE, raw, epoch_integer_ms(stamp), ctx.exchange or EXCHANGE, ctx.market,
                  ctx.symbol, file_snapshots=True)
