"""The per-symbol state machine on its own: rules, classes, holds, replays, state versions."""
from collections import Counter

import msgspec

from beam_pipeline.core.epochs import canonical_order

from beam_pipeline.core.model import DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT, Event
from beam_pipeline.options import default_policy
from beam_pipeline.core.sequencer import (CLEAN, CORRUPT, DUPLICATE, ERROR, GAP, LATE, POISON,
                                          RECOVERY, SUPERSEDED, StreamSequencer)
from transforms import sequence_state
from transforms.sequence_batch import BatchSequencerDoFn, SpillRuns
from transforms.sequence_state import StoredState, StreamState

SPOT = ("binance", "spot", "ETHUSDT")
USDM = ("binance", "usdm", "ETHUSDT")


def spot(first, last, at=0):
    return Event(*SPOT, DELTA, first, last, None, at, at, b"[]", b"[]", RANGE_PLUS_ONE)


def usdm(first, last, prev, at=0):
    return Event(*USDM, DELTA, first, last, prev, at, at, b"[]", b"[]", PREVIOUS_LINK)


def snap(key, last_id, at=0):
    rule = RANGE_PLUS_ONE if key == SPOT else PREVIOUS_LINK
    return Event(*key, SNAPSHOT, last_id, last_id, None, at, at, b"[]", b"[]", rule)


def run(key, events, policy=default_policy(recovery_timeout_ms=1000)):
    """Canonical order, as the batch sequencer feeds the machine."""
    machine = StreamSequencer(key, policy)
    machine.feed_all(canonical_order(events, policy.reset_min_jump_ids))
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
    policy = default_policy(small_gap_max=10, medium_gap_max=1000, recovery_timeout_ms=1000)
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
    out = run(SPOT, events, default_policy(recovery_timeout_ms=10_000, max_buffered_events=4))
    [corrupt] = [v for t, v in out if t == CORRUPT]
    assert corrupt.reason == "buffer_overflow"
    assert [t for t, _ in out].count(CLEAN) == 1 + 10   # everything released, nothing lost


def test_out_of_order_arrival_during_a_hold_replays_in_order():
    machine = StreamSequencer(SPOT, default_policy(recovery_timeout_ms=1000))
    for event in (snap(SPOT, 100), spot(150, 150, 5), spot(101, 149, 4)):   # the filler is late
        machine.feed(event)
    machine.finish()
    assert not [v for t, v in machine.out if t in (GAP, CORRUPT)]
    assert [v[0].last_id for t, v in machine.out if t == CLEAN] == [100, 149, 150]
    assert len([v for t, v in machine.out if t == RECOVERY]) == 1


def test_late_fill_of_a_declared_gap_is_late_not_duplicate():
    machine = StreamSequencer(SPOT, default_policy())
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
    old = msgspec.msgpack.encode(StoredState(machine=msgspec.msgpack.decode(
        msgspec.msgpack.encode({"version": 0}), type=dict), stream=StreamState(), version=0))
    for blob in (old, b"\x00garbage"):
        stored, machine, outputs = sequence_state.load(SPOT, default_policy(), _Cell(blob), _Cell())
        assert machine.state.cursor is None
        [reset] = [o.value for o in outputs]
        assert reset.reason == "state_reset" and reset.symbol == "ETHUSDT"


def test_events_held_in_unreadable_state_become_dead_letters():
    """Held and waiting events are stored in their version's encoding: at a state reset each is
    a state_reset dead letter with its stored bytes, never dropped uncounted."""
    held, waiting = _Cell(), _Cell()
    held.add(b"old-held-event")
    waiting.add(b"old-waiting-event")
    _, _, outputs = sequence_state.load(SPOT, default_policy(), _Cell(b"\x00garbage"), held, waiting)
    letters = [o.value for o in outputs if o.tag == "dead_letter"]
    assert [(d.reason, d.payload, d.stage) for d in letters] == [
        ("state_reset", b"old-held-event", "sequence"), ("state_reset", b"old-waiting-event", "sequence")]
    assert held.read() == [] and waiting.read() == []
    assert [o.value.reason for o in outputs if o.tag == "corrupt_periods"] == ["state_reset"]


def test_a_poison_event_is_set_aside_and_the_rest_go_on():
    machine = StreamSequencer(SPOT, default_policy())
    poison = Event(*SPOT, DELTA, 11, 12, None, 1, 1, b"[]", b"[]", "checksum_only", "f:7")
    for event in (snap(SPOT, 10), poison, spot(11, 12), spot(13, 14)):
        machine.feed(event)
    [(bad, trace)] = [v for t, v in machine.out if t == POISON]
    assert bad is poison and "no continuity rule 'checksum_only'" in trace
    assert [v[0].last_id for t, v in machine.out if t == CLEAN] == [10, 12, 14]


# ---- id resets (engine restarts) ---------------------------------------------------------------

def gaps_of(out):
    return [(g.last_good_id, g.next_first_id, g.gap_size, g.gap_class, g.action, g.resolution,
             g.event_time) for t, g in out if t == GAP]


def corrupt_of(out):
    return [(c.start_id, c.end_id, c.start_time, c.end_time, c.reason) for t, c in out if t == CORRUPT]


def requests_of(out):
    return [(r.from_id, r.reason) for t, r in out if t == RECOVERY]


def in_order(events, policy=default_policy(recovery_timeout_ms=1000)):
    """Arrival order: the events exactly as given."""
    machine = StreamSequencer(events[0].key, policy)
    for event in events:
        machine.feed(event)
    machine.finish()
    return machine.out


def test_the_id_reset_threshold_is_its_own_option():
    """--reset_min_jump_ids, not --medium_gap_max, tells an id reset from a stale message."""
    events = [snap(SPOT, 100_000, 0), spot(100_001, 100_002, 10), spot(99_500, 99_501, 20)]
    assert default_policy().reset_min_jump_ids == default_policy().medium_gap_max == 1000
    small_gaps = default_policy(medium_gap_max=100, recovery_timeout_ms=1000)
    small_jumps = default_policy(reset_min_jump_ids=100, recovery_timeout_ms=1000)
    for order in (lambda policy: run(SPOT, events, policy), lambda policy: in_order(events, policy)):
        stale = order(small_gaps)
        assert gaps_of(stale) == [] and (SUPERSEDED, 99_501) in tags(stale)
        assert gaps_of(order(small_jumps)) == [(100_002, 99_500, None, "reset", "hold_for_snapshot",
                                                "corrupt_period", 20)]


def test_id_reset_without_snapshot_waits_then_releases_unanchored():
    events = [snap(SPOT, 100_000, 0), spot(100_001, 100_002, 10), spot(100_003, 100_003, 20),
              spot(50, 51, 30), spot(52, 52, 40), spot(53, 55, 2_000)]     # 2000: past the wait
    out = run(SPOT, events)
    assert gaps_of(out) == [(100_003, 50, None, "reset", "hold_for_snapshot", "corrupt_period", 30)]
    # ids in two numberings: the old epoch's first unseen id, the new one's last unseen id
    assert corrupt_of(out) == [(100_004, 49, 20, 30, "recovery_timeout")]
    assert requests_of(out) == [(50, "id_reset")]
    clean = [(e.last_id, segment, anchored) for t, (e, segment, anchored) in
             ((t, v) for t, v in out if t == CLEAN)]
    assert clean == [(100_000, 100_000, True), (100_002, 100_000, True), (100_003, 100_000, True),
                     (51, 50, False), (52, 50, False), (55, 50, False)]
    assert [v.error_type for t, v in out if t == ERROR] == ["gap_reset", "corrupt_period"]
    assert in_order(events) == out


def test_id_reset_resolved_by_a_snapshot_of_the_new_epoch():
    events = [snap(SPOT, 100_000, 0), spot(100_001, 100_002, 10),
              spot(50, 51, 30), spot(52, 52, 40), snap(SPOT, 51, 45), spot(52, 53, 50)]
    out = run(SPOT, events)
    assert gaps_of(out) == [(100_002, 50, None, "reset", "hold_for_snapshot", "resynced", 30)]
    assert corrupt_of(out) == []
    assert tags(out) == [(CLEAN, 100_000), (CLEAN, 100_002), (SUPERSEDED, 51), (CLEAN, 51),
                         (CLEAN, 52), (CLEAN, 53)]     # 52-52 arrives after the snapshot: held,
    # then bridges it (52 <= 51+1 <= 52) in canonical order; in arrival order the snapshot comes
    # after it and rewinds the hold, with the same answer
    assert [v for v in out if v[0] != ERROR] == [v for v in in_order(events) if v[0] != ERROR]
    assert [(e.last_id, segment, anchored) for t, (e, segment, anchored) in
            ((t, v) for t, v in out if t == CLEAN)][-3:] == [(51, 51, True), (52, 51, True),
                                                              (53, 51, True)]


def test_a_snapshot_far_below_reveals_a_reset_and_anchors_the_new_epoch():
    events = [snap(SPOT, 100_000, 0), spot(100_001, 100_002, 10), snap(SPOT, 49, 25),
              spot(50, 51, 30)]
    out = run(SPOT, events)
    assert gaps_of(out) == [(100_002, 49, None, "reset", "hold_for_snapshot", "resynced", 25)]
    assert tags(out) == [(CLEAN, 100_000), (CLEAN, 100_002), (CLEAN, 49), (CLEAN, 51)]
    assert requests_of(out) == []                 # nothing to ask for: the snapshot came first
    # arrival order, the delta first: the reset is announced once, the same rows follow
    late = in_order([events[0], events[1], events[3], events[2]])
    assert gaps_of(late) == gaps_of(out) and tags(late) == tags(out)
    assert requests_of(late) == [(50, "id_reset")]
    assert [v.error_type for t, v in late if t == ERROR] == ["gap_reset"]


def test_a_stale_delta_far_below_is_stale_not_a_reset():
    events = [snap(SPOT, 100_000, 0), spot(100_001, 100_002, 10), spot(100_003, 100_004, 20),
              spot(5, 6, 15)]                     # ids far below, but older than the last delta
    machine = StreamSequencer(SPOT, default_policy())
    for event in events[:3]:
        machine.feed(event)
    assert machine.is_next(events[3])             # no reset to reveal: fed at once
    machine.feed(events[3])
    assert [t for t, _ in machine.out] == [CLEAN, CLEAN, CLEAN, SUPERSEDED]   # the snapshot covers it
    # a reset candidate waits in the streaming reorder buffer, like a gap
    assert not machine.is_next(spot(5, 6, 25))


def test_usdm_restart_marker_is_a_reset_whatever_the_clock():
    events = [snap(USDM, 100_000, 100), usdm(99_990, 100_004, 99_980, 110),
              usdm(7, 9, -1, 50)]                  # pu == -1: a restart, though its clock is behind
    out = in_order(events)
    assert gaps_of(out) == [(100_004, 7, None, "reset", "hold_for_snapshot", "corrupt_period", 50)]
    # without the marker the same ids are stale (covered by the snapshot)
    out = in_order(events[:2] + [usdm(7, 9, 6, 50)])
    assert gaps_of(out) == [] and [t for t, _ in out][-1] == SUPERSEDED


def test_a_reset_ends_a_medium_gap_wait():
    events = [snap(SPOT, 100_000, 0), spot(100_200, 100_201, 10), spot(100_202, 100_202, 20),
              spot(40, 41, 30), spot(42, 45, 40)]
    out = run(SPOT, events)
    assert gaps_of(out) == [
        (100_000, 100_200, 199, "medium", "hold_for_snapshot", "corrupt_period", 10),
        (100_202, 40, None, "reset", "hold_for_snapshot", "corrupt_period", 30)]
    assert corrupt_of(out) == [(100_001, 100_199, 0, 10, "id_reset"),
                               (100_203, 39, 20, 30, "recovery_timeout")]
    assert requests_of(out) == [(100_001, "medium_gap"), (40, "id_reset")]
    assert [t for t, _ in out].count(CLEAN) == 5


def test_old_epoch_messages_after_the_reset():
    """Arrival order: messages of the old epoch after the reset may still extend it while the reset
    waits; once it is over they are late (or stale, at or below its last good id)."""
    old = [snap(SPOT, 100_000, 0), spot(100_001, 100_002, 10)]
    reset, follow = spot(50, 51, 30), spot(52, 52, 40)
    straggler = spot(100_003, 100_004, 12)        # continues the old epoch
    out = in_order(old + [reset, straggler, follow])
    assert gaps_of(out) == [(100_004, 50, None, "reset", "hold_for_snapshot", "corrupt_period", 30)]
    assert gaps_of(out) == gaps_of(run(SPOT, old + [reset, straggler, follow]))
    assert tags(out) == tags(run(SPOT, old + [reset, straggler, follow]))
    # one that would leave a gap in the old epoch is late; a copy of an old one a duplicate
    out = in_order(old + [reset, spot(100_010, 100_011, 12), spot(100_001, 100_002, 10), follow])
    assert [t for t, v in out if t in (LATE, DUPLICATE)] == [LATE, DUPLICATE]
    # after the wait ended (resynced), old-epoch messages are late or stale, never a gap
    resynced = old + [reset, snap(SPOT, 51, 35), follow]
    out = in_order(resynced + [spot(100_003, 100_004, 13), spot(100_001, 100_002, 10),
                               snap(SPOT, 100_000, 0), spot(53, 53, 50)])
    assert gaps_of(out) == [(100_002, 50, None, "reset", "hold_for_snapshot", "resynced", 30)]
    assert [t for t, v in out if t in (LATE, DUPLICATE, SUPERSEDED)] == [
        SUPERSEDED, LATE, DUPLICATE, SUPERSEDED]
    assert [v[0].last_id for t, v in out if t == CLEAN][-1] == 53


def test_state_written_before_resets_existed_still_decodes():
    from beam_pipeline.core.sequencer import STATE_VERSION, SequencerState
    before = {"version": STATE_VERSION, "cursor": 100_000, "segment_id": 100_000, "anchored": True,
              "bridging": False, "snapshot_floor": 100_000, "last_time": 5, "last_snapshot_id": None,
              "hold": None, "declared_gaps": [], "announced_from": None, "seen": True}
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(before), type=SequencerState)
    assert (state.cursor, state.last_delta_time, state.prior_epoch_id) == (100_000, None, None)
    machine = StreamSequencer(SPOT, default_policy(), state)
    machine.feed(spot(5, 6, 7))                    # a reset from the stored cursor
    machine.finish()
    assert gaps_of(machine.out)[0][:4] == (100_000, 5, None, "reset")


def _replayed(fn, events, work_dir):
    """The batch sequencer's end-of-input replay of one key, on chunks spilled as SpillRuns does."""
    runs = _Cell()
    for _, ref in SpillRuns(str(work_dir), run_span_ids=10).process(events):
        runs.add(msgspec.msgpack.encode(ref))
    state = _Cell()
    state.read = lambda: state.value          # a value cell: None until written
    return list(fn.end_of_input(key=SPOT, state_cell=state, held_bag=_Cell(), runs_bag=runs))


def test_a_failing_batch_replay_dead_letters_every_event_of_the_key(tmp_path):
    """Nothing of the key is emitted before its replay has succeeded, so when it raises each of
    its events is a processing_error dead letter, exactly once, and the job goes on."""
    events = [snap(SPOT, 5)] + [spot(i, i + 1) for i in range(6, 40, 2)] + [spot(6, 7)]

    class BrokenSink(BatchSequencerDoFn):
        def _clean_part(self, machine, clean):
            raise RuntimeError("a bug in the clean output")

    working = _replayed(BatchSequencerDoFn(default_policy(), str(tmp_path / "ok")), events, tmp_path / "ok")
    tallies = Counter()
    for output in working:
        if output.tag == "tally":
            tallies[output.value[0]] += output.value[1]
    assert tallies["clean_records"] + tallies["duplicates"] == len(events)

    broken = _replayed(BrokenSink(default_policy(), str(tmp_path / "b")), events, tmp_path / "b")
    assert {output.tag for output in broken} == {"dead_letter"}
    letters = [output.value for output in broken]
    assert sorted((d.first_id, d.last_id) for d in letters) == sorted(
        (e.first_id, e.last_id) for e in events)
    assert all(d.reason == "processing_error" and d.stage == "sequence.end_of_input"
               and "a bug in the clean output" in d.message for d in letters)
