"""--book_checks in streaming: the key's book lives in this process's cache (transforms/
book_cache.py) under a version its state carries. Streaming gives the batch answer, and a state
restored to an earlier version never meets a book of another history."""
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from beam_pipeline.core.model import DELTA, RANGE_PLUS_ONE, SNAPSHOT, Event, encode_levels
from beam_pipeline.options import default_policy
from transforms import book_cache
from transforms.sequence import SequenceFeeds

KEY = ("binance", "spot", "BTCUSDT")
T0 = 1_700_000_000_000


def delta(first, last, at, bids=(), asks=()):
    return Event(*KEY, DELTA, first, last, None, T0 + at, T0 + at + 5, encode_levels(list(bids)),
                 encode_levels(list(asks)), RANGE_PLUS_ONE, f"f:{first}")


def snapshot(last_id, at, bids=(("99.0", "1"),), asks=(("101.0", "1"),)):
    return Event(*KEY, SNAPSHOT, last_id, last_id, None, None, T0 + at, encode_levels(list(bids)),
                 encode_levels(list(asks)), RANGE_PLUS_ONE, f"s:{last_id}")


# a crossed book at 105 (a bid above the best ask), resynced by the snapshot at 107; another at 110
# (an ask below the best bid), resynced by the snapshot at 112. (A period still open at the end of
# the data ends in the end-of-input timer, whose output TestStream's assert_that cannot see.)
FEED = ([snapshot(100, 0)] + [delta(i, i, 10 * (i - 100), bids=[("98.5", str(i))])
                              for i in range(101, 105)]
        + [delta(105, 105, 50, bids=[("102.0", "1")]), delta(106, 107, 60, asks=[("101.5", "2")]),
           snapshot(107, 65), delta(108, 108, 70), delta(109, 109, 80, asks=[("100.5", "1")]),
           delta(110, 110, 90, asks=[("98.0", "1")]), delta(111, 111, 100),
           delta(112, 112, 110), snapshot(112, 120), delta(113, 113, 130)])
WANT = [("crossed_book", 105, 107, T0 + 50, T0 + 65), ("crossed_book", 110, 112, T0 + 90, T0 + 120)]


def periods(out, label):
    return out.corrupt_periods | label >> beam.Map(
        lambda p: (p.reason, p.start_id, p.end_id, p.start_time, p.end_time))


def test_streaming_book_checks_equal_batch(tmp_path):
    book_cache.clear()
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = TestStream().advance_watermark_to(T0 / 1000)
    for event in FEED:
        stream = stream.add_elements([TimestampedValue([event], event.time / 1000)])
    stream = stream.advance_processing_time(3).advance_watermark_to_infinity()
    with TestPipeline(options=options) as p:
        out = p | stream | SequenceFeeds(default_policy(), streaming=True, reorder_timeout_s=2,
                                         stall_timeout_s=30, clock=lambda: Timestamp(0),
                                         book_checks=True)
        assert_that(periods(out, "streaming"), equal_to(WANT), label="streaming periods")
    with TestPipeline() as p:
        out = (p | beam.Create([FEED]) | SequenceFeeds(
            default_policy(), streaming=False, work_dir=str(tmp_path), run_span_ids=1000,
            book_checks=True))
        assert_that(periods(out, "batch"), equal_to(WANT), label="batch periods")


def _observe(watch, events, segment=100):
    for event in events:
        watch.observe((event, segment, True))


def test_a_restored_state_never_meets_a_book_of_another_history():
    book_cache.clear()
    watch, v1 = book_cache.checkout(KEY, None)
    _observe(watch, FEED[:3])                      # snapshot 100, deltas 101, 102
    book_cache.checkin(KEY, v1, watch)
    # the next element: its state has v1, so it gets this very book
    same, v2 = book_cache.checkout(KEY, v1)
    assert same is watch and v2[0] == v1[0] and v2[1] == v1[1] + 1
    _observe(same, FEED[3:5])
    book_cache.checkin(KEY, v2, same)
    # the runner restores the checkpoint taken at v1: the cached book (at v2) is of another history
    restored, v3 = book_cache.checkout(KEY, v1)
    assert restored is not watch and v3[0] != v1[0]
    assert not restored.book.anchored and len(restored.book.book) == 0
    _observe(restored, FEED[3:5])                  # replayed deltas: no book to check them against
    assert restored.counts.unchecked == 2 and restored.counts.checked == 0
    _observe(restored, [snapshot(104, 45)] + FEED[5:6], segment=104)   # a snapshot anchors again
    assert restored.counts.checked == 2 and restored.book.open is not None   # 105 crosses it
    # a lost cache (a restart, the key on another worker) is the same: no book until a snapshot
    book_cache.clear()
    fresh, _ = book_cache.checkout(KEY, v3)
    assert fresh is not restored and not fresh.book.anchored
