"""The columnar hot path (beam_pipeline/core/columns.py) against the Event path it replaces: rows
round-trip to the same Events, sort in the same order, cut epochs at the same places, and the state
machine fed columns gives the outputs and state of feeding the Events one by one (random faulted
runs: gaps of each class, duplicates, snapshots, id resets, missing links, late times, markers,
poison events)."""
from __future__ import annotations

import pickle

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.core.batch_decode import decode_envelope_columns, decode_envelope_deltas
from beam_pipeline.core.columns import CleanStretch, EventColumns, events_of, sort_order
from beam_pipeline.core.epochs import cut_points
from beam_pipeline.core.model import DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, Event, EventBatch, sort_canonically
from beam_pipeline.core.sequencer import CLEAN, StreamSequencer
from tests.unit.test_batch_decode import lines as envelope_lines
from tests.unit.test_envelope_lines import canonical_lines, lines as shaped_lines
from tests.unit.test_sequencer_fast import POLICY, feeds

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
KEYS = [("binance", "spot", "BTCUSDT"), ("binance", "usdm", "ETHUSDT"), ("binance_us", "spot", "X")]
ids = st.integers(0, 2**63 - 1)
small_ids = st.integers(0, 30)
optional_time = st.one_of(st.none(), st.integers(0, 2**41))


@st.composite
def deltas(draw, id_values=small_ids):
    key = draw(st.sampled_from(KEYS))
    rule = RANGE_PLUS_ONE if key[1] == "spot" else PREVIOUS_LINK
    first = draw(id_values)
    return Event(*key, DELTA, first, draw(id_values), draw(st.one_of(st.none(), st.integers(-1, 40))),
                 draw(optional_time), draw(optional_time),
                 draw(st.sampled_from([b"[]", b'[["1.5","2"]]', b'[["1","2"],["3.25","4"]]'])),
                 draw(st.sampled_from([b"[]", b'[["9","0.001"]]'])), rule,
                 f"{draw(st.sampled_from(['a.jsonl', 'gs://b/c:d.gz', '/x/y']))}:"
                 f"{draw(st.integers(1, 10**6))}")


@SETTINGS
@given(st.lists(st.one_of(deltas(), deltas(ids)), max_size=40))
def test_rows_are_the_events_they_were_made_of(events):
    columns = EventColumns.from_events(events)
    assert columns is not None and len(columns) == len(events)
    assert columns.events() == events
    assert EventColumns.from_bytes(columns.to_bytes()).events() == events
    assert pickle.loads(pickle.dumps(columns)).events() == events
    assert list(columns) == events
    if events:
        assert columns[-1] == events[-1] and columns[1:].events() == events[1:]
        assert columns.times().tolist() == [event.time for event in events]


@SETTINGS
@given(st.lists(deltas(), max_size=60), st.integers(1, 4))
def test_concat_take_and_sort_are_those_of_the_events(events, parts):
    cut = len(events) // parts
    pieces = [events[i:i + cut] for i in range(0, len(events), cut)] if cut else [events]
    columns = EventColumns.concat([EventColumns.from_events(piece) for piece in pieces if piece]
                                  or [EventColumns.from_events([])])
    assert columns.events() == events
    assert columns.take(sort_order(columns)).events() == sort_canonically(list(events))


def test_what_columns_cannot_hold_is_refused():
    good = Event("binance", "spot", "X", DELTA, 1, 2, None, 3, 4, b"[]", b"[]", RANGE_PLUS_ONE, "f:1")
    for bad in (msgspec.structs.replace(good, kind="snapshot"), msgspec.structs.replace(good, rule="bogus"),
                msgspec.structs.replace(good, source="pubsub-id"), msgspec.structs.replace(good, first_id=-5),
                msgspec.structs.replace(good, last_id=2**63), msgspec.structs.replace(good, bids=[]),
                msgspec.structs.replace(good, source="f:01")):
        assert EventColumns.from_events([good, bad]) is None
    assert EventColumns.from_events([good]).events() == [good]


def _split_columnar(chunk):
    """A chunk as pieces: maximal stretches columns can hold (as EventColumns), the rest as lists."""
    pieces, pending = [], []
    for event in chunk:
        if EventColumns.from_events([event]) is None:
            if pending:
                pieces.append(EventColumns.from_events(pending))
                pending = []
            pieces.append([event])
        else:
            pending.append(event)
    if pending:
        pieces.append(EventColumns.from_events(pending))
    return pieces


def _outputs(machine):
    out = []
    for tag, value in machine.take_output():
        if isinstance(value, CleanStretch):
            out.extend((CLEAN, msgspec.to_builtins(row)) for row in value.rows())
        else:
            out.append((tag, msgspec.to_builtins(value)))
    return out


def _assert_columns_feed_like_events(key, steps):
    """steps: (pieces fed by feed_all, the same events fed one by one); outputs and state agree
    after every step and after finish."""
    columnar, reference = StreamSequencer(key, POLICY), StreamSequencer(key, POLICY)
    for pieces, events in steps:
        for piece in pieces:
            columnar.feed_all(piece)
        for event in events:
            reference.feed(event)
        assert _outputs(columnar) == _outputs(reference)
        assert msgspec.to_builtins(columnar.state) == msgspec.to_builtins(reference.state)
    columnar.finish()
    reference.finish()
    assert _outputs(columnar) == _outputs(reference)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(feeds())
def test_the_machine_fed_columns_equals_feeding_one_by_one(feed):
    key, chunks = feed
    _assert_columns_feed_like_events(key, [(_split_columnar(chunk), chunk) for chunk in chunks])


DELTA_STEPS = ["next"] * 20 + ["overlap", "duplicate", "small_gap", "medium_gap", "large_gap",
                              "reset", "no_link", "late_time", "snapshot"]


@st.composite
def delta_runs(draw):
    """Mostly continuing deltas after a snapshot, with faults: what the batch path feeds as columns
    (a snapshot, columns cannot hold, is its own list piece)."""
    market = draw(st.sampled_from(["spot", "usdm"]))
    rule = RANGE_PLUS_ONE if market == "spot" else PREVIOUS_LINK
    key = ("binance", market, "BTCUSDT")

    def event(first, last, prev, at, kind=DELTA):
        return Event(*key, kind, first, last, prev if rule == PREVIOUS_LINK else None, at, at,
                     b'[["1","2"]]', b"[]", rule, f"f:{at}")

    cursor, at = draw(st.integers(5000, 9000)), 1000
    pieces, pending = [[event(cursor, cursor, None, at, "snapshot")]], []
    for step in draw(st.lists(st.sampled_from(DELTA_STEPS), min_size=1, max_size=120)):
        at += draw(st.integers(0, 30))
        size = draw(st.integers(1, 4))
        first, prev = cursor + 1, cursor
        if step == "overlap":
            first = cursor - 1
        elif step == "duplicate" and pending:
            pending.append(draw(st.sampled_from(pending)))
            continue
        elif step.endswith("_gap"):
            skip = {"small_gap": 2, "medium_gap": 20, "large_gap": 200}[step]
            first, prev = cursor + skip, cursor + skip - 1
        elif step == "reset":
            first, prev = draw(st.integers(10, 500)), -1
        elif step == "no_link":
            prev = None
        elif step == "late_time":
            at -= 200
        elif step == "snapshot":
            pieces += [pending, [event(cursor + 1, cursor + 1, None, at, "snapshot")]]
            pending, cursor = [], cursor + 1
            continue
        pending.append(event(first, first + size - 1, prev, at))
        cursor = first + size - 1
    pieces.append(pending)
    return key, [piece for piece in pieces if piece]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(delta_runs())
def test_runs_of_deltas_fed_as_columns_equal_feeding_one_by_one(run):
    key, pieces = run
    _assert_columns_feed_like_events(key, [([EventColumns.from_events(piece) or piece], piece)
                                           for piece in pieces])


def test_a_clean_run_of_columns_is_one_output():
    key = ("binance", "spot", "X")
    snapshot = Event(*key, "snapshot", 10, 10, None, 1, 1, b"[]", b"[]", RANGE_PLUS_ONE, "f:1")
    deltas = [Event(*key, DELTA, i, i, None, i, i, b"[]", b"[]", RANGE_PLUS_ONE, f"f:{i}")
              for i in range(11, 2011)]
    machine = StreamSequencer(key, POLICY)
    machine.feed_all([snapshot, deltas[0]])
    machine.feed_all(EventColumns.from_events(deltas[1:]))
    out = machine.take_output()
    # a piece's first row continues nothing before it in the piece: the machine takes it as an Event
    assert [type(value) for _, value in out] == [tuple, tuple, tuple, CleanStretch]
    assert out[3][1].columns.events() == deltas[2:] and machine.state.cursor == 2010


@SETTINGS
@given(feeds(), st.integers(0, 3000))
def test_epoch_cuts_of_columns_are_those_of_the_events(feed, jump):
    events = [event for chunk in feed[1] for event in chunk]
    held = [event for event in events if EventColumns.from_events([event]) is not None]
    ordered = sort_canonically(held)
    if not ordered:
        return
    columns = EventColumns.from_events(ordered)
    assert cut_points(columns, jump) == cut_points(ordered, jump)
    for before in events[:3]:
        assert cut_points(columns, jump, before) == cut_points(ordered, jump, before)


@SETTINGS
@given(st.lists(st.one_of(envelope_lines(), shaped_lines(), canonical_lines()), min_size=1,
                max_size=12))
def test_decoded_columns_are_the_fast_paths_events(batch):
    """Lines of every shape (the whole-line regex's, taken in bulk, and any other JSON), mixed:
    the columns hold exactly the Events the per-line fast path gives, in line order."""
    numbers = list(range(7, 7 + len(batch)))
    sources = [f"feed.jsonl:{n}" for n in numbers]
    expected = decode_envelope_deltas(batch, sources, 2000)
    columns, taken = decode_envelope_columns(batch, numbers, "feed.jsonl", 2000)
    assert taken == [index for index, event in enumerate(expected) if event is not None]
    assert (columns.events() if columns is not None else []) == [expected[i] for i in taken]


def test_an_event_batch_gives_its_columns_as_events():
    event = Event("binance", "spot", "X", DELTA, 1, 2, None, 3, 4, b"[]", b"[]", RANGE_PLUS_ONE, "f:1")
    other = msgspec.structs.replace(event, kind="snapshot", source="f:2")
    batch = EventBatch([other], 0, EventColumns.from_events([event]).to_bytes())
    assert events_of(batch) == [other, event]
