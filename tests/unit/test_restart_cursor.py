"""A restarted streaming job resumes each key from the cursor its last stop saved
(core/sequencer.resumed, transforms/cursors.py): a continuing stream reports nothing, a real break
is a gap marked `restart`, and the cursor round-trips through its file."""
from beam_pipeline.core.model import DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT, Event
from beam_pipeline.core.sequencer import CLEAN, CORRUPT, GAP, StreamSequencer, resumed
from beam_pipeline.options import default_policy
from transforms.cursors import save_cursor, take_cursors

SPOT = ("binance", "spot", "ETH/USDT:weird~name")
USDM = ("binance", "usdm", "BTCUSDT")
POLICY = default_policy(recovery_timeout_ms=1000)


def spot(first, last, at=0):
    return Event(*SPOT, DELTA, first, last, None, at, at, b"[]", b"[]", RANGE_PLUS_ONE)


def usdm(first, last, prev, at=0):
    return Event(*USDM, DELTA, first, last, prev, at, at, b"[]", b"[]", PREVIOUS_LINK)


def stopped_after(key, events):
    """The first run: its events, then the end a stop drains the job to; returns the state saved."""
    machine = StreamSequencer(key, POLICY)
    machine.feed_all(events)
    machine.finish()
    return machine.state


def second_run(key, saved, events):
    machine = StreamSequencer(key, POLICY, resumed(saved))
    machine.feed_all(events)
    machine.finish()
    return machine.out


def test_a_stream_that_continues_across_the_restart_reports_nothing_and_keeps_its_segment():
    snapshot = Event(*SPOT, SNAPSHOT, 10, 10, None, 0, 0, b"[]", b"[]", RANGE_PLUS_ONE)
    saved = stopped_after(SPOT, [snapshot, spot(11, 12, 1), spot(13, 14, 2)])
    out = second_run(SPOT, saved, [spot(15, 16, 3), spot(17, 20, 4)])
    assert [t for t, _ in out if t in (GAP, CORRUPT)] == []
    assert [(row[0].last_id, row[1], row[2]) for t, row in out if t == CLEAN] == [
        (16, 10, True), (20, 10, True)]                      # same segment, still anchored


def test_a_real_break_at_the_restart_is_a_gap_marked_restart_and_later_ones_are_not():
    saved = stopped_after(SPOT, [Event(*SPOT, SNAPSHOT, 10, 10, None, 0, 0, b"[]", b"[]",
                                       RANGE_PLUS_ONE), spot(11, 12, 1)])
    out = second_run(SPOT, saved, [spot(16, 17, 3), spot(18, 18, 4), spot(25, 26, 5)])
    gaps = [(g.last_good_id, g.next_first_id, g.gap_class, g.cause) for t, g in out if t == GAP]
    assert gaps == [(12, 16, "small", "restart"), (18, 25, "small", None)]


def test_previous_link_resumes_from_the_saved_cursor():
    saved = stopped_after(USDM, [Event(*USDM, SNAPSHOT, 100, 100, None, 0, 0, b"[]", b"[]",
                                       PREVIOUS_LINK), usdm(99, 105, 98, 1), usdm(106, 110, 105, 2)])
    assert [t for t, _ in second_run(USDM, saved, [usdm(111, 115, 110, 3)]) if t == GAP] == []
    out = second_run(USDM, saved, [usdm(120, 125, 117, 3)])
    assert [(g.last_good_id, g.cause) for t, g in out if t == GAP] == [(110, "restart")]


def test_cursors_round_trip_through_their_files_once(tmp_path):
    saved = stopped_after(SPOT, [Event(*SPOT, SNAPSHOT, 10, 10, None, 0, 0, b"[]", b"[]",
                                       RANGE_PLUS_ONE), spot(11, 12, 1)])
    folder = str(tmp_path / "_state" / "cursors")
    save_cursor(folder, SPOT, saved)
    save_cursor(folder, SPOT, saved)                      # a timer firing again: same file
    assert take_cursors(folder) == {SPOT: saved}
    assert take_cursors(folder) == {}                     # taken: a crash later leaves none
