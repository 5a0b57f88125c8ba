"""Epochs and the canonical order (beam_pipeline/core/epochs.py): id order, except that after an id reset
(engine restart) epochs replay in time order; the batch replay over runs gives the same order."""
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipeline.core.epochs import (canonical_order, chunks_min_time, cut_points,
                                  replay_in_epoch_order)
from beam_pipeline.core.model import DELTA, RANGE_PLUS_ONE, SNAPSHOT, Event, RunRef

KEY = ("binance", "spot", "BTCUSDT")
JUMP = 1000


def delta(first, last, at):
    return Event(*KEY, DELTA, first, last, None, at, at, b"[]", b"[]", RANGE_PLUS_ONE)


def snap(last_id, at):
    return Event(*KEY, SNAPSHOT, last_id, last_id, None, None, at, b"[]", b"[]", RANGE_PLUS_ONE)


def ids(events):
    return [(e.kind[0], e.last_id) for e in events]


def test_without_a_reset_the_order_is_the_id_order():
    events = [snap(100, 5), delta(101, 102, 1), delta(103, 103, 2),
              delta(5_000, 5_001, 3),                    # a large gap: time moves forward
              delta(5_002, 5_002, -600_000),             # the clock jumps back: ids continue
              delta(5_003, 5_004, 4)]
    ordered = canonical_order(reversed(events), JUMP)
    assert ordered == sorted(events, key=Event.sort_key)
    assert cut_points(ordered, JUMP) == []


def test_epochs_replay_in_time_order_ids_ascending_within_each():
    first = [snap(10_000_000, 0), delta(10_000_001, 10_000_002, 10), delta(10_000_003, 10_000_003, 20)]
    second = [delta(20_000, 20_001, 30), snap(20_001, 35), delta(20_002, 20_004, 40)]
    third = [delta(50, 50, 50), delta(51, 52, 60)]
    mixed = third + first[::-1] + second
    assert canonical_order(mixed, JUMP) == first + second + third
    assert cut_points(sorted(mixed, key=Event.sort_key), JUMP) == [2, 5]


def test_a_jump_with_time_going_back_but_the_higher_ids_newer_keeps_id_order():
    """A snapshot received late just below a large gap: time goes back across the jump, a cut, but
    the block above is not older (its earliest time is later), so nothing moves."""
    events = [delta(99, 100, 0), snap(100, 500), delta(5_000, 5_001, 200), delta(5_002, 5_002, 600)]
    assert cut_points(sorted(events, key=Event.sort_key), JUMP) == [2]
    assert canonical_order(events, JUMP) == sorted(events, key=Event.sort_key)


def test_jump_must_exceed_max_jump():
    events = [delta(2_000, 2_000, 0), delta(1, 1, 10)]          # 1,999 ids apart: a reset
    assert ids(canonical_order(events, JUMP)) == [("d", 2_000), ("d", 1)]
    assert ids(canonical_order(events, 5_000)) == [("d", 1), ("d", 2_000)]


def test_chunks_min_time():
    refs = [RunRef(0, "a", 1, 30), RunRef(0, "b", 2, 10)]
    assert chunks_min_time(refs) == 10
    assert chunks_min_time(refs + [RunRef(0, "c", 1)]) is None


# ---- the batch replay over runs equals canonical_order -----------------------------------------

def _runs(events, span):
    by_run = {}
    for event in events:
        by_run.setdefault(event.last_id // span, []).append(event)
    return [by_run[index] for index in sorted(by_run)]


def _replay(events, span, known_times=True):
    runs = _runs(events, span)
    reads = Counter()

    def read(run):
        reads[id(run)] += 1
        return sorted(run, key=Event.sort_key)

    def min_time_of(run):
        return min(e.time for e in run) if known_times else None

    out = [e for part in replay_in_epoch_order(runs, read, JUMP, min_time_of) for e in part]
    return out, reads, runs


@st.composite
def epoch_feeds(draw):
    """A key's events: 1-4 epochs in time order, each restarting at some id (often far lower), with
    duplicates, snapshots, large gaps and a little clock noise."""
    events, clock = [], 0
    for _ in range(draw(st.integers(1, 4))):
        next_id = draw(st.sampled_from([1, 40, 900, 5_000, 20_000, 300_000, 10_000_000]))
        for _ in range(draw(st.integers(1, 12))):
            clock += draw(st.integers(-3, 50))
            next_id += draw(st.sampled_from([0, 0, 0, 1, 3, 1_500, 40_000]))
            last = next_id + draw(st.integers(0, 4))
            kind = draw(st.sampled_from([DELTA, DELTA, DELTA, SNAPSHOT]))
            event = delta(next_id, last, clock) if kind == DELTA else snap(last, clock + 7)
            events.append(event)
            if draw(st.booleans()) and draw(st.booleans()):
                events.append(event)                     # a duplicate
            next_id = last + 1
    return events


@st.composite
def random_feeds(draw):
    """Anything: the equivalence must hold whatever the ids and times."""
    out = []
    for _ in range(draw(st.integers(0, 25))):
        first = draw(st.integers(0, 60_000))
        last = first + draw(st.integers(0, 3_000))
        at = draw(st.integers(-1_000, 1_000))
        out.append(delta(first, last, at) if draw(st.booleans()) else snap(last, at))
    return out


@settings(max_examples=300, deadline=None)
@given(events=st.one_of(epoch_feeds(), random_feeds()),
       span=st.sampled_from([1, 7, 997, 5_000, 50_000, 1_000_000]), known=st.booleans(),
       seed=st.randoms(use_true_random=False))
def test_replay_over_runs_equals_canonical_order(events, span, known, seed):
    seed.shuffle(events)
    expected = canonical_order(events, JUMP)
    out, reads, runs = _replay(events, span, known)
    assert out == expected
    # a run is read once, and again at most once per piece (part between two cuts) of it
    cuts = len(cut_points(sorted(events, key=Event.sort_key), JUMP))
    assert sum(reads.values()) <= 2 * len(runs) + cuts
    earliest_first = runs and min(e.time for e in runs[0]) == min(e.time for e in events)
    if known and earliest_first and not cut_points(sorted(events, key=Event.sort_key), JUMP):
        # no reset, and the lowest ids hold the earliest time (a feed whose clock never goes back
        # past its start): every run is read once, as it comes
        assert all(n == 1 for n in reads.values()) and len(reads) == len(runs)


def test_the_newer_epoch_waits_and_is_read_again():
    old = [snap(10_000_000, 0)] + [delta(10_000_001 + i, 10_000_001 + i, 10 * i) for i in range(5)]
    new = [delta(1 + i, 1 + i, 100 + i) for i in range(5)]
    out, reads, runs = _replay(new + old, span=1_000_000)
    assert out == old + new
    assert sorted(reads.values()) == [1, 2]               # the new epoch's run is read twice
    # a reset inside one run (span larger than both epochs' ids)
    out, reads, runs = _replay(new + old, span=10**9)
    assert out == old + new and list(reads.values()) == [1]
