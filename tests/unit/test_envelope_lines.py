"""The whole-line regex (beam_pipeline/core/envelope_lines.py) against the batch path and the
reference path: every line it matches decodes there to an Event with exactly its values, and the
common lines (the generator's and Binance's own key orders) are matched."""
from __future__ import annotations

import json
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.core.adapters.binance import RULES
from beam_pipeline.core.batch_decode import decode_envelope_deltas
from beam_pipeline.core.decoding import INT64_MAX, LAST_MS
from beam_pipeline.core.envelope_lines import match_delta_line
from beam_pipeline.core.framing import FileContext, decode_record
from beam_pipeline.core.model import DELTA
from beam_pipeline.core.reasons import Rejected
from tests.tooling.synthetic import REASON_OF, START_MS, _bad_record, generate

SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
CTX = FileContext("envelope")
MAX_BYTES = 1 << 20

SPOT_ORDER = ["e", "E", "s", "U", "u", "b", "a", "pu", "T"]        # Binance spot; generator's usdm
FUTURES_ORDER = ["e", "E", "T", "s", "U", "u", "pu", "b", "a"]     # Binance futures
ENVELOPE_ORDER = ["exchange", "market", "symbol", "recv_ts_ms", "type", "payload"]


def chance(share: float):
    """True about `share` of the time: the top of a wide range, as hypothesis favours small
    integers (a plain `integers(0, 9) == 0` is true far more often than one time in ten)."""
    if share > 0.5:
        return chance(1 - share).map(lambda rare: not rare)
    return st.integers(0, 2**16 - 1).map(lambda n: n >= 2**16 * (1 - share))


def mostly(good, bad, odds: int = 8):
    """`good` but one time in `odds` `bad`: each field is rarely wrong, so many lines are valid and
    the invalid ones are mostly wrong in one place."""
    return chance(1 / odds).flatmap(lambda wrong: bad if wrong else good)


decimals = st.from_regex(r"\A[0-9]{1,4}(\.[0-9]{1,4})?\Z", fullmatch=True)
odd = st.sampled_from(["", "-1", "1e5", "1.", ".5", " 1", "1.2.3", "x", "1\n", "01", "1,2", "]"])
good_levels = st.lists(st.tuples(decimals, decimals).map(list), max_size=5)
levels = mostly(good_levels, st.one_of(
    st.lists(st.tuples(mostly(decimals, odd, 3), mostly(decimals, odd, 3)).map(list), min_size=1, max_size=3),
    st.lists(st.lists(decimals, max_size=3), max_size=2), st.integers(), st.none(),
    st.just([[1, 2]]), st.just({"1": "2"})))
# values at and across every range edge: ids 0..INT64_MAX, pu -1..INT64_MAX, times 0..LAST_MS
ids = mostly(st.integers(0, 60), st.sampled_from(
    [-1, -2, INT64_MAX - 1, INT64_MAX, INT64_MAX + 1, 2**64 - 1, 2**64, 10**19, 10**20, 1.0, "5", None]),
    odds=4)
times = mostly(st.sampled_from([START_MS, START_MS + 7]), st.sampled_from(
    [0, -1, LAST_MS - 1, LAST_MS, LAST_MS + 1, 10**15 - 1, 10**15, 2**62, INT64_MAX + 1, "1", None]))
prevs = mostly(st.integers(-1, 60), st.sampled_from(
    [-2, INT64_MAX, INT64_MAX + 1, 2**64, None, "7", 1.5]))
symbols = mostly(st.sampled_from(["BTCUSDT", "ETHUSDT", "BTCUSD_PERP"]), st.sampled_from(
    ["btcusdt", "BTC-X", "1000SHIBUSDT", "", "BTC USDT", "BTC\u00e9", "BTC\"X", "BTC\\", "A" * 32,
     "A" * 33]))


@st.composite
def payloads(draw, symbol, market):
    doc = {"e": draw(mostly(st.just("depthUpdate"), st.sampled_from(["trade", "depthupdate", ""]))),
           "E": draw(times), "s": draw(mostly(st.just(symbol), st.sampled_from(["ETHUSDT", symbol + " "]))),
           "U": draw(ids), "u": draw(ids), "b": draw(levels), "a": draw(levels)}
    if isinstance(doc["U"], int) and draw(chance(0.75)):
        doc["u"] = doc["U"] + draw(st.integers(0, 3))
    futures = market != "spot"
    if draw(chance(0.9 if futures else 0.3)):
        doc["pu"] = draw(prevs)
    if draw(chance(0.8 if futures else 0.2)):
        doc["T"] = draw(times)
    if draw(chance(0.1)):
        del doc[draw(st.sampled_from(sorted(doc)))]
    order = draw(mostly(st.sampled_from([SPOT_ORDER, FUTURES_ORDER]), st.none()))
    keys = [k for k in order if k in doc] if order else draw(st.permutations(sorted(doc)))
    return {k: doc[k] for k in keys}


def mutate(draw, text: str) -> str:
    """One small edit that often changes what the decoders accept."""
    kind = draw(st.sampled_from(["leading_zero", "space", "escape", "repeat", "char", "drop", "none"]))
    if kind == "leading_zero":
        key = draw(st.sampled_from(['"U":', '"u":', '"pu":', '"E":', '"T":', '"recv_ts_ms":']))
        return text.replace(key, key + draw(st.sampled_from(["0", "-0", "00", "+"])), 1)
    if kind == "space":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from([" ", "\n", "\t"])) + text[at:]
    if kind == "escape":
        plain, escaped = draw(st.sampled_from([('"b"', '"\\u0062"'), ('"s"', '"\\u0073"'),
                                               ('"delta"', '"d\\u0065lta"'), ("USDT", "US\\u0044T")]))
        return text.replace(plain, escaped, 1)
    if kind == "repeat":          # a key seen twice, the first value different
        key = draw(st.sampled_from(['"U":', '"b":', '"s":', '"pu":']))
        value = draw(st.sampled_from(['99,', '[["1","2"]],', '"XRPUSDT",', 'null,']))
        return text.replace('"payload":{', '"payload":{' + key + value, 1)
    if kind == "char":
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        return text[:at] + draw(st.sampled_from(list('0123456789",[]{}:.-ax\\'))) + text[at + 1:]
    if kind == "drop":
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        return text[:at] + text[at + 1:]
    return text


@st.composite
def lines(draw):
    symbol = draw(symbols)
    market = draw(mostly(st.sampled_from(["spot", "usdm", "coinm"]), st.just("margin")))
    env = {"exchange": draw(mostly(st.sampled_from(["binance", "binance_us"]),
                                   st.sampled_from(["kraken", "Binance", "", "binance_u", "binance_usa"]))),
           "market": market, "symbol": symbol, "recv_ts_ms": draw(times),
           "type": draw(mostly(st.just("delta"), st.sampled_from(["snapshot", "trade", "Delta"]))),
           "payload": draw(payloads(symbol, market))}
    order = draw(mostly(st.just(ENVELOPE_ORDER), st.permutations(ENVELOPE_ORDER)))
    text = json.dumps({k: env[k] for k in order}, separators=(",", ":"),
                      ensure_ascii=draw(st.booleans()))
    if draw(chance(0.25)):
        text = mutate(draw, text)
    return text.encode()


def expected_fields(event):
    return (event.exchange, event.market, event.symbol, event.recv_time, event.event_time,
            event.first_id, event.last_id, event.prev_id, event.bids, event.asks)


def assert_agrees(line: bytes) -> bool:
    """The contract: a match is the batch path's and the reference's Event, value for value."""
    found = match_delta_line(line)
    if found is None:
        return False
    event = decode_envelope_deltas([line], ["s"], MAX_BYTES)[0]
    assert event is not None, line
    assert expected_fields(event) == found
    assert event.kind == DELTA and event.rule == RULES[found[1]]
    assert all(type(value) is str for value in found[:3])
    assert type(found[8]) is bytes and type(found[9]) is bytes
    try:
        reference = decode_record(line, CTX, "s")
    except Rejected as rejected:
        raise AssertionError(f"reference rejects a matched line: {rejected}: {line!r}") from None
    assert reference == event
    return True


@SETTINGS
@given(lines())
def test_every_match_is_what_the_decoders_give(line):
    assert_agrees(line)


@st.composite
def canonical_lines(draw):
    """Valid values, compact, in one of the accepted key orders: these must all be matched."""
    market = draw(st.sampled_from(sorted(RULES)))
    symbol = draw(st.sampled_from(["BTCUSDT", "BTCUSD_PERP", "1000SHIBUSDT", "A-B", "Z" * 32]))
    first = draw(st.integers(0, INT64_MAX))
    doc = {"e": "depthUpdate", "E": draw(st.integers(0, LAST_MS)), "s": symbol, "U": first,
           "u": draw(st.integers(first, INT64_MAX)),
           "b": draw(st.lists(st.tuples(decimals, decimals).map(list), max_size=5)),
           "a": draw(st.lists(st.tuples(decimals, decimals).map(list), max_size=5))}
    futures = market != "spot"
    if futures or draw(st.booleans()):
        doc["pu"] = draw(st.integers(-1, INT64_MAX))
    if futures and draw(st.booleans()) or draw(st.booleans()):
        doc["T"] = draw(st.integers(0, LAST_MS))
    order = FUTURES_ORDER if futures and draw(st.booleans()) else SPOT_ORDER
    if order is FUTURES_ORDER:
        doc.setdefault("T", draw(st.integers(0, LAST_MS)))
    env = {"exchange": draw(st.sampled_from(["binance", "binance_us"])), "market": market,
           "symbol": symbol, "recv_ts_ms": draw(st.integers(0, LAST_MS)), "type": "delta",
           "payload": {k: doc[k] for k in order if k in doc}}
    return json.dumps(env, separators=(",", ":")).encode()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(canonical_lines())
def test_valid_lines_in_the_accepted_shapes_are_matched(line):
    assert assert_agrees(line), line


def test_the_generators_lines_are_matched():
    feed, _ = generate(events=400, seed=3)
    deltas = [line for line in feed if b'"type":"delta"' in line]
    assert {b'"market":"spot"' in line for line in deltas} == {True, False}    # spot and usdm both
    assert all(assert_agrees(line) for line in deltas)


BINANCE_FUTURES = (b'{"exchange":"binance","market":"usdm","symbol":"BTCUSDT","recv_ts_ms":1700000000007,'
                   b'"type":"delta","payload":{"e":"depthUpdate","E":1700000000000,"T":1699999999998,'
                   b'"s":"BTCUSDT","U":5,"u":9,"pu":4,"b":[],"a":[["3","0.5"],["4.1","1"]]}}')
SPOT = (b'{"exchange":"binance_us","market":"spot","symbol":"BTCUSDT","recv_ts_ms":1700000000007,'
        b'"type":"delta","payload":{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT","U":0,'
        b'"u":6,"b":[["1.00","2.0"]],"a":[]}}')


def test_binance_own_orders_are_matched_with_their_values():
    assert match_delta_line(BINANCE_FUTURES) == (
        "binance", "usdm", "BTCUSDT", 1700000000007, 1700000000000, 5, 9, 4, b"[]",
        b'[["3","0.5"],["4.1","1"]]')
    assert match_delta_line(SPOT) == ("binance_us", "spot", "BTCUSDT", 1700000000007, 1700000000000,
                                      0, 6, None, b'[["1.00","2.0"]]', b"[]")
    assert assert_agrees(BINANCE_FUTURES) and assert_agrees(SPOT)


def test_edge_values_and_near_misses_are_left_to_the_decoders():
    big = str(INT64_MAX).encode()
    for line in [SPOT.replace(b'"u":6', b'"u":' + big), SPOT.replace(b'"U":0', b'"U":' + big)
                 .replace(b'"u":6', b'"u":' + big),
                 SPOT.replace(b'"E":1700000000000', b'"E":%d' % LAST_MS),
                 BINANCE_FUTURES.replace(b'"pu":4', b'"pu":-1')]:
        assert assert_agrees(line), line
    misses = [SPOT.replace(b'"u":6', b'"u":%d' % (INT64_MAX + 1)),
              SPOT.replace(b'"U":0', b'"U":7'),                                # U > u
              SPOT.replace(b'"u":6', b'"u":06'),                               # leading zero
              SPOT.replace(b'"E":1700000000000', b'"E":%d' % (LAST_MS + 1)),
              SPOT.replace(b'"recv_ts_ms":1700000000007', b'"recv_ts_ms":%d' % (LAST_MS + 1)),
              BINANCE_FUTURES.replace(b'"T":1699999999998', b'"T":%d' % (LAST_MS + 1)),
              BINANCE_FUTURES.replace(b'"pu":4', b'"pu":-2'),
              BINANCE_FUTURES.replace(b'"pu":4', b'"pu":%d' % (INT64_MAX + 1)),
              BINANCE_FUTURES.replace(b'"pu":4,', b''),                        # usdm without pu
              SPOT.replace(b'"s":"BTCUSDT"', b'"s":"ETHUSDT"'),                 # symbol mismatch
              SPOT.replace(b'"1.00"', b'"1."'), SPOT.replace(b'"1.00"', b'"-1"'),
              SPOT.replace(b'"delta"', b'"snapshot"'), SPOT.replace(b'}}', b'} }'),
              SPOT + b"\n", SPOT.replace(b'"market":"spot"', b'"market":"margin"'),
              SPOT.replace(b'"binance_us"', b'"binance_u"'), SPOT.replace(b'"binance_us"', b'"binance_usa"')]
    assert [match_delta_line(line) for line in misses] == [None] * len(misses)
    for kind in set(REASON_OF) - {"record_too_large"}:   # the size limit is the caller's
        assert match_delta_line(_bad_record(kind, random.Random(0), 4096)) is None, kind
