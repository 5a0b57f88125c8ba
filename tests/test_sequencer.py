"""The per-symbol state machine on its own: rules, classes, holds, replays, state versions."""
import msgspec

from beam_pipeline.model import DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT, Event
from beam_pipeline.sequencer import (CLEAN, CORRUPT, DUPLICATE, GAP, LATE, RECOVERY, SUPERSEDED,
                                     Policy, StreamSequencer)
from transforms.sequence import SequencerDoFn, StoredState, StreamState

SPOT = ("binance", "spot", "ETHUSDT")
USDM = ("binance", "usdm", "ETHUSDT")


def spot(first, last, at=0):
    return Event(*SPOT, DELTA, first, last, None, at, at, [], [], RANGE_PLUS_ONE)


def usdm(first, last, prev, at=0):
    return Event(*USDM, DELTA, first, last, prev, at, at, [], [], PREVIOUS_LINK)


def snap(key, last_id, at=0):
    rule = RANGE_PLUS_ONE if key == SPOT else PREVIOUS_LINK
    return Event(*key, SNAPSHOT, last_id, last_id, None, at, at, [], [], rule)


def run(key, events, policy=Policy(recovery_timeout_ms=1000)):
    machine = StreamSequencer(key, policy)
    machine.feed_all(sorted(events, key=Event.sort_key))
    machine.finish()
    return machine.out


def tags(out):
    return [(tag, value[0].last_id if tag == CLEAN else getattr(value, "last_id", None))
            for tag, value in out if tag in (CLEAN, DUPLICATE, SUPERSEDED)]


def test_spot_range_plus_one_with_overlap_and_duplicates():
    out = run(SPOT, [snap(SPOT, 10), spot(9, 12), spot(11, 13), spot(14, 14), spot(14, 14),
                     spot(5, 8)])
    assert tags(out) == [(SUPERSEDED, 8), (CLEAN, 10), (CLEAN, 12), (CLEAN, 13), (CLEAN, 14),
                         (DUPLICATE, 14)]
    assert not [v for t, v in out if t == GAP]


def test_gap_classes_at_their_boundaries():
    policy = Policy(small_gap_max=10, medium_gap_max=1000, recovery_timeout_ms=1000)
    for size, cls in ((1, "small"), (10, "small"), (11, "medium"), (1000, "medium"),
                      (1001, "large")):
        out = run(SPOT, [snap(SPOT, 100), spot(101 + size, 101 + size, at=5)], policy)
        gaps = [v for t, v in out if t == GAP]
        assert [(g.gap_size, g.gap_class, g.last_good_id, g.next_first_id) for g in gaps] == [
            (size, cls, 100, 101 + size)]


def test_usdm_previous_link_and_bridge():
    out = run(USDM, [usdm(90, 95, 80), snap(USDM, 100), usdm(98, 103, 95), usdm(104, 110, 103)])
    assert tags(out) == [(SUPERSEDED, 95), (CLEAN, 100), (CLEAN, 103), (CLEAN, 110)]
    gap_out = run(USDM, [snap(USDM, 100), usdm(101, 105, 100), usdm(120, 125, 110, at=3)])
    [gap] = [v for t, v in gap_out if t == GAP]
    assert (gap.gap_size, gap.gap_class, gap.last_good_id, gap.next_first_id) == (None, "medium", 105, 120)


def test_medium_gap_resolved_supersedes_covered_held_deltas():
    out = run(SPOT, [snap(SPOT, 100), spot(101, 101, 1), spot(150, 152, 2), spot(153, 155, 3),
                     snap(SPOT, 154, 500), spot(155, 158, 600)])
    # 153-155 reaches past the snapshot (155 > 154): it bridges and stays clean
    assert tags(out) == [(CLEAN, 100), (CLEAN, 101), (SUPERSEDED, 152), (CLEAN, 154),
                         (CLEAN, 155), (CLEAN, 158)]
    [gap] = [v for t, v in out if t == GAP]
    assert gap.resolution == "resynced"
    assert [v.from_id for t, v in out if t == RECOVERY] == [102]


def test_snapshot_after_the_deadline_does_not_resolve():
    out = run(SPOT, [snap(SPOT, 100), spot(101, 101, 1), spot(150, 152, 2),
                     snap(SPOT, 152, 2 + 1001)])
    [gap] = [v for t, v in out if t == GAP]
    [corrupt] = [v for t, v in out if t == CORRUPT]
    assert gap.resolution == "corrupt_period"
    assert (corrupt.start_id, corrupt.end_id, corrupt.reason) == (102, 149, "recovery_timeout")


def test_hold_bound_gives_up_with_its_own_reason():
    events = [snap(SPOT, 100), spot(150, 150, 1)] + [spot(i, i, 2) for i in range(151, 160)]
    out = run(SPOT, events, Policy(recovery_timeout_ms=10_000, max_buffered_events=4))
    [corrupt] = [v for t, v in out if t == CORRUPT]
    assert corrupt.reason == "buffer_overflow"
    assert [t for t, _ in out].count(CLEAN) == 1 + 10   # everything released, nothing lost


def test_out_of_order_arrival_during_a_hold_replays_in_order():
    machine = StreamSequencer(SPOT, Policy(recovery_timeout_ms=1000))
    for event in (snap(SPOT, 100), spot(150, 150, 5), spot(101, 149, 4)):   # the filler is late
        machine.feed(event)
    machine.finish()
    assert not [v for t, v in machine.out if t in (GAP, CORRUPT)]
    assert [v[0].last_id for t, v in machine.out if t == CLEAN] == [100, 149, 150]
    assert len([v for t, v in machine.out if t == RECOVERY]) == 1


def test_late_fill_of_a_declared_gap_is_late_not_duplicate():
    machine = StreamSequencer(SPOT, Policy())
    for event in (snap(SPOT, 100), spot(105, 106, 1), spot(101, 104, 2)):
        machine.feed(event)
    assert [t for t, _ in machine.out][-1] == LATE


def test_stream_start_without_snapshot_releases_unanchored():
    out = run(SPOT, [spot(1, 2, 0), spot(3, 4, 10)])
    clean = [v for t, v in out if t == CLEAN]
    assert [(e.last_id, segment, anchored) for e, segment, anchored in clean] == [
        (2, 1, False), (4, 1, False)]


class _Cell:
    """A stand-in for one ReadModifyWrite/Bag state cell of one key."""

    def __init__(self, value=None):
        self.value, self.items = value, []

    def read(self):
        return self.value if self.value is not None else list(self.items)

    def write(self, value):
        self.value = value

    def add(self, item):
        self.items.append(item)

    def clear(self):
        self.value, self.items = None, []


def test_state_of_another_version_restarts_the_key_with_state_reset():
    fn = SequencerDoFn(Policy())
    old = msgspec.msgpack.encode(StoredState(machine=msgspec.msgpack.decode(
        msgspec.msgpack.encode({"version": 0}), type=dict), stream=StreamState(), version=0))
    for blob in (old, b"\x00garbage"):
        stored, machine, outputs = fn._load(SPOT, _Cell(blob), _Cell())
        assert machine.state.cursor is None
        [reset] = [o.value for o in outputs]
        assert reset.reason == "state_reset" and reset.symbol == "ETHUSDT"


def test_a_poison_event_is_set_aside_and_the_rest_go_on():
    machine = StreamSequencer(SPOT, Policy())
    poison = Event(*SPOT, DELTA, 11, 12, None, 1, 1, [], [], "checksum_only", "f:7")
    for event in (snap(SPOT, 10), poison, spot(11, 12), spot(13, 14)):
        machine.feed(event)
    [(bad, trace)] = [v for t, v in machine.out if t == "poison"]
    assert bad is poison and "no continuity rule 'checksum_only'" in trace
    assert [v[0].last_id for t, v in machine.out if t == CLEAN] == [10, 12, 14]
