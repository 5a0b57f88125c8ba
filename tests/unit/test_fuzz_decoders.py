"""Hypothesis fuzzing of the decoders: framing.decode_record (every format), framing.decode_message
(Pub/Sub), the Binance adapter's decode_message, and transforms.decode.decode_one.

Properties:
  * a decoder returns an Event, None (another stream's message) or raises Rejected: nothing else;
  * every Rejected has a reason from the documented set and a non-empty message;
  * every Event a decoder accepts is well-formed: ids 0 <= first <= last <= 2**63-1, times within
    what the sinks and Beam's windows can hold, prices and quantities exact decimal strings, the
    rule of its market;
  * a valid message decodes to exactly the Event it describes (decimal strings byte for byte).

Inputs: arbitrary bytes (bare and behind each format's prefix), JSON values of every shape, valid
messages of each format, and valid messages mutated (byte flips, truncations, insertions, field
deletions, type swaps, huge and negative numbers, deeply nested junk, unknown fields).

CI runs 12,500 examples, derandomized (no example database), in about half a minute. Bugs already
reported are tolerated here and pinned by the strict-xfail tests at the end (each with the input
hypothesis minimized); FUZZ_STRICT=1 turns the tolerance off so hypothesis shows them again
(FUZZ_STRICT=unbounded_ints,deep_nesting_recursion_error: only for those).
FUZZ_SCALE=10 runs ten times the examples.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.core.adapters import Rejected
from beam_pipeline.core.adapters import binance
from beam_pipeline.core.framing import FileContext, decode_message, decode_record
from beam_pipeline.core.model import (DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT, Event, Ignored,
                                      RawBatch, decode_levels, encode_levels)
from transforms.decode import decode_one, record_source

_STRICT = os.environ.get("FUZZ_STRICT", "")


def strict(bug: str) -> bool:
    """FUZZ_STRICT=1: no known bug is tolerated; FUZZ_STRICT=name,name: only those are not."""
    return _STRICT == "1" or bug in _STRICT.split(",")
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))

# README "Dead-letter reasons" a decoder can give (and unknown_format, for a bad --input_format)
KNOWN_REASONS = {"bad_json", "invalid_utf8", "missing_field", "mistyped_field", "invalid_ids",
                 "missing_prev_id", "bad_price_level", "record_too_large", "symbol_mismatch",
                 "unsupported_exchange", "unknown_market", "bad_framing", "unknown_format"}
INT64_MAX = 2**63 - 1
MAX_TIME_MS = 253_402_300_799_999        # 9999-12-31T23:59:59.999Z: past it Beam's windows fail
DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
RULE_OF = {"spot": RANGE_PLUS_ONE, "usdm": PREVIOUS_LINK, "coinm": PREVIOUS_LINK}
FOUND: Counter = Counter()               # known bugs hit, by name


def fuzz_settings(examples: int):
    return settings(max_examples=int(examples * SCALE), deadline=None, derandomize=True,
                    database=None, suppress_health_check=list(HealthCheck))


# ---- the decoders, and what they may do --------------------------------------------------------

FILE_CONTEXTS = [FileContext("envelope"), FileContext("binance"),
                 FileContext("binance", "binance", "usdm"), FileContext("binance", "binance", "coinm"),
                 FileContext("cryptofeed", "binance", "spot"),
                 FileContext("cryptofeed", "binance", "usdm"),
                 FileContext("cryptofeed"), FileContext("csv")]
ATTRIBUTES = [{}, {"exchange": "binance", "market": "usdm", "symbol": "BTCUSDT",
                   "recv_ts_ms": "1700000000000"},
              {"recv_ts_ms": "soon"}, {"exchange": "bitmex"}, {"market": "options"}]


def decoders(raw: bytes, max_record_bytes: int = 4096):
    """(label, thunk) for every decoder and context."""
    for ctx in FILE_CONTEXTS:
        yield f"decode_record/{ctx.fmt}/{ctx.market}", lambda ctx=ctx: decode_record(raw, ctx, "f:1")
        batch = RawBatch("f", ctx.fmt, ctx.exchange, ctx.market, [(1, raw)])
        yield f"decode_one/{ctx.fmt}/{ctx.market}", lambda ctx=ctx, batch=batch: decode_one(
            batch, ctx, 1, raw, max_record_bytes)
    for attributes in ATTRIBUTES:
        yield "decode_message", lambda a=attributes: decode_message(raw, a, "pubsub:s/1")
        batch = RawBatch("pubsub:s/1", "message", None, None, [(0, raw)], attributes)
        yield "decode_one/message", lambda batch=batch: decode_one(
            batch, FileContext("message"), 0, raw, max_record_bytes)
    for market in (None, "spot", "usdm"):
        yield f"binance.decode_message/{market}", lambda m=market: binance.decode_message(
            raw, 5, "s", m)


def known_exception(label: str, error: Exception):
    """The name of an already reported bug this exception is, or None (then it is a new one)."""
    text = str(error)
    if isinstance(error, RecursionError):
        return "deep_nesting_recursion_error"
    if isinstance(error, ValueError) and "integer string conversion" in text and (
            "cryptofeed" in label):
        return "cryptofeed_timestamp_digits"
    if isinstance(error, ValueError) and "IPv6" in text and "cryptofeed" in label:
        return "cryptofeed_url_parse"
    if isinstance(error, UnicodeDecodeError) and not label.startswith("decode_one"):
        return "invalid_utf8_raises_unicode_error"   # decode_one checks UTF-8 before these
    return None


def _show(value) -> str:
    """repr, but a huge int as its size (str() of one over 4300 digits raises ValueError)."""
    if type(value) is int and value.bit_length() > 100:
        return f"<int of {value.bit_length()} bits>"
    return repr(value)


def event_problems(event: Event) -> list:
    """What is wrong with an accepted Event: [(bug name or None for unknown, detail)]."""
    problems = []

    def bad(name, detail):
        problems.append((name, detail))

    if event.kind not in (DELTA, SNAPSHOT) or event.exchange != "binance":
        bad(None, f"kind {event.kind!r} exchange {event.exchange!r}")
    if RULE_OF.get(event.market) != event.rule:
        bad(None, f"market {event.market!r} with rule {event.rule!r}")
    for name in ("first_id", "last_id"):
        value = getattr(event, name)
        if type(value) is not int or value < 0:
            bad(None, f"{name}={value!r}")
        elif value > INT64_MAX:
            bad("unbounded_ints", f"{name}={_show(value)}")
    if type(event.first_id) is int and type(event.last_id) is int and event.first_id > event.last_id:
        bad(None, f"first_id {event.first_id} > last_id {event.last_id}")
    if event.prev_id is not None and (type(event.prev_id) is not int or event.prev_id < -1):
        bad(None, f"prev_id={event.prev_id!r}")
    elif event.prev_id is not None and event.prev_id > INT64_MAX:
        bad("unbounded_ints", f"prev_id={_show(event.prev_id)}")
    for name in ("event_time", "recv_time"):
        value = getattr(event, name)
        if value is not None and type(value) is not int:
            bad(None, f"{name}={value!r}")
        elif value is not None and not 0 <= value <= MAX_TIME_MS:
            bad("unbounded_ints", f"{name}={_show(value)}")
    for side in (event.bids, event.asks):
        if not isinstance(side, bytes) or encode_levels(decode_levels(side)) != side:
            bad(None, f"levels {side!r}: not the canonical levels text")
            continue
        for level in decode_levels(side):
            if not (isinstance(level, tuple) and len(level) == 2
                    and all(isinstance(x, str) for x in level)):
                bad(None, f"level {level!r}")
            elif not all(DECIMAL.fullmatch(x) for x in level):
                exact = all(re.search(r"^[0-9]+(\.[0-9]+)?$", x) for x in level)
                bad("decimal_trailing_newline" if exact else None, f"level {level!r}")
    if not isinstance(event.symbol, str) or not isinstance(event.source, str):
        bad(None, f"symbol {event.symbol!r} source {event.source!r}")
    return problems


def check_all(raw: bytes, max_record_bytes: int = 4096):
    """Every decoder on `raw`: only Event / None / Rejected, well-formed. -> outcomes by label."""
    outcomes = {}
    for label, thunk in decoders(raw, max_record_bytes):
        try:
            value = thunk()
        except Rejected as rejected:
            assert rejected.reason in KNOWN_REASONS, (label, rejected.reason, rejected.message)
            assert isinstance(rejected.message, str) and rejected.message.strip(), (
                label, rejected.reason)
            assert str(rejected) == rejected.message
            outcomes[label] = rejected.reason
            continue
        except Exception as error:   # noqa: BLE001 - the property is exactly "nothing else"
            bug = known_exception(label, error)
            if bug is None or strict(bug):
                raise AssertionError(f"{label} raised {type(error).__name__}: {error}") from error
            FOUND[bug] += 1
            outcomes[label] = bug
            continue
        assert value is None or isinstance(value, (Event, Ignored)), (label, value)
        if value is not None:
            problems = event_problems(value)
            unknown = [detail for name, detail in problems if name is None or strict(name)]
            assert not unknown, (label, unknown, value.symbol, _show(value.first_id),
                                 _show(value.last_id), _show(value.recv_time))
            FOUND.update(name for name, _ in problems)
        outcomes[label] = value
    return outcomes


# ---- valid messages ---------------------------------------------------------------------------

class RawJSON:
    """Text spliced into the JSON as is (deep nesting, duplicate keys, odd numbers)."""

    def __init__(self, text: str):
        self.text = text


def to_json(value, separators=(",", ":"), order=None, ascii_only=True) -> str:
    """json.dumps with RawJSON splices and a chosen key order."""
    if isinstance(value, RawJSON):
        return value.text
    if isinstance(value, dict):
        keys = list(value)
        if order is not None:
            keys.sort(key=lambda k: order.get(k, 0))
        items = (json.dumps(k, ensure_ascii=ascii_only) + separators[1]
                 + to_json(value[k], separators, order, ascii_only) for k in keys)
        return "{" + separators[0].join(items) + "}"
    if isinstance(value, list):
        return "[" + separators[0].join(to_json(v, separators, order, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


DIGITS = "0123456789"
decimals = st.builds(lambda whole, frac: whole + ("." + frac if frac else ""),
                     st.text(DIGITS, min_size=1, max_size=20), st.text(DIGITS, max_size=20))
levels = st.lists(st.lists(decimals, min_size=2, max_size=2), max_size=4)
ids = st.integers(0, INT64_MAX)
times = st.integers(0, MAX_TIME_MS)
symbols = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)
url_symbols = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ" + DIGITS, min_size=1, max_size=12)
MARKETS = ("spot", "usdm", "coinm")
REST = {"spot": "https://api.binance.com/api/v3/depth", "usdm": "https://fapi.binance.com/fapi/v1/depth",
        "coinm": "https://dapi.binance.com/dapi/v1/depth"}


class Message:
    """One valid record: its JSON document, how it is framed, and the Event it must give."""

    def __init__(self, fmt, doc, expected: Event, prefix=b"", ctx=None, attributes=None,
                 path=()):
        self.fmt, self.doc, self.expected, self.prefix = fmt, doc, expected, prefix
        self.ctx, self.attributes = ctx, attributes
        self.path = path                     # where the exchange message sits inside doc

    def raw(self, separators=(",", ":"), order=None, ascii_only=True) -> bytes:
        return self.prefix + to_json(self.doc, separators, order, ascii_only).encode()


UNKNOWN_FIELD_VALUES = st.one_of(st.integers(), st.text(max_size=5), st.none())
FORMATS = st.sampled_from(["envelope", "binance", "combined", "cryptofeed_ws", "cryptofeed_rest",
                           "message_raw", "message_envelope"])
MARKET_CHOICE = st.sampled_from(MARKETS)
KINDS = st.sampled_from(["delta", "snapshot"])


@st.composite
def depth_updates(draw, market):
    first = draw(ids)
    last = draw(st.integers(first, INT64_MAX))
    msg = {"e": "depthUpdate", "E": draw(times), "s": draw(symbols), "U": first, "u": last,
           "b": draw(levels), "a": draw(levels)}
    if market != "spot":
        msg["pu"] = draw(st.integers(-1, INT64_MAX))
        if draw(st.booleans()):
            msg["T"] = draw(times)
    if draw(st.booleans()):
        msg["x"] = draw(UNKNOWN_FIELD_VALUES)  # an unknown field
    return msg


def delta_event(msg, market, recv, source):
    return Event("binance", market, msg["s"], DELTA, msg["U"], msg["u"], msg.get("pu"), msg["E"],
                 recv, encode_levels(msg["b"]), encode_levels(msg["a"]), RULE_OF[market],
                 source)


@st.composite
def snapshots(draw, market):
    msg = {"lastUpdateId": draw(ids), "bids": draw(levels), "asks": draw(levels)}
    if market != "spot":
        msg["E"] = draw(times)
        msg["T"] = draw(times)
    return msg


def snapshot_event(msg, market, symbol, recv, source):
    return Event("binance", market, symbol, SNAPSHOT, msg["lastUpdateId"], msg["lastUpdateId"], None,
                 msg.get("E"), recv, encode_levels(msg["bids"]), encode_levels(msg["asks"]),
                 RULE_OF[market], source)


# built once: a strategy object made inside every draw is validated again each time
DEPTH_UPDATES = {market: depth_updates(market) for market in MARKETS}
SNAPSHOTS = {market: snapshots(market) for market in MARKETS}
FRACTIONS = st.text(DIGITS, max_size=7)


def stamp_of(ms: int, extra: str) -> tuple:
    """A cryptofeed seconds stamp for `ms` (with more fraction digits) -> (text, ms it parses to)."""
    return f"{ms // 1000}.{ms % 1000:03d}{extra}", ms


@st.composite
def valid_messages(draw):
    fmt = draw(FORMATS)
    market = draw(MARKET_CHOICE)
    source = "f:1"
    if fmt in ("envelope", "message_envelope"):
        kind = draw(KINDS)
        recv = draw(times)
        if kind == "delta":
            payload = draw(DEPTH_UPDATES[market])
            symbol = payload["s"]
        else:
            payload = draw(SNAPSHOTS[market])
            symbol = draw(symbols)
        doc = {"exchange": "binance", "market": market, "symbol": symbol, "recv_ts_ms": recv,
               "type": kind, "payload": payload}
        if fmt == "message_envelope":
            source = "pubsub:s/1"
        expected = (delta_event(payload, market, recv, source) if kind == "delta"
                    else snapshot_event(payload, market, symbol, recv, source))
        ctx = FileContext("envelope") if fmt == "envelope" else None
        return Message(fmt, doc, expected, ctx=ctx, attributes={} if ctx is None else None,
                       path=("payload",))
    if fmt in ("binance", "combined"):
        msg = draw(DEPTH_UPDATES[market])
        explicit = market if draw(st.booleans()) or market == "coinm" else None
        inferred = explicit or ("usdm" if "pu" in msg else "spot")
        doc = msg if fmt == "binance" else {"stream": f"{msg['s'].lower()}@depth@100ms", "data": msg}
        return Message(fmt, doc, delta_event(msg, inferred, None, source),
                       ctx=FileContext("binance", None, explicit),
                       path=() if fmt == "binance" else ("data",))
    if fmt == "cryptofeed_ws":
        msg = draw(DEPTH_UPDATES[market])
        text, ms = stamp_of(draw(times), draw(FRACTIONS))
        return Message(fmt, msg, delta_event(msg, market, ms, source), prefix=f"{text}: ".encode(),
                       ctx=FileContext("cryptofeed", "binance", market))
    if fmt == "cryptofeed_rest":
        msg = draw(SNAPSHOTS[market])
        symbol = draw(url_symbols)
        text, ms = stamp_of(draw(times), draw(FRACTIONS))
        url = f"{REST[market]}?symbol={symbol}&limit=1000"
        return Message(fmt, msg, snapshot_event(msg, market, symbol, ms, source),
                       prefix=f"{url} -> {text}: ".encode(), ctx=FileContext("cryptofeed"))
    # message_raw: a bare websocket message with its attributes
    msg = draw(DEPTH_UPDATES[market])
    recv = draw(times)
    attributes = {"exchange": "binance", "market": market, "recv_ts_ms": str(recv)}
    if draw(st.booleans()):
        attributes["symbol"] = msg["s"]
    return Message(fmt, msg, delta_event(msg, market, recv, "pubsub:s/1"), attributes=attributes)


def decode_valid(message: Message, raw: bytes):
    """The decoders that apply to `message` -> [(label, Event)]; a Rejected here fails the test."""
    if message.ctx is not None:
        batch = RawBatch("f", message.ctx.fmt, message.ctx.exchange, message.ctx.market, [(1, raw)])
        return [("decode_record", decode_record(raw, message.ctx, "f:1")),
                ("decode_one", decode_one(batch, message.ctx, 1, raw, 1 << 20))]
    batch = RawBatch("pubsub:s/1", "message", None, None, [(0, raw)], message.attributes)
    assert record_source(batch, 0) == "pubsub:s/1"
    return [("decode_message", decode_message(raw, message.attributes, "pubsub:s/1")),
            ("decode_one", decode_one(batch, FileContext("message"), 0, raw, 1 << 20))]


SEPARATORS = st.sampled_from([(",", ":"), (", ", ": "), (",\t", " :  ")])
KEY_ORDERS = st.none() | st.dictionaries(st.sampled_from(
    ["e", "E", "s", "U", "u", "b", "a", "pu", "T", "x", "exchange", "market", "symbol",
     "recv_ts_ms", "type", "payload", "stream", "data", "lastUpdateId", "bids", "asks"]),
    st.integers(-5, 5))


@st.composite
def serializations(draw):
    return draw(SEPARATORS), draw(KEY_ORDERS), draw(st.booleans())


SERIALIZATIONS = serializations()
VALID_MESSAGES = valid_messages()


@fuzz_settings(3000)
@given(VALID_MESSAGES, SERIALIZATIONS)
def test_valid_messages_decode_to_exactly_their_event(message, serialization):
    separators, order, ascii_only = serialization
    raw = message.raw(separators, order, ascii_only)
    for label, event in decode_valid(message, raw):
        assert event == message.expected, (label, raw)
        assert not event_problems(event), (label, event_problems(event))
        # exact decimal strings, byte for byte
        assert decode_levels(event.bids) + decode_levels(event.asks) == (
            decode_levels(message.expected.bids) + decode_levels(message.expected.asks))


# ---- mutations --------------------------------------------------------------------------------

def nested(depth: int, kind: str) -> RawJSON:
    if kind == "list":
        return RawJSON("[" * depth + "]" * depth)
    return RawJSON('{"a":' * depth + "0" + "}" * depth)


junk = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.integers(INT64_MAX - 2, 2**66), st.integers(-(2**65), -1),
    st.sampled_from([2**64 - 1, 2**64, 10**30, -(2**63), MAX_TIME_MS + 1]),
    st.floats(), st.text(max_size=12),
    st.sampled_from(["1.0\n", " 1.0", "1.0 ", "1e5", "-1.0", ".5", "1.", "\uff10.\uff11", "NaN", "",
                     "\u0000"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(nested, st.integers(1, 3000), st.sampled_from(["list", "dict"])),
    st.sampled_from([RawJSON("1" * 5000), RawJSON("1e999"), RawJSON("-0"), RawJSON("0.0e0"),
                     RawJSON('"\\ud800"'), RawJSON("01"), RawJSON("[1,]"), RawJSON("tru")]),
)


def _containers(doc, path=()):
    """(path, container) of every dict and list in doc."""
    if isinstance(doc, (dict, list)):
        yield path, doc
        items = doc.items() if isinstance(doc, dict) else enumerate(doc)
        for key, value in items:
            yield from _containers(value, path + (key,))


def _copy(doc):
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy(v) for v in doc]
    return doc


odd_decimals = st.one_of(
    st.sampled_from(["0\n", "1.5\n", "\n1", " 1", "1 ", "1e5", "-1", "+1", ".5", "1.", "1..2", "0x1",
                     "\uff11", "\u0661", "1_000", "NaN", "inf", ""]),
    st.text(DIGITS + ".-+eE \n\t_", max_size=6))
url_junk = st.builds(lambda scheme, rest: scheme + rest,
                     st.sampled_from(["https://", "wss://", "//", "", "https://api.binance.com/"]),
                     st.text("[]:@.ab/?=&%#\u00e9", min_size=1, max_size=20))


def _levels_of(doc):
    """Every price level list [price, qty] in doc."""
    return [level for _, container in _containers(doc) if isinstance(container, list)
            for level in container if isinstance(level, list) and len(level) == 2
            and all(isinstance(x, str) for x in level)]


STAMPS = st.one_of(st.sampled_from([20, 4300, 4301, 6000]).map(lambda n: "9" * n),
                   st.text(DIGITS + ".", min_size=1, max_size=12))
ACTIONS = st.sampled_from(["delete", "swap", "swap", "add"])
BYTE_ACTIONS = st.sampled_from(["flip", "truncate", "insert", "delete", "duplicate"])
ADDED_KEYS = st.sampled_from(["pu", "T", "E", "stream", "payload", "exchange", "zz"])


@st.composite
def mutated_records(draw):
    message = draw(VALID_MESSAGES)
    doc = _copy(message.doc)
    message.doc = doc
    levels_in_doc = _levels_of(doc)
    if levels_in_doc and draw(st.integers(0, 3)) == 0:     # a price or quantity that is not a decimal
        draw(st.sampled_from(levels_in_doc))[draw(st.integers(0, 1))] = draw(odd_decimals)
    if message.prefix and draw(st.integers(0, 3)) == 0:    # a cryptofeed line's stamp or URL
        stamp = draw(STAMPS)
        if message.fmt == "cryptofeed_rest":
            message.prefix = f"{draw(url_junk)} -> {stamp}: ".encode("utf-8")
        else:
            message.prefix = f"{stamp}: ".encode()
    for _ in range(draw(st.integers(0, 3))):           # structural mutations
        containers = [c for c in _containers(doc) if c[1]]
        if not containers:
            break
        _, container = draw(st.sampled_from(containers))
        key = draw(st.sampled_from(sorted(container, key=repr) if isinstance(container, dict)
                                   else range(len(container))))
        action = draw(ACTIONS)
        if action == "delete":
            del container[key]
        elif action == "swap":
            container[key] = draw(junk)
        elif isinstance(container, dict):
            name = draw(ADDED_KEYS)
            container[name] = draw(junk)
        else:
            container.append(draw(junk))
    separators, order, ascii_only = draw(SERIALIZATIONS)
    raw = bytearray(message.raw(separators, order, ascii_only))
    for _ in range(draw(st.integers(0, 3))):           # byte mutations
        action = draw(BYTE_ACTIONS)
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        if action == "flip":
            raw[at] = draw(st.integers(0, 255))
        elif action == "truncate":
            del raw[at:]
        elif action == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del raw[at:at + draw(st.integers(1, 16))]
        else:
            end = draw(st.integers(at, len(raw)))
            raw[end:end] = raw[at:end]
    return bytes(raw)


@fuzz_settings(5000)
@given(mutated_records(), st.sampled_from([64, 512, 4096, 1 << 20]))
def test_mutated_messages_are_rejected_cleanly_or_decode_well_formed(raw, max_record_bytes):
    outcomes = check_all(raw, max_record_bytes)
    if len(raw) > max_record_bytes:
        assert all(outcomes[label] == "record_too_large" for label in outcomes
                   if label.startswith("decode_one")), outcomes


# ---- arbitrary bytes and arbitrary JSON -------------------------------------------------------

PREFIXES = [b"", b"{", b'{"e":"depthUpdate",', b"1633998512.0633569: ",
            b"https://api.binance.com/api/v3/depth?symbol=BTCUSDT -> 1633998512.06: ",
            b'{"stream":"btcusdt@depth@100ms","data":',
            b'{"exchange":"binance","market":"spot","symbol":"BTCUSDT","recv_ts_ms":1,"type":"delta",'
            b'"payload":']


@fuzz_settings(3300)
@given(st.sampled_from(PREFIXES), st.binary(max_size=400))
def test_arbitrary_bytes_are_rejected_cleanly(prefix, tail):
    check_all(prefix + tail)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | decimals,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["e", "E", "s", "U", "u", "b", "a", "pu", "T", "lastUpdateId", "bids", "asks",
                         "stream", "data", "exchange", "market", "symbol", "recv_ts_ms", "type",
                         "payload"]) | st.text(max_size=4), children, max_size=8),
    max_leaves=25)


@fuzz_settings(1200)
@given(st.sampled_from([b"", b"1633998512.06: ",
                        b"https://fapi.binance.com/fapi/v1/depth?symbol=X -> 1626992740.8: "]),
       json_values)
def test_arbitrary_json_values_are_rejected_cleanly(prefix, value):
    check_all(prefix + json.dumps(value).encode())


# ---- bugs found (strict xfail: each turns into a failure once fixed, then drop the marker) ---------
# Inputs as hypothesis minimized them (FUZZ_STRICT=<bug name>), where it found them.

def _only_rejected(thunk):
    try:
        thunk()
    except Rejected:
        return
    except Exception as error:   # noqa: BLE001
        raise AssertionError(f"{type(error).__name__}: {error}") from error


def _file_batch(ctx, raw):
    return RawBatch("f", ctx.fmt, ctx.exchange, ctx.market, [(1, raw)])


def test_a_price_with_a_trailing_newline_is_rejected():
    raw = (b'{"exchange":"binance","market":"spot","symbol":"","recv_ts_ms":0,"type":"delta",'
           b'"payload":{"e":"depthUpdate","E":0,"s":"","U":0,"u":0,"b":[],"a":[["0\\n","0"]]}}')
    with pytest.raises(Rejected) as rejected:
        decode_record(raw, FileContext("envelope"), "f:1")
    assert rejected.value.reason == "bad_price_level"


@pytest.mark.parametrize("ctx,raw", [
    # hypothesis: a 20-digit cryptofeed stamp gives recv_time 99999999999999999999000
    (FileContext("cryptofeed", "binance", "spot"),
     b'99999999999999999999: {"e":"depthUpdate","E":0,"s":"","U":0,"u":0,"b":[],"a":[]}'),
    (FileContext("binance"),
     b'{"e":"depthUpdate","E":0,"s":"","U":0,"u":9223372036854775808,"b":[],"a":[]}'),
    (FileContext("binance"),
     b'{"e":"depthUpdate","E":253402300800000,"s":"","U":0,"u":0,"b":[],"a":[]}'),
    (FileContext("envelope"),
     b'{"exchange":"binance","market":"spot","symbol":"","recv_ts_ms":-100000000000000,'
     b'"type":"snapshot","payload":{"lastUpdateId":0,"bids":[],"asks":[]}}'),
], ids=["cryptofeed_stamp", "u_past_int64", "E_past_9999", "negative_recv_ts_ms"])
def test_out_of_range_ids_and_times_are_rejected(ctx, raw):
    with pytest.raises(Rejected) as rejected:
        decode_record(raw, ctx, "f:1")
    assert rejected.value.reason in ("invalid_ids", "mistyped_field", "bad_framing")


@pytest.mark.parametrize("ctx,raw", [
    # hypothesis: '{"market":[[[[...' read as a raw Binance message (an unknown key, skipped)
    (FileContext("binance"), b'{"market":' + b"[" * 2000 + b"]" * 2000 + b"}"),
    (FileContext("envelope"), b'{"exchange":"binance","market":"spot","symbol":"","recv_ts_ms":0,'
                              b'"type":"delta","payload":' + b"[" * 2000 + b"]" * 2000 + b"}"),
], ids=["binance_unknown_key", "envelope_payload"])
def test_deeply_nested_json_is_rejected(ctx, raw):
    _only_rejected(lambda: decode_record(raw, ctx, "f:1"))
    _only_rejected(lambda: decode_one(_file_batch(ctx, raw), ctx, 1, raw, 1 << 20))


def test_a_cryptofeed_timestamp_with_too_many_digits_is_rejected():
    raw = b"9" * 4301 + b': {"e":"depthUpdate","E":0,"s":"","U":0,"u":0,"b":[],"a":[]}'
    ctx = FileContext("cryptofeed", "binance", "spot")
    _only_rejected(lambda: decode_record(raw, ctx, "f:1"))
    _only_rejected(lambda: decode_one(_file_batch(ctx, raw), ctx, 1, raw, 1 << 20))


@pytest.mark.parametrize("url", [b"https://[", b"https://[]"])
def test_a_cryptofeed_rest_url_that_does_not_parse_is_rejected(url):
    # hypothesis, with its 20-digit stamp kept
    raw = url + b' -> 99999999999999999999: {"lastUpdateId":0,"bids":[],"asks":[]}'
    ctx = FileContext("cryptofeed")
    _only_rejected(lambda: decode_record(raw, ctx, "f:1"))
    _only_rejected(lambda: decode_one(_file_batch(ctx, raw), ctx, 1, raw, 1 << 20))


@pytest.mark.parametrize("ctx,raw", [
    (FileContext("binance"), b'{"e":"\x80epthUpdate","E":0,"s":"","U":0,"u":0,"b":[],"a":[]}'),
    (FileContext("envelope"), b'{"market":"\x80pot","symbol":"","recv_ts_ms":0,"type":"delta",'
                              b'"payload":{}}'),
    (FileContext("cryptofeed"), b'\x80ttps://: -> 0: {"lastUpdateId":0,"bids":[],"asks":[]}'),
], ids=["binance", "envelope", "cryptofeed_rest_url"])
def test_decoders_reject_invalid_utf8_themselves(ctx, raw):
    _only_rejected(lambda: decode_record(raw, ctx, "f:1"))


def test_report_known_bugs_hit():
    """Not a check: prints which reported bugs the fuzzing above ran into (pytest -s shows it)."""
    print("known bugs hit by the fuzzers:", dict(FOUND))
