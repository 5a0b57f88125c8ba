"""cryptofeed's raw-data capture logs, the old layout and the current one.

  configuration: {json}                         the current recorder's first line (a header)
  wss://stream.binance.com:9443/stream?... <-> 1617647603.1   a connect line: names the stream URL;
                                                also mid-file after a reconnect (a gap may follow)
  1617647603.4249449: {raw websocket frame}     a websocket line (receive time in seconds)
  https://.../api/v3/depth?symbol=X&limit=1000 -> 1617647603.8: {REST body}   a REST line
  wss://ws.okx.com:8443/ws/v5/public <- 1652459225.2: {json}   what the client sent (a
                                                subscription): not a record, never a dead letter
  1618678070.9: b'\x1f\x8b...'                  a binary frame (HTX's gzip, older OKX's raw deflate)
                                                written as a Python bytes literal: parsed without
                                                evaluating code, inflated to at most
                                                --max_record_bytes

Old layout: ws and REST lines in two files (`*.ws.*` starting with the connect line, `*.http.*`);
current: one file. The connect line's URL names the exchange (adapters.stream_of_url: every venue's
hosts, former names included); REST lines name their exchange, market and symbol in the URL (any
depth-snapshot endpoint an adapter knows: Binance's, KuCoin's, Gate.io's).
"""
from __future__ import annotations

import ast
import json
import re
import zlib
from typing import Optional, Sequence

import msgspec

from beam_pipeline.core import adapters
from beam_pipeline.core.framings._stamps import seconds_ms
from beam_pipeline.core.framings.base import (CONNECT, HEADER, MESSAGE, OTHER, SENT, SNAPSHOT,
                                              Control, FileContext, Record)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "cryptofeed"
PRIORITY = 10
DESCRIPTION = ("cryptofeed raw capture logs, old (ws and http files) and current (one file, "
               "`configuration:` header)")
EXAMPLE = (b'1633998512.0633569: {"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate",'
           b'"E":1633998512068,"s":"NKNUSDT","U":499869750,"u":499869752,"b":[],"a":[]}}')
BLANK_IS_DISCONNECT = False
CONNECTIONS = True      # a connect line starts a connection: the frames after it are its own, in
                        # receive order (transforms/lines.py checks a venue's connection numbers)

# Capture stamps are seconds since the epoch: at most 12 digits before the point (past year 9999
# is rejected when parsed).
_CONNECT = re.compile(rb"^\S+ <-> \d{1,12}(\.\d+)?\s*$")
_CONFIGURATION = re.compile(rb"^configuration: ")
_WS_LINE = re.compile(rb"^\d{1,12}(\.\d+)?: ")
_REST_LINE = re.compile(rb"^\S+ -> \d{1,12}(\.\d+)?: ")
_SENT_LINE = re.compile(rb"^\S+ <- \d{1,12}(\.\d+)?: ")
# A Python bytes literal as repr() writes one: b'...' or b"...", printable ASCII and escapes only.
_BYTES_LITERAL = re.compile(rb"""^b(?:'(?:[^'\\\x00-\x1f\x7f-\xff]|\\[\\'"abfnrtv]|\\x[0-9a-fA-F]{2})*'"""
                            rb"""|"(?:[^"\\\x00-\x1f\x7f-\xff]|\\[\\'"abfnrtv]|\\x[0-9a-fA-F]{2})*")\s*$""")


def looks_like(line: bytes) -> bool:
    return bool(_WS_LINE.match(line) or _REST_LINE.match(line) or _CONNECT.match(line)
                or _CONFIGURATION.match(line) or _SENT_LINE.match(line))


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
    if _SENT_LINE.match(line):
        return Control(SENT, ctx)
    return None


_SUBSCRIBED = re.compile(rb'"event":\s*"subscribed"')


def observe(line: bytes, ctx: FileContext) -> FileContext:
    """A Bitfinex subscribe reply names the channel id its messages carry: remember it for the
    records after it on this connection (a connect line starts a new context)."""
    if ctx.exchange != "bitfinex" or b'"chanId"' not in line or not _SUBSCRIBED.search(line):
        return ctx
    try:
        reply = json.loads(line.partition(b": ")[2])
        chan_id = int(reply["chanId"])
        what = "|".join(str(reply.get(key, "")) for key in ("channel", "symbol", "prec"))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return ctx                                 # the record itself will say what is wrong
    channels = dict(ctx.channels or {})
    channels[chan_id] = what
    return msgspec.structs.replace(ctx, channels=channels)


def split(line: bytes, ctx: FileContext) -> Record:
    if _WS_LINE.match(line):
        stamp, _, raw = line.partition(b": ")
        if ctx.exchange is None:
            raise Rejected(Reason.BAD_FRAMING, "websocket line before a header naming the stream URL")
        if raw[:2] in (b"b'", b'b"'):
            raw = binary_frame(raw, ctx.max_record_bytes)
        return Record(MESSAGE, raw, seconds_ms(stamp), ctx.exchange, ctx.market,
                      channels=ctx.channels)
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


def binary_frame(literal: bytes, max_bytes: Optional[int]) -> bytes:
    """A binary frame written as a Python bytes literal -> the text frame it carries.

    The literal is checked against the grammar repr() writes (quotes, printable ASCII, simple and
    \\xNN escapes) before ast.literal_eval reads it: no code is evaluated, and its size is already
    bounded by --max_record_bytes (the record's). A gzip (HTX) or zlib stream is inflated, else raw
    deflate (older OKX); the inflated text may not exceed `max_bytes` either."""
    if not _BYTES_LITERAL.match(literal):
        raise Rejected(Reason.BAD_FRAMING, "a binary frame that is not a plain Python bytes literal")
    data = ast.literal_eval(literal.decode("ascii").rstrip())
    if data[:2] == b"\x1f\x8b":
        wbits = 31                                      # gzip
    elif len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        wbits = 15                                      # zlib
    else:
        wbits = -15                                     # raw deflate
    inflater = zlib.decompressobj(wbits)
    limit = max_bytes if max_bytes is not None else 64 * 1024 * 1024
    try:
        text = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        raise Rejected(Reason.BAD_FRAMING, f"a compressed binary frame that does not inflate: {error}") from None
    if len(text) > limit:
        raise Rejected(Reason.RECORD_TOO_LARGE, f"a compressed frame inflating past "
                       f"--max_record_bytes={limit}")
    if not inflater.eof:
        raise Rejected(Reason.BAD_FRAMING, "a compressed binary frame cut short")
    return text
