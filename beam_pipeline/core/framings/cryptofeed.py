"""cryptofeed's raw-data capture logs, the old layout and the current one.

  configuration: {json}                         the current recorder's first line (a header)
  wss://stream.binance.com:9443/stream?... <-> 1617647603.1   a connect line: names the stream URL;
                                                also mid-file after a reconnect (a gap may follow)
  1617647603.4249449: {raw websocket frame}     a websocket line (receive time in seconds)
  https://.../api/v3/depth?symbol=X&limit=1000 -> 1617647603.8: {REST body}   a REST line

Old layout: ws and REST lines in two files (`*.ws.*` starting with the connect line, `*.http.*`);
current: one file. REST lines name their exchange, market and symbol in the URL (any depth endpoint
an adapter knows: api/v1, api/v3, fapi/v1, dapi/v1, Binance.US).
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

from beam_pipeline.core import adapters
from beam_pipeline.core.framings._stamps import seconds_ms
from beam_pipeline.core.framings.base import (CONNECT, HEADER, MESSAGE, OTHER, SNAPSHOT, Control,
                                              FileContext, Record)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "cryptofeed"
PRIORITY = 10
DESCRIPTION = ("cryptofeed raw capture logs, old (ws and http files) and current (one file, "
               "`configuration:` header)")
EXAMPLE = (b'1633998512.0633569: {"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate",'
           b'"E":1633998512068,"s":"NKNUSDT","U":499869750,"u":499869752,"b":[],"a":[]}}')
BLANK_IS_DISCONNECT = False

# Capture stamps are seconds since the epoch: at most 12 digits before the point (past year 9999
# is rejected when parsed).
_CONNECT = re.compile(rb"^\S+ <-> \d{1,12}(\.\d+)?\s*$")
_CONFIGURATION = re.compile(rb"^configuration: ")
_WS_LINE = re.compile(rb"^\d{1,12}(\.\d+)?: ")
_REST_LINE = re.compile(rb"^\S+ -> \d{1,12}(\.\d+)?: ")


def looks_like(line: bytes) -> bool:
    return bool(_WS_LINE.match(line) or _REST_LINE.match(line) or _CONNECT.match(line)
                or _CONFIGURATION.match(line))


def open(head: Sequence[bytes], path: str) -> FileContext:   # noqa: A001
    return FileContext(NAME)         # a connect line, when there is one, names the stream


def control(line: bytes, ctx: FileContext) -> Optional[Control]:
    if _CONNECT.match(line):
        url = line.split(b" ", 1)[0].decode("utf-8", "replace")
        found = adapters.stream_of_url(url)
        exchange, market = (found[1], found[2]) if found else (None, None)
        return Control(CONNECT, FileContext(NAME, exchange, market))
    if _CONFIGURATION.match(line):
        return Control(HEADER, ctx)
    return None


def split(line: bytes, ctx: FileContext) -> Record:
    if _WS_LINE.match(line):
        stamp, _, raw = line.partition(b": ")
        if ctx.exchange is None:
            raise Rejected(Reason.BAD_FRAMING, "websocket line before a header naming the stream URL")
        return Record(MESSAGE, raw, seconds_ms(stamp), ctx.exchange, ctx.market)
    if _REST_LINE.match(line):
        head, _, raw = line.partition(b": ")
        url_bytes, _, stamp = head.partition(b" -> ")
        url = url_bytes.decode("utf-8")
        found = adapters.stream_of_url(url)
        if found is None:
            raise Rejected(Reason.UNSUPPORTED_EXCHANGE, f"no adapter recognises {url}")
        adapter, exchange, market = found
        if not adapter.is_depth_snapshot_url(url):
            return Record(OTHER, raw, None, exchange, market)
        symbol = adapter.symbol_from_url(url)
        if symbol is None:
            raise Rejected(Reason.MISSING_FIELD, f"REST URL without symbol= parameter: {url}")
        return Record(SNAPSHOT, raw, seconds_ms(stamp), exchange, market, symbol)
    raise Rejected(Reason.BAD_FRAMING,
                   "not a cryptofeed line: expected '<ts>: <json>' or '<url> -> <ts>: <json>'")
