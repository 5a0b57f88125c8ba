"""Smoke tests that really run Flink: Beam's FlinkRunner on an embedded Flink MiniCluster.

The job server is the jar built by scripts/build_flink_job_server.sh (built on first use, which
takes a few minutes); runners.flink.apply_profile adds --flink_master=[local], LOOPBACK workers
(in this process, so tmp_path is shared with them) and parallelism 2.

Outputs go to files under tmp_path and are read back and compared exactly. (Beam's assert_that
also works on this runner: a failing assert_that fails the job and run() raises RuntimeError
"Pipeline ... failed in state FAILED: ... BeamAssertException: Failed assert ..."; see
test_assert_that_failure_fails_the_job.)

Wall time on a 2-core machine with the jar cached: about 8-16 s per test (job-server JVM and
MiniCluster start take a few seconds of each).
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from runners import flink  # noqa: E402

WINDOW_SECONDS = 10

# (key, value, event time in seconds): keys a/b/c over two 10 s windows, out of order on purpose.
EVENTS = [
    ("a", 1, 1), ("b", 10, 2), ("a", 2, 3), ("c", 100, 4), ("a", 3, 12), ("b", 20, 15),
    ("a", 4, 9), ("b", 30, 19), ("c", 200, 11), ("a", 5, 18), ("b", 40, 5), ("c", 300, 14),
]


def _expected_window_summaries() -> list[str]:
    """What StatefulSummary emits, computed in plain Python."""
    acc: dict[tuple[str, int], list[int]] = {}
    for key, value, ts in EVENTS:
        acc.setdefault((key, ts // WINDOW_SECONDS * WINDOW_SECONDS), []).append(value)
    return sorted(
        f"{key}@{start}:count={len(vs)}:values={sorted(vs)}" for (key, start), vs in acc.items()
    )


class StatefulSummary(beam.DoFn):
    """Per key and window: count (ReadModifyWriteState), values (BagState), emitted by an
    event-time timer set to the end of the window."""

    COUNT = ReadModifyWriteStateSpec("count", VarIntCoder())
    VALUES = BagStateSpec("values", VarIntCoder())
    WINDOW_END = TimerSpec("window_end", TimeDomain.WATERMARK)

    def process(
        self,
        element,
        win=beam.DoFn.WindowParam,
        count=beam.DoFn.StateParam(COUNT),
        values=beam.DoFn.StateParam(VALUES),
        timer=beam.DoFn.TimerParam(WINDOW_END),
    ):
        _, value = element
        count.write((count.read() or 0) + 1)
        values.add(value)
        timer.set(win.max_timestamp())

    @on_timer(WINDOW_END)
    def on_window_end(
        self,
        key=beam.DoFn.KeyParam,
        win=beam.DoFn.WindowParam,
        count=beam.DoFn.StateParam(COUNT),
        values=beam.DoFn.StateParam(VALUES),
    ):
        start = int(win.start)
        yield f"{key}@{start}:count={count.read()}:values={sorted(values.read())}"
        count.clear()
        values.clear()


class WriteEachToDir(beam.DoFn):
    """Writes every element to its own file named by its content hash (idempotent on replay)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def process(self, element: str):
        name = hashlib.sha256(element.encode()).hexdigest()[:32]
        Path(self.out_dir, name + ".txt").write_text(element)


def _options(*extra: str) -> PipelineOptions:
    return PipelineOptions(flink.apply_profile(["--runner=FlinkRunner", *extra]))


def _read_lines(pattern_dir: Path, glob: str) -> list[str]:
    lines = []
    for path in sorted(pattern_dir.glob(glob)):
        lines.extend(line for line in path.read_text().splitlines() if line)
    return sorted(lines)


def _timed(label: str, fn) -> float:
    start = time.monotonic()
    fn()
    took = time.monotonic() - start
    print(f"\n{label}: {took:.1f} s wall")
    return took


@pytest.fixture(scope="module", autouse=True)
def _jar():
    """Build (or reuse) the job-server jar once, outside the timed pipeline runs."""
    return flink.job_server_jar()


def test_batch_groupbykey_and_stateful_timers(tmp_path):
    out = tmp_path / "batch"

    def run():
        with beam.Pipeline(options=_options()) as p:
            summaries = (
                p
                | beam.Create(EVENTS)
                | "Stamp" >> beam.Map(lambda e: window.TimestampedValue((e[0], e[1]), e[2]))
                | beam.WindowInto(window.FixedWindows(WINDOW_SECONDS))
                | beam.ParDo(StatefulSummary())
            )
            _ = summaries | "WriteSummaries" >> beam.io.WriteToText(str(out / "summary"))
            # GroupByKey: per window, the keys that had data (in the global window for the write).
            _ = (
                summaries
                | "ByWindow" >> beam.Map(lambda s: (int(s.split("@")[1].split(":")[0]), s.split("@")[0]))
                | "Global" >> beam.WindowInto(window.GlobalWindows())
                | beam.GroupByKey()
                | beam.MapTuple(lambda start, keys: f"{start}:{','.join(sorted(keys))}")
                | "WriteGroups" >> beam.io.WriteToText(str(out / "groups"))
            )

    _timed("flink batch (GBK + state + event-time timers)", run)
    assert _read_lines(out, "summary*") == _expected_window_summaries()
    assert _read_lines(out, "groups*") == ["0:a,b,c", "10:a,b,c"]


def test_streaming_checkpointed_stateful(tmp_path):
    out = tmp_path / "streaming"
    out.mkdir()

    def run():
        # With checkpointing on, Beam's Flink runner keeps finished sources alive forever
        # (so checkpoints stay possible) unless told to shut them down after some idle time;
        # 2 s leaves room for a couple of checkpoints. RocksDB state backend (shipped in the
        # job-server jar) with file checkpoint storage under tmp_path. The profile adds
        # --finish_bundle_before_checkpointing, without which this test gets no output at all.
        opts = _options(
            "--streaming",
            "--checkpointing_interval=1000",
            "--shutdown_sources_after_idle_ms=2000",
            "--state_backend=rocksdb",
            f"--state_backend_storage_path=file://{tmp_path / 'checkpoints'}",
        )
        with beam.Pipeline(options=opts) as p:
            _ = (
                p
                | beam.Create(EVENTS)
                | "Stamp" >> beam.Map(lambda e: window.TimestampedValue((e[0], e[1]), e[2]))
                | beam.WindowInto(window.FixedWindows(WINDOW_SECONDS))
                | beam.ParDo(StatefulSummary())
                | beam.ParDo(WriteEachToDir(str(out)))
            )

    _timed("flink streaming (checkpointing 1 s, RocksDB, state + event-time timers)", run)
    assert _read_lines(out, "*.txt") == _expected_window_summaries()
    assert list((tmp_path / "checkpoints").iterdir()), "no checkpoint storage was created"


def test_assert_that_failure_fails_the_job():
    """assert_that runs inside the job on portable runners; a mismatch must fail run()."""

    def run():
        with pytest.raises(RuntimeError, match="(?s)failed in state FAILED.*Failed assert"):
            with beam.Pipeline(options=_options()) as p:
                assert_that(p | beam.Create([1, 2, 3]), equal_to([1, 2, 4]))

    _timed("flink batch (failing assert_that)", run)
