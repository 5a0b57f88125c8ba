"""The batch fast path of decoding (beam_pipeline/core/batch_decode.py) against the per-record
reference path (framing.decode_record): every line it takes decodes to the reference's Event, and
the common shape is taken (so the fast path really runs)."""
from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.core.adapters.binance import _COMPACT_LEVELS
from beam_pipeline.core.batch_decode import decode_envelope_deltas, fast_decoder_for
from beam_pipeline.core.framing import FileContext, decode_record
from beam_pipeline.core.reasons import Rejected

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
CTX = FileContext("envelope")
MAX_BYTES = 2000

decimals = st.from_regex(r"\A[0-9]{1,4}(\.[0-9]{1,4})?\Z", fullmatch=True)
odd = st.sampled_from(["", "-1", "1e5", "1.", ".5", " 1", "1.2.3", "x", "1\n"])
prices = st.one_of(decimals, decimals, decimals, decimals, odd)
levels = st.one_of(st.lists(st.tuples(decimals, decimals).map(list), max_size=6),
                   st.lists(st.tuples(prices, prices).map(list), max_size=3),
                   st.lists(st.lists(decimals, max_size=3), max_size=2), st.integers(), st.none())


@st.composite
def payloads(draw):
    doc = {"e": draw(st.sampled_from(["depthUpdate"] * 6 + ["trade"])), "E": 1700000000000,
           "s": draw(st.sampled_from(["BTCUSDT"] * 6 + ["ETHUSDT"])),
           "U": draw(st.integers(0, 50)), "u": draw(st.integers(-1, 60)),
           "b": draw(levels), "a": draw(levels)}
    if draw(st.booleans()):
        doc["pu"] = draw(st.one_of(st.integers(-2, 60), st.none(), st.just("7")))
    if draw(st.integers(0, 5)) == 0:
        del doc[draw(st.sampled_from(sorted(doc)))]
    return doc


@st.composite
def lines(draw):
    env = {"exchange": draw(st.sampled_from(["binance"] * 5 + ["binance_us", "kraken", ""])),
           "market": draw(st.sampled_from(["spot", "spot", "usdm", "coinm", "margin"])),
           "symbol": "BTCUSDT",
           "recv_ts_ms": draw(st.sampled_from([1700000000007, 1700000000007, -1, 2**62])),
           "type": draw(st.sampled_from(["delta"] * 6 + ["snapshot", "trade"])),
           "payload": draw(payloads())}
    order = draw(st.permutations(list(env)))
    separators = draw(st.sampled_from([(",", ":")] * 4 + [(", ", ": ")]))
    text = "{" + separators[0].join(json.dumps(k) + separators[1]
                                    + json.dumps(env[k], separators=separators) for k in order) + "}"
    if draw(st.integers(0, 9)) == 0:      # a repeated key, the first occurrence different
        key = draw(st.sampled_from(["payload", "type", "symbol"]))
        text = "{" + json.dumps(key) + ":" + json.dumps(draw(payloads())) + "," + text[1:]
    if draw(st.integers(0, 19)) == 0:
        text = text.replace('"b"', '"\\u0062"', 1)
    return text.encode()


def reference(line, source):
    try:
        return decode_record(line, CTX, source)
    except Rejected:
        return "rejected"


@SETTINGS
@given(st.lists(lines(), min_size=1, max_size=8))
def test_what_the_fast_path_takes_decodes_as_the_reference_does(batch):
    sources = [f"f:{n}" for n in range(len(batch))]
    fast = decode_envelope_deltas(batch, sources, MAX_BYTES)
    assert len(fast) == len(batch)
    for event, line, source in zip(fast, batch, sources):
        if event is not None:
            assert event == reference(line, source)


def test_the_common_shape_is_taken_and_the_rest_left_to_the_reference():
    spot = (b'{"exchange":"binance","market":"spot","symbol":"BTCUSDT","recv_ts_ms":1700000000007,'
            b'"type":"delta","payload":{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT","U":5,'
            b'"u":6,"b":[["1.00","2.0"]],"a":[]}}')
    usdm = (b'{"exchange":"binance","market":"usdm","symbol":"BTCUSDT","recv_ts_ms":1700000000007,'
            b'"type":"delta","payload":{"e":"depthUpdate","E":1700000000000,"T":1700000000000,'
            b'"s":"BTCUSDT","U":5,"u":9,"pu":4,"b":[],"a":[["3","0.5"],["4.1","1"]]}}')
    bad_level = spot.replace(b'"1.00"', b'"1."')
    too_long = spot
    snapshot = (b'{"exchange":"binance","market":"spot","symbol":"BTCUSDT","recv_ts_ms":1,'
                b'"type":"snapshot","payload":{"lastUpdateId":4,"bids":[],"asks":[]}}')
    batch = [spot, usdm, bad_level, snapshot, b"not json", too_long + b" " * 2000]
    sources = [f"f:{n}" for n in range(len(batch))]
    fast = decode_envelope_deltas(batch, sources, MAX_BYTES)
    assert fast[0] == decode_record(spot, CTX, "f:0") and fast[0].bids == b'[["1.00","2.0"]]'
    assert fast[1] == decode_record(usdm, CTX, "f:1") and fast[1].prev_id == 4
    assert fast[2:] == [None] * 4
    assert fast_decoder_for("envelope") is decode_envelope_deltas
    assert fast_decoder_for("cryptofeed") is None


# The plain pattern the possessive _COMPACT_LEVELS replaced (same language, fewer backtracking points)
_PLAIN_LEVEL = rb'\["[0-9]+(?:\.[0-9]+)?","[0-9]+(?:\.[0-9]+)?"\]'
_PLAIN_COMPACT = re.compile(rb'\[(?:' + _PLAIN_LEVEL + rb'(?:,' + _PLAIN_LEVEL + rb')*)?\]\Z')
level_texts = st.one_of(
    levels.map(lambda value: json.dumps(value, separators=(",", ":")).encode()),
    st.lists(st.sampled_from([b"[", b"]", b'"', b",", b".", b"1", b"12", b"0.5", b'["1","2"]', b" ",
                              b"\n", b"-", b"e"]), max_size=24).map(b"".join))


@settings(max_examples=400, deadline=None)
@given(level_texts)
def test_the_possessive_level_pattern_accepts_what_the_plain_one_does(text):
    assert bool(_COMPACT_LEVELS.match(text)) == bool(_PLAIN_COMPACT.match(text))
