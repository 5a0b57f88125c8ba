"""Timers of the streaming sequencer, driven deterministically by TestStream.

TestStream's processing time starts at 0, so the DoFn is given a clock frozen there: a timer set
"now + 2 s" fires once the stream advances processing time past 2 s.
"""
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from beam_pipeline.core.model import DELTA, RANGE_PLUS_ONE, SNAPSHOT, Event, Gap
from beam_pipeline.options import default_policy
from transforms.tables import read_clean_part
from transforms.tags import DEAD_LETTER, TALLY
from transforms.sequence import SequenceFeeds
from transforms.sequence_live import LiveSequencerDoFn
from transforms.tags import CLEAN as CLEAN_ROWS
from transforms.tags import CORRUPT_PERIODS, ERRORS, GAPS, RECOVERY_REQUESTS

KEY = ("binance", "spot", "BTCUSDT")
T0 = 1_700_000_000_000


def delta(first, last, at):
    return Event(*KEY, DELTA, first, last, None, T0 + at, T0 + at + 5, b'[["1.0","2"]]', b"[]", RANGE_PLUS_ONE)


def snapshot(last_id, at):
    return Event(*KEY, SNAPSHOT, last_id, last_id, None, None, T0 + at, b'[["1.0","2"]]', b"[]",
                 RANGE_PLUS_ONE)


def stamped(*events):
    return [TimestampedValue([event], event.time / 1000) for event in events]


def run(stream, policy=default_policy(recovery_timeout_ms=5000), check=None):
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = (p | stream | SequenceFeeds(policy, streaming=True, reorder_timeout_s=2,
                                          stall_timeout_s=30, clock=lambda: Timestamp(0)))
        check(out)


def gap(last_good, next_first, size, cls, action, resolution, at):
    return Gap(*KEY, last_good_id=last_good, next_first_id=next_first, gap_size=size,
               gap_class=cls, action=action, resolution=resolution, event_time=T0 + at)


def start(watermark=T0 / 1000):
    return TestStream().advance_watermark_to(watermark)


def flatten_clean(label, batch=False):
    """(first_id, last_id) of the clean rows: Arrow tables (streaming) or CleanParts (batch)."""
    as_table = read_clean_part if batch else (lambda table: table)
    return lambda out: out.clean | label >> beam.FlatMap(
        lambda rows: [(r["first_id"], r["last_id"]) for r in as_table(rows).to_pylist()])


def test_reorder_filled_before_timeout_is_no_gap():
    stream = (start().add_elements(stamped(snapshot(100, 0), delta(101, 102, 100)))
              .add_elements(stamped(delta(105, 106, 300)))          # early: 103-104 still in transit
              .add_elements(stamped(delta(103, 104, 200)))          # arrives within the timeout
              .advance_processing_time(3).advance_watermark_to_infinity())

    def check(out):
        assert_that(out.gaps, equal_to([]), label="no gaps")
        assert_that(flatten_clean("ids")(out), equal_to(
            [(100, 100), (101, 102), (103, 104), (105, 106)]), label="all clean")
    run(stream, check=check)


def test_reorder_timeout_declares_the_gap():
    stream = (start().add_elements(stamped(snapshot(100, 0), delta(101, 102, 100)))
              .add_elements(stamped(delta(106, 107, 300)))
              .advance_processing_time(3)                            # 103-105 never come
              .advance_watermark_to_infinity())

    def check(out):
        assert_that(out.gaps, equal_to([gap(102, 106, 3, "small", "continue_with_warning",
                                            "continued", 300)]), label="small gap")
        assert_that(flatten_clean("ids")(out), equal_to([(100, 100), (101, 102), (106, 107)]),
                    label="clean")
    run(stream, check=check)


def test_medium_gap_recovered_by_snapshot():
    stream = (start().add_elements(stamped(snapshot(100, 0), delta(101, 102, 100)))
              .add_elements(stamped(delta(200, 201, 300)))            # 97 ids missing: medium
              .advance_processing_time(3)
              .add_elements(stamped(delta(202, 203, 400), snapshot(202, 1000)))
              .add_elements(stamped(delta(203, 205, 1100)))
              .advance_processing_time(3).advance_watermark_to_infinity())

    def check(out):
        assert_that(out.gaps, equal_to([gap(102, 200, 97, "medium", "hold_for_snapshot",
                                            "resynced", 300)]), label="resynced")
        assert_that(out.corrupt_periods, equal_to([]), label="no corrupt period")
        # 202-203 reaches past the snapshot (u > lastUpdateId): it is the bridging delta, kept
        assert_that(flatten_clean("ids")(out), equal_to(
            [(100, 100), (101, 102), (202, 202), (202, 203), (203, 205)]),
            label="clean after resync")
        assert_that(out.recovery_requests | beam.Map(lambda r: r.from_id), equal_to([103]),
                    label="recovery request")
    run(stream, check=check)


def test_recovery_timeout_marks_a_corrupt_period():
    stream = (start().add_elements(stamped(snapshot(100, 0), delta(101, 102, 100)))
              .add_elements(stamped(delta(200, 201, 300)))
              .advance_processing_time(3)
              .advance_watermark_to((T0 + 300 + 5000 + 10) / 1000)       # past the 5 s deadline
              .advance_processing_time(1)
              .advance_watermark_to_infinity())

    def check(out):
        assert_that(out.gaps, equal_to([gap(102, 200, 97, "medium", "hold_for_snapshot",
                                            "corrupt_period", 300)]), label="timed out")
        assert_that(out.corrupt_periods | beam.Map(lambda c: (c.start_id, c.end_id, c.reason)),
                    equal_to([(103, 199, "recovery_timeout")]), label="corrupt period")
        assert_that(flatten_clean("ids")(out), equal_to([(100, 100), (101, 102), (200, 201)]),
                    label="held delta released")
    run(stream, check=check)


def test_buffer_bound_declares_the_gap_early():
    waiting = [delta(i, i, 200 + i) for i in range(110, 115)]   # 101-109 missing, 5 wait
    stream = (start().add_elements(stamped(snapshot(100, 0)))
              .add_elements(stamped(*waiting))
              .advance_watermark_to_infinity())

    def check(out):
        assert_that(out.gaps, equal_to([gap(100, 110, 9, "small", "continue_with_warning",
                                            "continued", 310)]), label="declared early")
        assert_that(out.errors | beam.Map(lambda e: e.error_type)
                    | beam.Filter(lambda t: t == "reorder_overflow"),
                    equal_to(["reorder_overflow"]), label="counted with its own reason")
    run(stream, policy=default_policy(recovery_timeout_ms=5000, max_buffered_events=3), check=check)


def test_stall_and_resume():
    stream = (start().add_elements(stamped(snapshot(100, 0), delta(101, 102, 100)))
              .advance_processing_time(31)                               # silent past 30 s
              .add_elements(stamped(delta(103, 104, 40_000)))
              .advance_watermark_to_infinity())

    def check(out):
        assert_that(out.errors | beam.Map(lambda e: e.error_type)
                    | beam.Filter(lambda t: t.startswith("stall")),
                    equal_to(["stall", "stall_resolved"]), label="stall then resolved")
    run(stream, check=check)


def test_poison_event_goes_to_dead_letters_and_the_key_keeps_going(tmp_path):
    poison = Event(*KEY, DELTA, 101, 102, None, T0 + 50, T0 + 50, b"[]", b"[]", "checksum_only", "f:9")
    stream = (start().add_elements(stamped(snapshot(100, 0), poison, delta(101, 102, 100)))
              .add_elements(stamped(delta(103, 104, 200)))
              .advance_watermark_to_infinity())

    def check(out):
        assert_that(out.dead_letter | beam.Map(lambda d: (d.reason, d.stage, d.source,
                                                          "checksum_only" in d.message)),
                    equal_to([("processing_error", "sequence", "f:9", True)]), label="poison")
        assert_that(flatten_clean("ids")(out), equal_to([(100, 100), (101, 102), (103, 104)]),
                    label="others clean")
    run(stream, check=check)


class ReorderBufferUnreadable(LiveSequencerDoFn):
    """The streaming sequencer with a timer that always raises (a bug, or state it cannot read)."""

    def _release(self, machine, stream, waiting_bag, declare_upto, timer=None):
        raise RuntimeError("injected: the reorder buffer cannot be read")


def test_an_exception_in_a_timer_is_a_dead_letter_not_a_failed_bundle():
    stream = (start().add_elements(stamped(snapshot(100, 0), delta(101, 102, 100)))
              .add_elements(stamped(delta(105, 106, 300)))          # waits for 103-104
              .advance_processing_time(3)                           # reorder timer fires: raises
              .advance_watermark_to_infinity())
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = (p | stream
               | beam.FlatMap(lambda batch: [(event.key, [event]) for event in batch])
               | beam.ParDo(ReorderBufferUnreadable(default_policy(), 2, 30, clock=lambda: Timestamp(0)))
               .with_outputs(CLEAN_ROWS, GAPS, CORRUPT_PERIODS, RECOVERY_REQUESTS, ERRORS,
                             DEAD_LETTER, TALLY))
        # the event the failed timer was to process is a dead letter with the trace: still
        # accounted for exactly once
        assert_that(out[DEAD_LETTER] | beam.Map(lambda d: (
            d.reason, d.stage, d.symbol, d.first_id, d.last_id,
            "Traceback" in d.message and "injected" in d.message)),
            equal_to([("processing_error", "sequence.reorder", "binance:spot:BTCUSDT", 105, 106,
                       True)]), label="timer failure")
        assert_that(out[CLEAN_ROWS] | beam.FlatMap(lambda rows: [
            (r["first_id"], r["last_id"]) for r in rows.to_pylist()]),
            equal_to([(100, 100), (101, 102)]), label="what came before is kept")


def test_batch_path_sets_poison_aside_too(tmp_path):
    poison = Event(*KEY, DELTA, 101, 102, None, T0 + 50, T0 + 50, b"[]", b"[]", "checksum_only", "f:9")
    with TestPipeline() as p:
        out = (p | beam.Create([[snapshot(100, 0), delta(101, 102, 100)], [poison, delta(103, 104, 200)]])
               | SequenceFeeds(default_policy(), streaming=False, work_dir=str(tmp_path), run_span_ids=50))
        assert_that(out.dead_letter | beam.Map(lambda d: (d.reason, d.stage, d.source)),
                    equal_to([("processing_error", "sequence", "f:9")]), label="poison")
        assert_that(out.clean | beam.FlatMap(
            lambda part: [(r["first_id"], r["last_id"]) for r in read_clean_part(part).to_pylist()]),
                    equal_to([(100, 100), (101, 102), (103, 104)]), label="others clean")


def test_an_id_reset_in_arrival_order_matches_the_batch_answer(tmp_path):
    """An engine restart: ids start again far lower. The first message of the new epoch waits in
    the reorder buffer like a gap; old-epoch messages reordered behind it (and among themselves)
    are sequenced first; then the reset waits for a snapshot of the new epoch. Batch gives the same
    rows."""
    old = [snapshot(100_000, 0), delta(100_001, 100_002, 100)]
    reset, straggler = delta(50, 51, 300), delta(100_003, 100_004, 200)
    straggler2 = delta(100_005, 100_006, 250)
    new = [delta(52, 52, 400), snapshot(52, 1000), delta(53, 54, 1100)]
    stream = (start().add_elements(stamped(*old))
              .add_elements(stamped(reset))
              .add_elements(stamped(straggler2))       # reordered: sent before the reset
              .add_elements(stamped(straggler))
              .add_elements(stamped(new[0]))
              .advance_processing_time(3)              # the reorder wait ends
              .add_elements(stamped(*new[1:]))
              .advance_processing_time(3).advance_watermark_to_infinity())
    want_gaps = [gap(100_006, 50, None, "reset", "hold_for_snapshot", "resynced", 300)]
    want_clean = [(100_000, 100_000), (100_001, 100_002), (100_003, 100_004), (100_005, 100_006),
                  (52, 52), (53, 54)]

    def check(out):
        assert_that(out.gaps, equal_to(want_gaps), label="reset")
        assert_that(out.corrupt_periods, equal_to([]), label="no corrupt period")
        assert_that(flatten_clean("ids")(out), equal_to(want_clean), label="clean")
        assert_that(out.recovery_requests | beam.Map(lambda r: (r.from_id, r.reason)),
                    equal_to([(50, "id_reset")]), label="recovery request")
    run(stream, check=check)

    with TestPipeline() as p:
        out = (p | beam.Create([[reset, *new], [straggler2, straggler, *old]])
               | SequenceFeeds(default_policy(recovery_timeout_ms=5000), streaming=False,
                               work_dir=str(tmp_path), run_span_ids=1_000))
        assert_that(out.gaps, equal_to(want_gaps), label="batch reset")
        assert_that(flatten_clean("batch ids", batch=True)(out), equal_to(want_clean), label="batch clean")


def test_status_is_one_row_per_changed_key_per_period_and_a_last_one_at_the_end():
    """status_seconds after a key changes, its status is taken once (however many messages
    came); a key that did not change writes none; the end of the input writes every key's last
    (its timer holds the watermark, as the job's own runner profile makes it: runners/direct.py)."""
    from runners import direct

    direct.hold_watermark_for_end_of_window_timers()
    other = ("binance", "usdm", "SOLUSDT")

    def other_delta(first, last, at):
        return Event(*other, DELTA, first, last, None, T0 + at, T0 + at + 5, b'[["1.0","2"]]',
                     b"[]", RANGE_PLUS_ONE)

    other_snapshot = Event(*other, SNAPSHOT, 500, 500, None, None, T0, b'[["1.0","2"]]', b"[]",
                           RANGE_PLUS_ONE)
    stream = (start().add_elements(stamped(snapshot(100, 0), delta(101, 102, 100),
                                           delta(103, 103, 200), other_snapshot,
                                           other_delta(501, 502, 150)))
              .advance_processing_time(11)            # the first period: both keys changed
              .add_elements(stamped(delta(104, 107, 300), delta(108, 108, 400)))
              .advance_processing_time(11)            # the second: only KEY changed
              .advance_watermark_to_infinity())       # the end: every key's last

    def check(out):
        assert_that(out.status | beam.Map(lambda s: (s.symbol, s.last_id, s.held_events,
                                                     s.anchored)),
                    equal_to([("BTCUSDT", 103, 0, True), ("SOLUSDT", 502, 0, True),
                              ("BTCUSDT", 108, 0, True),
                              ("BTCUSDT", 108, 0, True), ("SOLUSDT", 502, 0, True)]))
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        check(p | stream | SequenceFeeds(default_policy(), streaming=True, reorder_timeout_s=2,
                                         stall_timeout_s=30, clock=lambda: Timestamp(0),
                                         status_seconds=10))
