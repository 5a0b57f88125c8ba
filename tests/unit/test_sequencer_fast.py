"""The state machine's bulk path (StreamSequencer.feed_all: stretches of continuing deltas accepted
at once) against feeding the same events one by one (the reference): identical outputs and state
on random runs with gaps, duplicates, snapshots, id resets, missing links, disconnect markers and
poison events."""
from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.core.epochs import canonical_order
from beam_pipeline.core.model import (DELTA, DISCONNECT, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT,
                                      Event)
from beam_pipeline.core.sequencer import CLEAN, StreamSequencer, continuing_stretches
from beam_pipeline.options import default_policy

POLICY = default_policy(recovery_timeout_ms=50, small_gap_max=3, medium_gap_max=40,
                        reset_min_jump_ids=1000, max_buffered_events=6)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
STEPS = ["next"] * 12 + ["overlap", "duplicate", "small_gap", "medium_gap", "large_gap", "snapshot",
                         "old_snapshot", "reset", "no_link", "late_time", "poison", "disconnect"]


@st.composite
def feeds(draw):
    market = draw(st.sampled_from(["spot", "usdm"]))
    rule = RANGE_PLUS_ONE if market == "spot" else PREVIOUS_LINK
    key = ("binance", market, "BTCUSDT")

    def event(kind, first, last, prev, at, event_rule=rule):
        return Event(*key, kind, first, last, prev if rule == PREVIOUS_LINK else None, at, at,
                     b"[]", b"[]", event_rule, f"f:{at}")

    cursor, at, events = draw(st.integers(5000, 9000)), 1000, []
    if draw(st.booleans()):
        events.append(event(SNAPSHOT, cursor, cursor, None, at))
    for step in draw(st.lists(st.sampled_from(STEPS), max_size=60)):
        at += draw(st.integers(0, 30))
        size = draw(st.integers(1, 4))
        if step == "next":
            events.append(event(DELTA, cursor + 1, cursor + size, cursor, at))
            cursor += size
        elif step == "overlap":
            events.append(event(DELTA, cursor - 1, cursor + size, cursor, at))
            cursor += size
        elif step == "duplicate" and events:
            events.append(draw(st.sampled_from(events)))
        elif step in ("small_gap", "medium_gap", "large_gap"):
            skip = {"small_gap": 2, "medium_gap": 20, "large_gap": 200}[step]
            events.append(event(DELTA, cursor + skip, cursor + skip + size, cursor + skip - 1, at))
            cursor += skip + size
        elif step == "snapshot":
            cursor += draw(st.integers(0, 3))
            events.append(event(SNAPSHOT, cursor, cursor, None, at))
        elif step == "old_snapshot":
            events.append(event(SNAPSHOT, cursor - 3, cursor - 3, None, at))
        elif step == "reset":
            cursor = draw(st.integers(10, 500))
            events.append(event(DELTA, cursor, cursor + size, -1, at))
            cursor += size
        elif step == "no_link":
            events.append(event(DELTA, cursor + 1, cursor + size, None, at))
            cursor += size
        elif step == "late_time":
            events.append(event(DELTA, cursor + 1, cursor + size, cursor, at - 200))
            cursor += size
        elif step == "disconnect":          # a collector's marker (core/markers.py)
            events.append(Event(*key, DISCONNECT, cursor, cursor, None, at, at + 1, b"[]", b"[]",
                                rule, f"f:{at}"))
        elif step == "poison":
            events.append(event(DELTA, cursor + 1, cursor + size, cursor, at, event_rule="bogus"))
    order = draw(st.sampled_from(["canonical", "arrival", "shuffled"]))
    if order == "canonical":
        events = canonical_order(events, POLICY.reset_min_jump_ids)
    elif order == "shuffled":
        events = draw(st.permutations(events))
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=3)))
    chunks = [events[a:b] for a, b in zip([0] + cuts, cuts + [len(events)])]
    return key, chunks


def outputs(machine):
    return [(tag, msgspec.to_builtins(value)) for tag, value in machine.take_output()]


@SETTINGS
@given(feeds())
def test_bulk_feed_equals_feeding_one_by_one(feed):
    key, chunks = feed
    bulk, reference = StreamSequencer(key, POLICY), StreamSequencer(key, POLICY)
    for chunk in chunks:
        bulk.feed_all(iter(chunk))
        for event in chunk:
            reference.feed(event)
        assert outputs(bulk) == outputs(reference)
        assert msgspec.to_builtins(bulk.state) == msgspec.to_builtins(reference.state)
    bulk.finish()
    reference.finish()
    assert outputs(bulk) == outputs(reference)
    assert msgspec.to_builtins(bulk.state) == msgspec.to_builtins(reference.state)


def _spot(first, last, kind=DELTA):
    return Event("binance", "spot", "X", kind, first, last, None, 1, 1, b"[]", b"[]", RANGE_PLUS_ONE)


def test_stretches_end_at_each_break():
    events = [_spot(10, 10, SNAPSHOT), _spot(11, 12), _spot(13, 15), _spot(15, 16), _spot(18, 19),
              _spot(20, 20), _spot(20, 20)]
    # 0: nothing before it; 1-3 continue (15-16 overlaps 13-15); 4 leaves a gap; 5 continues;
    # 6 repeats 5 (not above it)
    assert continuing_stretches(events) == [0, 4, 4, 4, 4, 6, 6]


def test_a_clean_run_is_taken_in_bulk():
    events = [_spot(10, 10, SNAPSHOT)] + [_spot(i, i) for i in range(11, 2011)]
    machine = StreamSequencer(("binance", "spot", "X"), POLICY)
    machine.feed_all(events)
    out = machine.take_output()
    assert [tag for tag, _ in out] == [CLEAN] * 2001
    assert machine.state.cursor == 2010 and machine.state.bridging is False
