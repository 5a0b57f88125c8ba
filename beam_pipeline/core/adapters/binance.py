"""Binance spot and USD-M / COIN-M futures depth streams and REST depth snapshots.

Spot `<sym>@depth`: U first id, u last id; continuity is range-plus-one (U <= c+1 <= u).
Futures: adds pu (the previous message's u); continuity is previous-link (pu == c).
Snapshots come from REST (/api/v3/depth, /fapi/v1/depth, /dapi/v1/depth) and carry lastUpdateId.
Typed msgspec decoding validates every field in C; a failure is mapped to a reason code.
"""
from __future__ import annotations

import re
from typing import Annotated, Optional
from urllib.parse import parse_qs, urlparse

import msgspec

from beam_pipeline.core.reasons import Reason, Rejected
from beam_pipeline.core.model import (DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT, Event,
                                 encode_levels)

NAME = "binance"
RULES = {"spot": RANGE_PLUS_ONE, "usdm": PREVIOUS_LINK, "coinm": PREVIOUS_LINK}

# Binance sends prices and quantities as plain decimal strings; anything else is not a number.
# (\Z, not $: $ also matches before a trailing newline.)
Decimal = Annotated[str, msgspec.Meta(pattern=r"^[0-9]+(\.[0-9]+)?\Z")]
INT64_MAX = 2**63 - 1
LAST_MS = 253402300799999          # 9999-12-31T23:59:59.999Z: later times overflow timestamps
UpdateId = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
TimeMs = Annotated[int, msgspec.Meta(ge=0, le=LAST_MS)]
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
_LEVEL = rb'\["[0-9]+(?:\.[0-9]+)?","[0-9]+(?:\.[0-9]+)?"\]'
_COMPACT_LEVELS = re.compile(rb'\[(?:' + _LEVEL + rb'(?:,' + _LEVEL + rb')*)?\]\Z')

_depth_decoder = msgspec.json.Decoder(_DepthUpdate)
_depth_fast_decoder = msgspec.json.Decoder(_DepthUpdateFast)
_snapshot_decoder = msgspec.json.Decoder(_Snapshot)
_combined_decoder = msgspec.json.Decoder(_Combined)
_probe_decoder = msgspec.json.Decoder(_Probe)
_PATH = re.compile(r" - at `\$(\.\w+)?")


def rejection(error: msgspec.DecodeError) -> Rejected:
    """Map a msgspec error onto a stable reason code."""
    text = str(error)
    if not isinstance(error, msgspec.ValidationError):
        return Rejected(Reason.BAD_JSON, text)
    if text.startswith("Object missing required field"):
        return Rejected(Reason.MISSING_FIELD, text)
    match = _PATH.search(text)
    field = match.group(1) if match and match.group(1) else ""
    if field in (".b", ".a", ".bids", ".asks"):
        return Rejected(Reason.BAD_PRICE_LEVEL, text)
    if (">=" in text or "<=" in text) and field in (".U", ".u", ".pu", ".lastUpdateId"):
        return Rejected(Reason.INVALID_IDS, text)
    return Rejected(Reason.MISTYPED_FIELD, text)


def market_of(market: Optional[str], has_prev: bool) -> str:
    if market is None:
        return "usdm" if has_prev else "spot"
    if market not in RULES:
        raise Rejected(Reason.UNKNOWN_MARKET, f"binance has no market {market!r} (known: {sorted(RULES)})")
    return market


def _delta_event(msg: _DepthUpdate, market: Optional[str], recv_time, source) -> Event:
    market = market_of(market, msg.pu is not None)
    if msg.U > msg.u:
        raise Rejected(Reason.INVALID_IDS, f"first update id U={msg.U} is after last update id u={msg.u}")
    rule = RULES[market]
    if rule == PREVIOUS_LINK and msg.pu is None:
        raise Rejected(Reason.MISSING_PREV_ID, f"a {market} delta must carry pu (previous u)")
    return Event(NAME, market, msg.s, DELTA, msg.U, msg.u, msg.pu, msg.E, recv_time,
                 msg.b, msg.a, rule, source)


def decode_delta(payload: bytes, market: Optional[str], recv_time: Optional[int], source: str,
                 symbol: Optional[str] = None) -> Optional[Event]:
    """A payload that should be a depthUpdate. None when it is another stream's message."""
    msg = _decode_depth(payload)
    if msg is None or msg.e != "depthUpdate":
        return None
    if symbol is not None and msg.s != symbol:
        raise Rejected(Reason.SYMBOL_MISMATCH, f"envelope symbol {symbol!r} but payload symbol {msg.s!r}")
    return _delta_event(msg, market, recv_time, source)


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
                    source: str) -> Event:
    """A REST depth snapshot; its symbol comes from the request (the body does not say)."""
    try:
        msg = _snapshot_decoder.decode(payload)
    except msgspec.DecodeError as error:
        raise rejection(error) from None
    market = market_of(market, msg.T is not None)
    return Event(NAME, market, symbol, SNAPSHOT, msg.lastUpdateId, msg.lastUpdateId, None,
                 msg.E, recv_time, encode_levels(msg.bids), encode_levels(msg.asks), RULES[market],
                 source)


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None) -> Optional[Event]:
    """A raw websocket message, bare or combined-stream. None for other streams."""
    # Not a prefix test: whitespace or another key order must not turn a depth update into "ignored"
    if b'"stream"' in raw:
        try:
            combined = _combined_decoder.decode(raw)
        except msgspec.DecodeError:
            combined = None  # not the combined shape after all: decode it as a bare message
        if combined is not None:
            if "@depth" not in combined.stream:
                return None
            return decode_delta(bytes(combined.data), market, recv_time, source)
    return decode_delta(raw, market, recv_time, source)


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


def market_from_url(url: str) -> Optional[str]:
    """Market of a websocket or REST URL of Binance; None when the URL is not Binance's."""
    try:
        parsed = urlparse(url)
        host, path = parsed.hostname or "", parsed.path
    except ValueError:          # not a URL at all (e.g. an unclosed IPv6 bracket)
        return None
    if not host.endswith("binance.com"):
        return None
    if host.startswith("fstream") or path.startswith("/fapi/"):
        return "usdm"
    if host.startswith("dstream") or path.startswith("/dapi/"):
        return "coinm"
    return "spot"


def is_depth_snapshot_url(url: str) -> bool:
    return urlparse(url).path.rstrip("/").endswith("/depth")


def symbol_from_url(url: str) -> Optional[str]:
    values = parse_qs(urlparse(url).query).get("symbol")
    return values[0].upper() if values else None
