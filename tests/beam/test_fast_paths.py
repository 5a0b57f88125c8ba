"""Each fast path against the straightforward reference it replaces: same answer on every input.

The fast paths accept a subset of inputs (those in the common, compact shape) and hand everything
else to the reference, so these tests generate both shapes and the edges between them.
"""
from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.core.adapters import Rejected
from beam_pipeline.core.adapters.binance import _decode_depth, decode_depth_typed

SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))

decimals = st.from_regex(r"\A[0-9]{1,6}(\.[0-9]{1,8})?\Z", fullmatch=True)
odd_strings = st.sampled_from(["", "-1", "1e5", "1.", ".5", "1.0\n", " 1", "１", "0x1", "NaN",
                               "1.2.3", "\u0031.0", "12\"", "1\\n"])
prices = st.one_of(decimals, decimals, decimals, odd_strings, st.text(max_size=6))
level = st.one_of(st.tuples(prices, prices).map(list), st.tuples(prices, prices),
                  st.lists(prices, max_size=3), prices, st.integers(), st.none())
levels = st.one_of(st.lists(st.tuples(decimals, decimals).map(list), max_size=8),
                   st.lists(level, max_size=4), st.text(max_size=3), st.integers())


@st.composite
def depth_payloads(draw):
    doc = {"e": draw(st.sampled_from(["depthUpdate", "depthUpdate", "trade"])), "E": 1700000000000,
           "s": "BTCUSDT", "U": draw(st.integers(0, 2**64)), "u": draw(st.integers(-1, 2**64)),
           "b": draw(levels), "a": draw(levels)}
    if draw(st.booleans()):
        doc["pu"] = draw(st.integers(-2, 10))
    order = draw(st.permutations(list(doc)))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (",", ":")]))
    text = "{" + separators[0].join(
        json.dumps(k) + separators[1] + json.dumps(doc[k], separators=separators,
                                                 ensure_ascii=draw(st.booleans()))
        for k in order) + "}"
    if draw(st.integers(0, 9)) == 0:      # a repeated key, the first occurrence different
        key = draw(st.sampled_from(["b", "a", "U"]))
        text = text[:-1] + f',"{key}":' + json.dumps(draw(levels)) + "}"
        text = "{" + f'"{key}":' + json.dumps(draw(levels)) + "," + text[1:]
    return text.encode()


def outcome(decode, payload):
    try:
        msg = decode(payload)
    except Rejected as rejected:
        return ("rejected", rejected.reason, rejected.message)
    return None if msg is None else msgspec.structs.astuple(msg)


@SETTINGS
@given(depth_payloads())
def test_fast_depth_decoder_equals_the_typed_decoder(payload):
    assert outcome(_decode_depth, payload) == outcome(decode_depth_typed, payload)


@pytest.mark.parametrize("payload", [
    b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["x","1"]],"a":[],"b":[["1","1"]]}',
    b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"\\u0062":[["x","1"]],"a":[],"b":[["1","1"]]}',
    b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["\\u0031","1"]],"a":[]}',
    b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1.0","1"],],"a":[]}',
    b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1.0","1"]"],"a":[]}',
    b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1.0","1","2"]],"a":[]}',
    b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[[]],"a":[]}',
])
def test_fast_depth_decoder_edge_cases(payload):
    assert outcome(_decode_depth, payload) == outcome(decode_depth_typed, payload)


# ---- canonical sort ------------------------------------------------------------------------------

from beam_pipeline.core.model import (DELTA, SNAPSHOT, Event, decode_levels,  # noqa: E402
                                 encode_levels, sort_canonically)

ids = st.integers(0, 12)
events = st.builds(
    lambda kind, first, extra, prev, t, recv, bids, src: Event(
        "binance", "spot", "X", kind, first, first + (0 if kind == SNAPSHOT else extra), prev, t,
        recv, encode_levels(bids), b"[]", "range_plus_one", src),
    st.sampled_from([DELTA, DELTA, SNAPSHOT]), ids, st.integers(0, 3),
    st.one_of(st.none(), ids), st.one_of(st.none(), st.integers(0, 3)), st.integers(0, 2),
    st.lists(st.tuples(st.sampled_from(["1", "2"]), st.sampled_from(["1", "3"])), max_size=2),
    st.sampled_from(["a:1", "a:2", "b:1"]))


@SETTINGS
@given(st.lists(events, max_size=40))
def test_sort_canonically_equals_sorting_by_the_full_key(batch):
    expected = sorted(batch, key=Event.sort_key)
    got = sort_canonically(list(batch))
    assert [msgspec.structs.astuple(e) for e in got] == [msgspec.structs.astuple(e) for e in expected]


# ---- levels text -> Arrow, in bulk ------------------------------------------------------------------

from transforms.tables import levels_array  # noqa: E402

level_lists = st.lists(st.lists(st.tuples(decimals, decimals), max_size=6), max_size=30)


@SETTINGS
@given(level_lists)
def test_levels_array_equals_decoding_each_text(sides):
    texts = [encode_levels(levels) for levels in sides]
    expected = [[{"price": p, "qty": q} for p, q in decode_levels(text)] for text in texts]
    assert levels_array(texts).to_pylist() == expected


@given(level_lists)
def test_fast_path_levels_text_is_the_canonical_one(sides):
    """The fast decoder keeps the bytes it was sent; they must be what encode_levels makes of the
    decoded levels, or events decoded by the two paths would differ."""
    for levels in sides:
        text = json.dumps(levels, separators=(",", ":")).encode()
        payload = (b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":' + text + b',"a":[]}')
        assert _decode_depth(payload).b == text == encode_levels(levels)


def test_clean_table_with_its_key_equals_reading_the_key_from_each_row():
    from transforms.tables import clean_table

    rows = [(Event("binance", "usdm", "BTCUSDT", kind, i, i + 1, i - 1 if i % 3 else None,
                   None if i % 4 == 0 else 1_700_000_000_000 + i, 1_700_000_000_100 + i,
                   encode_levels([("1.5", "2")] * (i % 3)), b"[]", "previous_link", f"f:{i}"),
             i // 4, i % 2 == 0) for i, kind in enumerate(["delta", "snapshot", "delta"] * 5)]
    keyed = clean_table(rows, ("binance", "usdm", "BTCUSDT"))
    assert keyed.equals(clean_table(rows)) and keyed.schema.equals(clean_table(rows).schema)
    assert clean_table([], ("binance", "usdm", "BTCUSDT")).equals(clean_table([]))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans(), level_lists), min_size=1, max_size=6),
       st.booleans())
def test_a_clean_table_of_stretches_equals_the_table_of_their_rows(pieces, keyed):
    """CleanStretch outputs (columns, the batch fast path) and (Event, segment, anchored) rows, in
    any mix, make the table their rows make one by one (schema, values, nulls, order)."""
    from beam_pipeline.core.columns import CleanStretch, EventColumns
    from transforms.tables import clean_table

    key = ("binance", "usdm", "BTCUSDT")
    outputs, rows, i = [], [], 0
    for segment, as_columns, sides in pieces:
        events = []
        for levels in sides:
            i += 1
            events.append(Event(*key, DELTA, i, i + 1, i - 1 if i % 3 else None,
                                None if i % 4 == 0 else 1_700_000_000_000 + i,
                                None if i % 5 == 0 else 1_700_000_000_100 + i,
                                encode_levels(levels), encode_levels(levels[:1]), "previous_link",
                                f"f:{i}"))
        piece_rows = [(event, segment, segment % 2 == 0) for event in events]
        rows += piece_rows
        if as_columns and events:
            columns = EventColumns.from_events(events)
            outputs.append(CleanStretch(columns[0:len(events)], segment, segment % 2 == 0))
        else:
            outputs += piece_rows
    table = clean_table(outputs, key if keyed else None)
    assert table.schema.equals(clean_table(rows).schema)
    assert table.to_pylist() == clean_table(rows).to_pylist()
