"""Input formats: how records are framed in a file or a Pub/Sub message, before any exchange logic.

  envelope    JSON Lines {"exchange", "market", "symbol", "recv_ts_ms", "type", "payload"}
  binance     raw Binance websocket messages, bare or combined-stream
  cryptofeed  cryptofeed raw capture logs: a websocket log (`<url> <-> <ts>` header, then
              `<recv_ts>: <json>` lines) or a REST log (`<url> -> <recv_ts>: <json>` lines)

A framing turns one record into an Event (via the exchange adapter), None for another stream's
message (counted as ignored), or raises Rejected with a reason code.
"""
from __future__ import annotations

import re
from typing import Optional

import msgspec

from beam_pipeline.core.adapters import adapter_for
from beam_pipeline.core.reasons import Reason, Rejected
from beam_pipeline.core.adapters.binance import LAST_MS, TimeMs, rejection  # msgspec errors map alike everywhere
from beam_pipeline.core.model import Event

# Capture stamps are seconds since the epoch: at most 12 digits before the point; parse_seconds_ms
# rejects those past year 9999.
_CRYPTOFEED_HEADER = re.compile(rb"^\S+ <-> \d{1,12}(\.\d+)?\s*$")
_CRYPTOFEED_WS_LINE = re.compile(rb"^\d{1,12}(\.\d+)?: ")
_CRYPTOFEED_REST_LINE = re.compile(rb"^\S+ -> \d{1,12}(\.\d+)?: ")


class _Envelope(msgspec.Struct):
    exchange: str
    market: str
    symbol: str
    recv_ts_ms: TimeMs
    type: str
    payload: msgspec.Raw


_envelope_decoder = msgspec.json.Decoder(_Envelope)


class FileContext(msgspec.Struct):
    """What a file's framing needs to know beyond one line (cryptofeed: the websocket URL)."""

    fmt: str
    exchange: Optional[str] = None
    market: Optional[str] = None


def is_header(line: bytes) -> bool:
    return bool(_CRYPTOFEED_HEADER.match(line))


def detect_format(first_record: bytes) -> str:
    """Guess a file's format from its first non-blank line."""
    head = first_record.lstrip()
    if is_header(head) or _CRYPTOFEED_WS_LINE.match(head) or _CRYPTOFEED_REST_LINE.match(head):
        return "cryptofeed"
    if head.startswith(b"{") and b'"payload"' in head and b'"exchange"' in head:
        return "envelope"
    return "binance"


def context_from_header(fmt: str, header: bytes) -> FileContext:
    """A cryptofeed websocket log names its stream URL in the header: it tells exchange and market."""
    url = header.split(b" ", 1)[0].decode("utf-8", "replace")
    exchange, market = _exchange_of_url(url)
    return FileContext(fmt, exchange, market)


def _exchange_of_url(url: str):
    """(exchange, market) of a capture URL, or (None, None) when no adapter recognises it."""
    for name in ("binance",):
        market = adapter_for(name).market_from_url(url)
        if market is not None:
            return name, market
    return None, None


def parse_seconds_ms(text: bytes) -> int:
    """'1633998512.0633569' -> 1633998512063, without float rounding."""
    whole, _, frac = text.partition(b".")
    ms = int(whole) * 1000 + int((frac[:3] or b"0").ljust(3, b"0"))
    if ms > LAST_MS:
        raise Rejected(Reason.MISTYPED_FIELD, f"capture time {text[:20]!r} is past the year 9999")
    return ms


def _rejecting_the_unparseable(decode):
    """Inputs that break a parser in ways msgspec does not report as DecodeError."""
    def guarded(*args):
        try:
            return decode(*args)
        except RecursionError:
            raise Rejected(Reason.BAD_JSON, "JSON nested too deeply to parse") from None
        except UnicodeDecodeError as error:
            raise Rejected(Reason.INVALID_UTF8, str(error)) from None
    return guarded


def _looks_like_envelope(line: bytes) -> bool:
    return b'"payload"' in line and b'"exchange"' in line


@_rejecting_the_unparseable
def decode_record(line: bytes, ctx: FileContext, source: str) -> Optional[Event]:
    """One record of a file in the given format -> Event, None (ignored), or raises Rejected."""
    if ctx.fmt == "envelope" or (ctx.fmt == "binance" and _looks_like_envelope(line)):
        # an envelope file whose first line was garbage is detected as binance: still decode it
        return decode_envelope(line, source)
    if ctx.fmt == "binance":
        return adapter_for(ctx.exchange or "binance").decode_message(line, None, source, ctx.market)
    if ctx.fmt == "cryptofeed":
        return _decode_cryptofeed(line, ctx, source)
    raise Rejected(Reason.UNKNOWN_FORMAT, f"unknown input format {ctx.fmt!r}")


def decode_envelope(line: bytes, source: str) -> Optional[Event]:
    try:
        env = _envelope_decoder.decode(line)
    except msgspec.DecodeError as error:
        raise rejection(error) from None
    adapter = adapter_for(env.exchange)
    payload = bytes(env.payload)
    if env.type == "delta":
        return adapter.decode_delta(payload, env.market, env.recv_ts_ms, source, env.symbol)
    if env.type == "snapshot":
        return adapter.decode_snapshot(payload, env.market, env.symbol, env.recv_ts_ms, source)
    return None  # another stream's message wrapped in an envelope


@_rejecting_the_unparseable
def decode_message(data: bytes, attributes: dict, source: str) -> Optional[Event]:
    """A Pub/Sub message: one envelope, or one raw exchange message described by its attributes."""
    if _looks_like_envelope(data):
        return decode_envelope(data, source)
    recv = attributes.get("recv_ts_ms")
    try:
        recv_time = int(recv) if recv is not None else None
    except ValueError:
        raise Rejected(Reason.MISTYPED_FIELD, f"attribute recv_ts_ms={recv!r} is not an integer") from None
    if recv_time is not None and not 0 <= recv_time <= LAST_MS:
        raise Rejected(Reason.MISTYPED_FIELD, f"attribute recv_ts_ms={recv!r} is out of range")
    adapter = adapter_for(attributes.get("exchange", "binance"))
    event = adapter.decode_message(data, recv_time, source, attributes.get("market"))
    if event is not None and attributes.get("symbol") not in (None, event.symbol):
        raise Rejected(Reason.SYMBOL_MISMATCH,
                       f"attribute symbol {attributes['symbol']!r} but payload symbol {event.symbol!r}")
    return event


def _decode_cryptofeed(line: bytes, ctx: FileContext, source: str) -> Optional[Event]:
    if _CRYPTOFEED_WS_LINE.match(line):
        stamp, _, raw = line.partition(b": ")
        if ctx.exchange is None:
            raise Rejected(Reason.BAD_FRAMING, "websocket line before a header naming the stream URL")
        return adapter_for(ctx.exchange).decode_message(raw, parse_seconds_ms(stamp), source, ctx.market)
    if _CRYPTOFEED_REST_LINE.match(line):
        head, _, raw = line.partition(b": ")
        url_bytes, _, stamp = head.partition(b" -> ")
        url = url_bytes.decode("utf-8")
        exchange, market = _exchange_of_url(url)
        if exchange is None:
            raise Rejected(Reason.UNSUPPORTED_EXCHANGE, f"no adapter recognises {url}")
        adapter = adapter_for(exchange)
        if not adapter.is_depth_snapshot_url(url):
            return None
        symbol = adapter.symbol_from_url(url)
        if symbol is None:
            raise Rejected(Reason.MISSING_FIELD, f"REST URL without symbol= parameter: {url}")
        return adapter.decode_snapshot(raw, market, symbol, parse_seconds_ms(stamp), source)
    raise Rejected(Reason.BAD_FRAMING, "not a cryptofeed line: expected '<ts>: <json>' or '<url> -> <ts>: <json>'")
