"""Binance (binance.com) and Binance.US: spot, USD-M and COIN-M futures depth streams and REST
depth snapshots.

Exchanges: `binance` and `binance_us` (same symbols, different books: never the same key).
Spot `<sym>@depth`: U first id, u last id; continuity is range-plus-one (U <= c+1 <= u).
Futures (usdm, coinm): adds pu (the previous message's u); continuity is previous-link (pu == c).
Snapshots come from REST (/api/v1/depth, /api/v3/depth, /fapi/v1/depth, /dapi/v1/depth, and
api.binance.us) and carry lastUpdateId; Tardis.dev replays carry them in-stream as
`<sym>@depthSnapshot`. Typed msgspec decoding validates every field in C; a failure is mapped to a
reason code.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Optional
from urllib.parse import parse_qs, urlparse

import msgspec

from beam_pipeline.core.decoding import INT64_MAX, LAST_MS, TimeMs, UpdateId, rejection  # noqa: F401
from beam_pipeline.core.model import (DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT, Event,
                                      encode_levels)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "binance"
US = "binance_us"
EXCHANGES = (NAME, US)
RULES = {"spot": RANGE_PLUS_ONE, "usdm": PREVIOUS_LINK, "coinm": PREVIOUS_LINK}

# Binance sends prices and quantities as plain decimal strings; anything else is not a number.
# (\Z, not $: $ also matches before a trailing newline.)
Decimal = Annotated[str, msgspec.Meta(pattern=r"^[0-9]+(\.[0-9]+)?\Z")]
Levels = list[tuple[Decimal, Decimal]]


class _DepthUpdate(msgspec.Struct):
    e: str
    E: TimeMs
    s: str
    U: UpdateId
    u: UpdateId
    b: Levels
    a: Levels
    pu: Optional[Annotated[int, msgspec.Meta(ge=-1, le=INT64_MAX)]] = None
    T: Optional[TimeMs] = None


class _Snapshot(msgspec.Struct):
    lastUpdateId: UpdateId
    bids: Levels
    asks: Levels
    E: Optional[TimeMs] = None
    T: Optional[TimeMs] = None


class _Loose(msgspec.Struct):
    """Any JSON object: what a rejected message still tells (its symbol, ids, time)."""

    s: Any = None
    U: Any = None
    u: Any = None
    E: Any = None
    lastUpdateId: Any = None


class _Combined(msgspec.Struct):
    stream: str
    data: msgspec.Raw


class _Probe(msgspec.Struct):
    e: Optional[str] = None
    U: Optional[msgspec.Raw] = None


class _DepthUpdateFast(msgspec.Struct):
    """_DepthUpdate with the levels left undecoded: see _decode_depth."""

    e: str
    E: TimeMs
    s: str
    U: UpdateId
    u: UpdateId
    b: msgspec.Raw
    a: msgspec.Raw
    pu: Optional[Annotated[int, msgspec.Meta(ge=-1, le=INT64_MAX)]] = None
    T: Optional[TimeMs] = None


# A level array in Binance's own compact form, every string already a valid Decimal: one regex
# pass over the raw bytes instead of one pattern check per string (the checks were 70% of the
# decoding time). Anything else (whitespace, escapes, bad numbers) takes the typed decoder.
# Written without lookarounds: "[", then nothing or LEVEL (, LEVEL)*, then "]" (1.3-2x faster).
# Possessive quantifiers (Python 3.11+): the grammar never needs to give a character back (a digit
# run ends at "." or '"', a level at "," or "]"), so the language is the same and re keeps no
# backtracking points: 1.5 against 2.3 us an array, measured (tests/unit/test_batch_decode.py
# checks it against the plain pattern).
_LEVEL = rb'\["[0-9]++(?:\.[0-9]++)?+","[0-9]++(?:\.[0-9]++)?+"\]'
_COMPACT_LEVELS = re.compile(rb'\[(?:' + _LEVEL + rb'(?:,' + _LEVEL + rb')*+)?+\]\Z')

_depth_decoder = msgspec.json.Decoder(_DepthUpdate)
_depth_fast_decoder = msgspec.json.Decoder(_DepthUpdateFast)
_snapshot_decoder = msgspec.json.Decoder(_Snapshot)
_combined_decoder = msgspec.json.Decoder(_Combined)
_probe_decoder = msgspec.json.Decoder(_Probe)
_loose_decoder = msgspec.json.Decoder(_Loose)


def _int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def stream_of(exchange: str, market: Optional[str], symbol) -> Optional[str]:
    """exchange:market:symbol of a rejected record, as far as it is known (None without a symbol)."""
    if not isinstance(symbol, str):
        return None
    return f"{exchange}:{market or '?'}:{symbol}"


def _context(payload: bytes, market: Optional[str], exchange: str,
             symbol: Optional[str] = None) -> dict:
    """What a payload that failed typed decoding still yields, for its dead letter."""
    try:
        loose = _loose_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return {"symbol": stream_of(exchange, market, symbol)}
    first = _int(loose.U) if loose.U is not None else _int(loose.lastUpdateId)
    last = _int(loose.u) if loose.u is not None else _int(loose.lastUpdateId)
    return {"symbol": stream_of(exchange, market, symbol or loose.s), "first_id": first, "last_id": last,
            "event_time": _int(loose.E)}


def _msg_context(msg, market: Optional[str], exchange: str) -> dict:
    return {"symbol": stream_of(exchange, market, msg.s), "first_id": msg.U, "last_id": msg.u,
            "event_time": msg.E}


def market_of(market: Optional[str], has_prev: bool) -> str:
    if market is None:
        return "usdm" if has_prev else "spot"
    if market not in RULES:
        raise Rejected(Reason.UNKNOWN_MARKET, f"binance has no market {market!r} (known: {sorted(RULES)})")
    return market


def exchange_of(exchange: Optional[str]) -> str:
    if exchange is None:
        return NAME
    if exchange not in EXCHANGES:
        raise Rejected(Reason.UNSUPPORTED_EXCHANGE, f"the binance adapter decodes {EXCHANGES}, not {exchange!r}")
    return exchange


def _delta_event(msg: _DepthUpdate, market: Optional[str], recv_time, source,
                 exchange: str = NAME) -> Event:
    try:
        market = market_of(market, msg.pu is not None)
    except Rejected as rejected:
        raise rejected.known(**_msg_context(msg, market, exchange)) from None
    if msg.U > msg.u:
        raise Rejected(Reason.INVALID_IDS, f"first update id U={msg.U} is after last update id u={msg.u}",
                       **_msg_context(msg, market, exchange))
    rule = RULES[market]
    if rule == PREVIOUS_LINK and msg.pu is None:
        raise Rejected(Reason.MISSING_PREV_ID, f"a {market} delta must carry pu (previous u)",
                       **_msg_context(msg, market, exchange))
    return Event(exchange, market, msg.s, DELTA, msg.U, msg.u, msg.pu, msg.E, recv_time,
                 msg.b, msg.a, rule, source)


def decode_delta(payload: bytes, market: Optional[str], recv_time: Optional[int], source: str,
                 symbol: Optional[str] = None, exchange: Optional[str] = None) -> Optional[Event]:
    """A payload that should be a depthUpdate. None when it is another stream's message."""
    exchange = exchange_of(exchange)
    try:
        return _decode_delta(payload, market, recv_time, source, symbol, exchange)
    except Rejected as rejected:       # no exchange time: the receive time dates the rejection
        raise rejected.known(event_time=recv_time) from None


def _decode_delta(payload, market, recv_time, source, symbol, exchange):
    try:
        msg = _decode_depth(payload)
    except Rejected as rejected:
        raise rejected.known(**_context(payload, market, exchange, symbol)) from None
    if msg is None or msg.e != "depthUpdate":
        return None
    if symbol is not None and msg.s != symbol:
        # filed under the envelope's symbol: that is the stream whose error counts it joins
        raise Rejected(Reason.SYMBOL_MISMATCH, f"envelope symbol {symbol!r} but payload symbol {msg.s!r}",
                       **dict(_msg_context(msg, market, exchange),
                              symbol=stream_of(exchange, market, symbol)))
    return _delta_event(msg, market, recv_time, source, exchange)


def _plain_shape(payload: bytes) -> bool:
    """No escapes and one "b" and one "a" key: a repeated key (the typed decoder checks every
    occurrence, the fast one only the last) or an escaped one takes the typed decoder."""
    return b"\\" not in payload and payload.count(b'"b"') == 1 and payload.count(b'"a"') == 1


def _decode_depth(payload: bytes):
    """The payload as a depth update (a _DepthUpdate or an equal _DepthUpdateFast, levels as
    their canonical text), None for another stream's message, or raises Rejected.

    Fast path: levels in compact form are validated by one regex and kept as the bytes they came
    in, which are already the canonical text; it accepts a subset of what the typed decoder accepts,
    with the same values (property test: tests/test_fast_paths.py). Everything else, and every
    rejection, is the typed decoder's.
    """
    fast = None
    if _plain_shape(payload):
        try:
            fast = _depth_fast_decoder.decode(payload)
        except msgspec.DecodeError:
            pass
    if fast is not None and _COMPACT_LEVELS.match(fast.b) and _COMPACT_LEVELS.match(fast.a):
        fast.b, fast.a = bytes(fast.b), bytes(fast.a)
        return fast
    return decode_depth_typed(payload)


def decode_depth_typed(payload: bytes):
    """The reference: the typed decoder alone (every field checked, every rejection's reason)."""
    try:
        msg = _depth_decoder.decode(payload)
    except msgspec.DecodeError as error:
        if _is_other_stream(payload):
            return None
        raise rejection(error) from None
    msg.b, msg.a = encode_levels(msg.b), encode_levels(msg.a)
    return msg


def decode_snapshot(payload: bytes, market: Optional[str], symbol: str, recv_time: Optional[int],
                    source: str, exchange: Optional[str] = None) -> Event:
    """A REST depth snapshot; its symbol comes from the request (the body does not say)."""
    exchange = exchange_of(exchange)
    try:
        return _decode_snapshot(payload, market, symbol, recv_time, source, exchange)
    except Rejected as rejected:
        raise rejected.known(event_time=recv_time) from None


def _decode_snapshot(payload, market, symbol, recv_time, source, exchange):
    try:
        msg = _snapshot_decoder.decode(payload)
    except msgspec.DecodeError as error:
        raise rejection(error).known(**_context(payload, market, exchange, symbol)) from None
    try:
        market = market_of(market, msg.T is not None)
    except Rejected as rejected:
        raise rejected.known(symbol=stream_of(exchange, market, symbol), first_id=msg.lastUpdateId,
                             last_id=msg.lastUpdateId, event_time=msg.E) from None
    return Event(exchange, market, symbol, SNAPSHOT, msg.lastUpdateId, msg.lastUpdateId, None,
                 msg.E, recv_time, encode_levels(msg.bids), encode_levels(msg.asks), RULES[market],
                 source)


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None) -> Optional[Event]:
    """A raw websocket message, bare or combined-stream. None for other streams.

    `file_symbol`: the file carries REST snapshot bodies in its stream (hftbacktest): such a body is
    a snapshot of this symbol ("" when the file's symbol is unknown: a dead letter)."""
    # Not a prefix test: whitespace or another key order must not turn a depth update into "ignored"
    if b'"stream"' in raw:
        try:
            combined = _combined_decoder.decode(raw)
        except msgspec.DecodeError:
            combined = None  # not the combined shape after all: decode it as a bare message
        if combined is not None:
            if "@depth" not in combined.stream:
                return None
            data = bytes(combined.data)
            if combined.stream.endswith(SNAPSHOT_STREAM):     # Tardis.dev's in-stream snapshot
                symbol = combined.stream[:-len(SNAPSHOT_STREAM)].upper()
                return decode_snapshot(data, market, symbol, recv_time, source, exchange)
            return decode_delta(data, market, recv_time, source, exchange=exchange)
    if file_symbol is not None and _is_snapshot_body(raw):
        if not file_symbol:
            raise Rejected(Reason.MISSING_FIELD, "a REST depth snapshot in the stream, and the file's "
                           "symbol is unknown (no frame in its first records names one)")
        return decode_snapshot(raw, market, file_symbol, recv_time, source, exchange)
    return decode_delta(raw, market, recv_time, source, exchange=exchange)


SNAPSHOT_STREAM = "@depthSnapshot"


def _is_snapshot_body(raw: bytes) -> bool:
    return b'"lastUpdateId"' in raw and b'"e"' not in raw


def _is_other_stream(payload: bytes) -> bool:
    """True for well-formed JSON objects that are not depth updates (trades, tickers, klines).

    Spot bookTicker messages carry no `e`; a message without `e` is a depth update only if it has U.
    """
    try:
        probe = _probe_decoder.decode(payload)
    except msgspec.DecodeError:
        return False
    if probe.e is None:
        return probe.U is None
    return probe.e != "depthUpdate"


def stream_of_url(url: str) -> Optional[tuple[str, str]]:
    """(exchange, market) of a websocket or REST URL of Binance or Binance.US; None otherwise."""
    try:
        parsed = urlparse(url)
        host, path = parsed.hostname or "", parsed.path
    except ValueError:          # not a URL at all (e.g. an unclosed IPv6 bracket)
        return None
    if host == "binance.us" or host.endswith(".binance.us"):
        return US, "spot"                       # Binance.US lists spot markets only
    if not (host == "binance.com" or host.endswith(".binance.com")):
        return None
    if host.startswith("fstream") or path.startswith("/fapi/"):
        return NAME, "usdm"
    if host.startswith("dstream") or path.startswith("/dapi/"):
        return NAME, "coinm"
    return NAME, "spot"


def market_from_url(url: str) -> Optional[str]:
    """Market of a Binance URL; None when the URL is not Binance's."""
    found = stream_of_url(url)
    return found[1] if found else None


def is_depth_snapshot_url(url: str) -> bool:
    return urlparse(url).path.rstrip("/").endswith("/depth")


def symbol_from_url(url: str) -> Optional[str]:
    values = parse_qs(urlparse(url).query).get("symbol")
    return values[0].upper() if values else None
