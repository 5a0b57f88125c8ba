"""Fault recovery on Flink.

1. test_fault_mid_run_restores_from_checkpoint: our graph (beam_pipeline.pipeline.build_pipeline)
   in streaming on the embedded MiniCluster (parallelism 2, RocksDB checkpoints on disk every
   CHECKPOINT_MS, a restart strategy) reads a watched folder into which the test drops the feed
   one file at a time. A fault fires once, mid-run; Flink restarts the job and restores it from
   the last checkpoint (asserted from the job's REST API and Flink's log). Then:
     - raw, the sinks wrote rows twice: everything written between that checkpoint and the fault
       is written again after the restore (the file sinks are at-least-once);
     - read once per id (beam_pipeline.readback, the documented way to read the outputs), clean
       rows, gaps, corrupt periods, dead letters and recovery requests equal, exactly, a run of
       the same files without the fault (DirectRunner batch, the reference the other Flink tests
       compare with), and summary.json equals it as written.
2. test_savepoint_path_is_ignored_on_the_embedded_minicluster: the trap --savepoint_path falls
   into with the profile's default --flink_master=[local].
3. test_damaged_savepoint_fails_the_job_clearly and
4. test_state_of_another_version_restarts_each_key_with_state_reset, on the standalone cluster:
   what restoring from a corrupted savepoint and from an incompatible one (sequencer state of
   another schema version) does.

The fault is FailOnce, a pass-through DoFn on the sequencer's clean output that raises once (a
marker file records that it fired, so the restarted job passes). It is test-only: this module
wraps SequenceFeeds with it; no production code knows about it. It fires on the second half of
the feed, after a checkpoint that covers the first half, once a clean file has been written after
that checkpoint (so there is output a restored job writes again).

Why a watched folder (--watch_seconds) and not a replay of files present at start: in a replay
the first checkpoint completed only after every record had been sequenced (docs/flink.md), so a
fault would find no checkpoint to restore from.

The feed reaches the job one symbol-file at a time (chunk_feed): the streaming sequencer expects
each symbol's records in order. Event and receive times are a day ahead of the wall clock: a
followed file's records then count as published when they are read (a receive time after the read
is another clock's) + --quiet_seconds, on a watermark of the last listing (transforms/follow.py),
so each file's waits end on the watermark seconds after it was read, once the whole file has been
sequenced: for this feed as in batch (the test compares; a medium gap whose snapshot were in the
next file, dropped later, would time out here and resync in batch).

Teardown, also when a test fails: every job is cancelled through Flink's REST API, then through
Beam (which stops its LOOPBACK workers), then its job-server JVM is stopped (Beam would keep the
JVM, and the embedded MiniCluster in it, until the Python process exits). Cluster jobs are submitted only when the cluster has no job
running (tests/test_flink_cluster.py: wait_until_idle).
"""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import apache_beam as beam
import msgspec
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.flink_runner import FlinkRunner

import beam_pipeline.pipeline as pipeline_module
import transforms.sequence_state as sequence_module
from beam_pipeline import readback
from beam_pipeline.cli import main as cli_main
from beam_pipeline.core.sequencer import SequencerState
from tests.tooling.synthetic import totals, write_lines
from runners import flink
from tests.conftest import Outputs
from tests.integration.test_flink_cluster import cluster, wait_until_idle  # noqa: F401  (cluster: fixture)
from tests.integration.test_flink_pipeline import synthetic_feed
from transforms.sequence import SequenceFeeds
from transforms.sequence_state import StreamState

EVENTS, SPACING = 2000, 120   # every fault class on 2,000 events: faults 12 s apart per symbol ...
RECOVERY_TIMEOUT = "5"        # ... so a medium gap waits 5 s of event time
CHUNKS = 8                    # the feed arrives as this many files (2 parts x 4 symbols) ...
CHUNK_INTERVAL_S = 2.0        # ... one every 2 s; each is sequenced well within that
CHECKPOINT_MS = 5000          # files are written every second: after each checkpoint there are
                              # seconds of output that a restore writes again
DAY_MS = 86_400_000
FLINK_LOGGER = "FlinkJarJobServer"   # Beam logs the job server's (and MiniCluster's) output here
SYMBOLS = [("spot", "BTCUSDT"), ("spot", "ETHUSDT"), ("usdm", "BTCUSDT"), ("usdm", "SOLUSDT")]
FOLDERS = ("clean", "gaps", "corrupt_periods", "dead_letter", "recovery_requests")

# Stopping a job stops its LOOPBACK workers and job-server JVM while their gRPC streams are open;
# the worker threads then end with a connection error, which pytest would report as a warning.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


# ---- the fault ----------------------------------------------------------------------------------

class InjectedFault(RuntimeError):
    pass


def latest_checkpoint(checkpoints: str):
    """(number, completion time) of the newest completed checkpoint on disk, or None."""
    done = []
    for path in glob.glob(os.path.join(checkpoints, "*", "chk-*", "_metadata")):
        try:
            done.append((int(path.split("chk-")[-1].split(os.sep)[0]), os.path.getmtime(path)))
        except (OSError, ValueError):     # Flink deletes older checkpoints as it goes
            continue
    return max(done) if done else None


class FailOnce(beam.DoFn):
    """Pass-through that raises once: when at least `min_files` inputs are there, a checkpoint has
    completed and a clean file was written after it. Once armed it slows each element by `pace_s`
    so that a file is flushed while elements still pass. `marker` records the firing."""

    def __init__(self, marker: str, checkpoints: str, clean_dir: str, input_glob: str,
                 min_files: int, pace_s: float = 0.02):
        self.marker, self.checkpoints, self.clean_dir = marker, checkpoints, clean_dir
        self.input_glob, self.min_files, self.pace_s = input_glob, min_files, pace_s

    def process(self, rows):
        if not os.path.exists(self.marker) and len(glob.glob(self.input_glob)) >= self.min_files:
            checkpoint = latest_checkpoint(self.checkpoints)
            if checkpoint:
                time.sleep(self.pace_s)
                seen = self._written_after(*checkpoint)
                if seen:
                    try:
                        with open(self.marker, "x") as handle:   # one worker fires, once
                            json.dump(seen, handle)
                    except FileExistsError:
                        pass
                    else:
                        raise InjectedFault(f"injected fault after checkpoint {seen['checkpoint']}")
        yield rows

    def _written_after(self, checkpoint: int, completed: float):
        rows = []
        for path in glob.glob(os.path.join(self.clean_dir, "**", "part-*.parquet"), recursive=True):
            try:
                if os.path.getmtime(path) > completed:
                    rows.append(pq.read_metadata(path).num_rows)
            except (OSError, ValueError):
                continue
        if not rows:
            return None
        return {"checkpoint": checkpoint, "checkpoint_completed_at": completed,
                "clean_files_after": len(rows), "clean_rows_after": sum(rows),
                "fired_at": time.time()}


def sequence_with_fault(fault: FailOnce):
    """SequenceFeeds with `fault` on its clean output; stands in for it in build_pipeline."""

    class Outputs(SimpleNamespace):
        def __getitem__(self, tag):          # as Beam's DoOutputsTuple: out.status or out["status"]
            return getattr(self, tag)

    class SequenceThenFault(SequenceFeeds):
        def expand(self, events):
            out = super().expand(events)
            return Outputs(
                clean=out.clean | "FailOnce" >> beam.ParDo(fault), gaps=out.gaps,
                corrupt_periods=out.corrupt_periods, recovery_requests=out.recovery_requests,
                errors=out.errors, dead_letter=out.dead_letter, tally=out.tally,
                status=out["status"], books=out["books"])

    return SequenceThenFault


# ---- Flink's log, Flink's REST API, jobs that stop ------------------------------------------------

class FlinkLog(logging.Handler):
    """Collects the job servers' output lines (Flink's own log)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def matching(self, pattern: str, since: int = 0) -> list:
        return [m for m in (re.search(pattern, line) for line in self.lines[since:]) if m]


@pytest.fixture(scope="module", autouse=True)
def flink_log():
    logger = logging.getLogger(FLINK_LOGGER)
    handler, level = FlinkLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="module", autouse=True)
def _jar():
    return flink.job_server_jar()


def rest(base: str, path: str, body: dict | None = None, method: str | None = None):
    request = urllib.request.Request(
        base + path, method=method or ("POST" if body is not None else "GET"),
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text.strip() else {}


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.5):
    """Polls `condition` until it returns something true. An HTTP or I/O error counts as not yet
    (Flink's REST API answers 503 while a job is being set up; files appear while we read)."""
    deadline = time.monotonic() + timeout_s
    error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (urllib.error.URLError, OSError, ValueError) as caught:
            value, error = None, caught
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}"
                         + (f" (last error: {error!r})" if error else ""))


ACTIVE = ("CREATED", "INITIALIZING", "RUNNING", "RESTARTING", "CANCELLING", "FAILING")


class _FlinkRunner(FlinkRunner):
    """FlinkRunner that keeps its job server, so that the test can stop it."""

    job_server = None

    def default_job_server(self, options):
        self.job_server = super().default_job_server(options)
        return self.job_server


class Job:
    """build_pipeline(options) submitted to Flink; `stop()` leaves nothing running."""

    def __init__(self, options: PipelineOptions, log: FlinkLog, cluster: str | None = None,
                 name: str | None = None):
        self.log, self.since, self.cluster, self.name = log, len(log.lines), cluster, name
        self.runner = _FlinkRunner()
        self.result = None
        pipeline = beam.Pipeline(runner=self.runner, options=options)
        pipeline_module.build_pipeline(pipeline, options)
        try:
            self.result = pipeline.run()
        except BaseException:
            self.stop()
            raise

    def rest_base(self) -> str | None:
        if self.cluster:
            return f"http://{self.cluster}"
        ports = self.log.matching(r"Rest endpoint listening at localhost:(\d+)", self.since)
        return f"http://127.0.0.1:{ports[-1].group(1)}" if ports else None

    def flink_jobs(self, states=ACTIVE) -> list:
        base = self.rest_base()
        if base is None:
            return []
        return [j["jid"] for j in rest(base, "/jobs/overview")["jobs"]
                if j["state"] in states and (self.name is None or j["name"] == self.name)]

    def _active(self) -> list:
        """Active jobs; none once the REST endpoint is gone (the embedded MiniCluster shuts down
        with its job)."""
        try:
            return self.flink_jobs()
        except (urllib.error.URLError, OSError):
            return []

    def job_id(self) -> str:
        return wait_for(lambda: (self.flink_jobs(("RUNNING",)) or [None])[0], 120,
                        "the Flink job to run")

    def checkpoints(self, job_id: str) -> dict:
        return rest(self.rest_base(), f"/jobs/{job_id}/checkpoints")

    def stop(self):
        with contextlib.suppress(Exception):
            for job_id in self.flink_jobs():
                rest(self.rest_base(), f"/jobs/{job_id}?mode=cancel", method="PATCH")
            wait_for(lambda: not self._active(), 60, "the Flink job to stop", 0.5)
        if self.result is not None:
            with contextlib.suppress(Exception):
                self.result.cancel()          # also stops the LOOPBACK worker pool
        if self.runner.job_server is not None:
            with contextlib.suppress(Exception):
                self.runner.job_server.stop()  # the job-server JVM (and its MiniCluster)


def watched_options(input_glob, out, checkpoints, *extra) -> PipelineOptions:
    argv = flink.apply_profile([
        "--runner=FlinkRunner", "--streaming", f"--input={input_glob}", "--watch_seconds=1",
        f"--output={out}", "--output_flush_seconds=1", f"--recovery_timeout={RECOVERY_TIMEOUT}",
        f"--checkpointing_interval={CHECKPOINT_MS}", "--state_backend=rocksdb",
        f"--state_backend_storage_path=file://{checkpoints}",
        "--number_of_execution_retries=2", "--execution_retry_delay=1000", *extra])
    return PipelineOptions(argv, save_main_session=False)


# ---- the feed -------------------------------------------------------------------------------------

_STREAM = re.compile(rb'"market":"(\w+)","symbol":"(\w+)"')


def chunk_feed(lines, parts: int = 2) -> list:
    """The feed as files: per part of it (`parts` equal slices of the lines), one file per (market,
    symbol), each in feed order. A line without a readable stream goes with the first."""
    size = -(-len(lines) // parts)
    streams, slices = [], []
    for start in range(0, len(lines), size):
        part = {}
        for line in lines[start:start + size]:
            match = _STREAM.search(line)
            stream = match.groups() if match else None
            if stream is not None and stream not in streams:
                streams.append(stream)
            part.setdefault(stream, []).append(line)
        slices.append(part)
    chunks = []
    for part in slices:
        unknown = part.pop(None, [])
        for index, stream in enumerate(streams):
            chunks.append((unknown if index == 0 else []) + part.get(stream, []))
    return chunks


@pytest.fixture(scope="module")
def feed():
    lines, expected = synthetic_feed(EVENTS, spacing=SPACING,
                                     start_ms=int(time.time() * 1000) + DAY_MS)
    chunks = chunk_feed(lines)
    assert len(chunks) == CHUNKS and sum(map(len, chunks)) == len(lines)
    return chunks, dict(expected.summary(), balanced=True)


def chunk_name(index: int) -> str:
    return f"chunk-{index:03d}.jsonl" + (".gz" if index % 2 else "")


def drop(folder, index: int, chunk, staging) -> None:
    """Writes one file aside, then renames it into the watched folder."""
    write_lines(str(staging / chunk_name(index)), chunk)
    os.rename(staging / chunk_name(index), folder / chunk_name(index))


def _summary(out) -> dict | None:
    """summary.json without its per-file parts (the chunks' file names differ between runs)."""
    try:
        return totals(json.loads((out / "summary.json").read_text()))
    except (OSError, ValueError):
        return None


def _sequenced(out, records: int) -> bool:
    """summary.json accounts for `records` input records, and balances: nothing is held."""
    summary = _summary(out)
    return bool(summary) and summary["input_records"] == records and summary["balanced"]


def _drained(out, expected_summary) -> bool:
    """Every record accounted for, and every row the summary counts is on disk (once per id)."""
    summary = _summary(out)
    if summary != expected_summary:
        return False
    return (readback.read(str(out), "clean").num_rows == summary["clean_records"]
            and readback.read(str(out), "gaps").num_rows == sum(summary["gaps"].values())
            and readback.read(str(out), "corrupt_periods").num_rows == summary["corrupt_periods"])


def _quiet(out, seconds: float) -> bool:
    """No output file written for `seconds` (a pending firing would land before that)."""
    newest = max((os.path.getmtime(p)
                  for p in glob.glob(os.path.join(out, "*", "**", "part-*"), recursive=True)),
                 default=0)
    return time.time() - newest > seconds


def rows_of(output_dir, name: str, dedupe: bool) -> list:
    """One folder's rows, comparable across runs: sorted, without the time a dead letter was made."""
    table = (readback.read if dedupe else readback.read_raw)(str(output_dir), name)
    rows = [{k: v for k, v in row.items() if k != "ingest_time"} for row in table.to_pylist()]
    return sorted(rows, key=lambda row: repr(sorted(row.items())))


# ---- 1. a fault mid-run ---------------------------------------------------------------------------

class ChunkWriter(threading.Thread):
    """Drops the feed into the watched folder, one file every CHUNK_INTERVAL_S. Before the second
    half it waits for `ready()`: the first half sequenced and covered by a checkpoint, so that no
    symbol is ever read from two files at once, even after a restore."""

    def __init__(self, chunks, folder, staging, ready):
        super().__init__(daemon=True)
        self.chunks, self.folder, self.staging, self.ready = chunks, folder, staging, ready
        self.error = None
        self.stopped = threading.Event()

    def run(self):
        try:
            for index, chunk in enumerate(self.chunks):
                if index == len(self.chunks) // 2:
                    wait_for(lambda: self.ready() or self.stopped.is_set(), 180,
                             "the first half of the feed to be sequenced and checkpointed")
                if self.stopped.is_set():
                    return
                drop(self.folder, index, chunk, self.staging)
                time.sleep(CHUNK_INTERVAL_S)
        except Exception as error:  # reported by the test
            self.error = error


@pytest.fixture(scope="module")
def fault_run(feed, tmp_path_factory, flink_log):
    """The watched job with FailOnce behind the sequencer, run until its outputs hold the whole
    feed and are quiet. Returns what the test asserts on."""
    chunks, expected_summary = feed
    folder = tmp_path_factory.mktemp("fault")
    inputs, staging, out = folder / "in", folder / "staging", folder / "out"
    checkpoints, marker = folder / "checkpoints", folder / "fault.json"
    for path in (inputs, staging, out, checkpoints):
        path.mkdir()
    input_glob = str(inputs / "chunk-*")
    first_half = sum(len(chunk) for chunk in chunks[:CHUNKS // 2])
    sequenced_at = []

    def ready():
        """The first half sequenced and quiet, and a checkpoint completed after that."""
        if not sequenced_at:
            if _sequenced(out, first_half) and _quiet(str(out), 3):
                sequenced_at.append(time.time())
            return False
        done = latest_checkpoint(str(checkpoints))
        return bool(done) and done[1] > sequenced_at[0]

    start = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline_module, "SequenceFeeds", sequence_with_fault(FailOnce(
            str(marker), str(checkpoints), str(out / "clean"), input_glob, CHUNKS // 2 + 1)))
        job = Job(watched_options(input_glob, out, checkpoints), flink_log)
        writer = ChunkWriter(chunks, inputs, staging, ready)
        try:
            job_id = job.job_id()
            writer.start()
            writer.join(timeout=300)
            assert writer.error is None, f"the chunk writer failed: {writer.error}"
            wait_for(lambda: _drained(out, expected_summary), 180,
                     "the outputs to hold the whole feed")
            wait_for(lambda: _quiet(str(out), 3), 60, "the outputs to settle")
            # Asked of Flink's REST API before the job is stopped.
            checkpoints_api = job.checkpoints(job_id)
            exceptions = rest(job.rest_base(), f"/jobs/{job_id}/exceptions")
            took = time.monotonic() - start
        finally:
            writer.stopped.set()
            job.stop()
    fired = json.loads(marker.read_text()) if marker.exists() else None
    print(f"\nflink watched streaming with a fault: {took:.1f} s wall; fault: {fired}; "
          f"restored: {checkpoints_api['latest']['restored']}")
    assert fired, "the fault never fired"

    start = time.monotonic()
    reference = folder / "reference"
    assert cli_main(["--input", input_glob, "--output", str(reference),
                     f"--recovery_timeout={RECOVERY_TIMEOUT}"]) == 0
    print(f"reference (DirectRunner batch, same files): {time.monotonic() - start:.1f} s wall")
    return SimpleNamespace(out=out, reference=reference, fired=fired, since=job.since,
                           checkpoints=checkpoints_api, exceptions=exceptions)


def test_fault_mid_run_restores_from_checkpoint(fault_run, flink_log, feed):
    run = fault_run
    # Flink failed the job on the fault (once) and restored it from the checkpoint FailOnce saw or
    # a later one, not from scratch: the job's REST API, and Flink's log.
    history = run.exceptions["exceptionHistory"]["entries"]
    assert len(history) == 1 and "InjectedFault: injected fault" in history[0]["stacktrace"]
    restored = run.checkpoints["latest"]["restored"]
    assert run.checkpoints["counts"]["restored"] == 1 and restored is not None
    assert not restored["is_savepoint"] and restored["id"] >= run.fired["checkpoint"]
    assert flink_log.matching(r"switched from state RUNNING to RESTARTING", run.since)
    assert [int(m.group(1)) for m in flink_log.matching(
        r"Restoring job \S+ from Checkpoint (\d+)", run.since)] == [restored["id"]]

    # Nothing lost, nothing changed: read once per id, every output equals the run without the
    # fault, exactly; summary.json (Beam state, which a restore rolls back) equals it as written.
    _, expected_summary = feed
    assert _summary(run.reference) == expected_summary
    assert _summary(run.out) == expected_summary
    raw, once = {}, {}
    for name in FOLDERS:
        reference = rows_of(run.reference, name, dedupe=False)
        assert reference == rows_of(run.reference, name, dedupe=True), f"{name}: ids not unique"
        raw[name], once[name] = (rows_of(run.out, name, dedupe=False),
                                 rows_of(run.out, name, dedupe=True))
        assert once[name] == reference, f"{name} differs from the run without the fault"
    assert len(once["clean"]) == expected_summary["clean_records"]

    # The raw files do hold duplicates: what the sinks wrote between the restored checkpoint and
    # the fault was written again after the restore, under new names.
    written_twice = {name: len(raw[name]) - len(once[name]) for name in FOLDERS}
    print(f"rows written twice after the restore: {written_twice}; when the fault fired, the clean "
          f"files written since checkpoint {run.fired['checkpoint']} held "
          f"{run.fired['clean_rows_after']} rows")
    report = readback.report(str(run.out))
    assert all(report[name]["conflicting"] == 0 for name in FOLDERS), report
    if restored["id"] == run.fired["checkpoint"]:
        assert written_twice["clean"] >= run.fired["clean_rows_after"] > 0
    else:   # a checkpoint completed between FailOnce's look and the fault (milliseconds)
        assert written_twice["clean"] >= 0

    # The deduplicated copy (python -m beam_pipeline.readback OUT --write DIR) reads the same.
    copy = run.out.parent / "deduplicated"
    assert readback.main([str(run.out), "--write", str(copy)]) == 0
    for name in FOLDERS:
        assert rows_of(copy, name, dedupe=False) == once[name], name


# ---- 2-4. restoring from a bad savepoint ----------------------------------------------------------
# Beam's Flink runner applies --savepoint_path only when it submits to a cluster (host:port):
# FlinkExecutionEnvironments builds the [local] MiniCluster without restore settings. So 3 and 4
# use the standalone cluster of scripts/flink_cluster.sh; 2 shows the trap.

def damaged_savepoint(folder) -> str:
    folder.mkdir()
    (folder / "_metadata").write_bytes(b"\x00 not a Flink savepoint \x00" * 8)
    return f"file://{folder}"


def test_savepoint_path_is_ignored_on_the_embedded_minicluster(feed, tmp_path, flink_log):
    """With the profile's default --flink_master=[local], --savepoint_path (here a damaged
    savepoint) is silently ignored: the job starts from empty state and runs."""
    chunks, _ = feed
    write_lines(str(tmp_path / "in" / chunk_name(0)), chunks[0])
    job = Job(watched_options(str(tmp_path / "in" / "chunk-*"), tmp_path / "out",
                              tmp_path / "checkpoints",
                              f"--savepoint_path={damaged_savepoint(tmp_path / 'sp')}"), flink_log)
    try:
        job_id = job.job_id()
        wait_for(lambda: _sequenced(tmp_path / "out", len(chunks[0])), 120,
                 "the job to process its input")
        checkpoints = job.checkpoints(job_id)
    finally:
        job.stop()
    assert checkpoints["counts"]["restored"] == 0 and checkpoints["latest"]["restored"] is None
    assert not flink_log.matching(r"(?i)from savepoint|Unexpected magic number", job.since)


def test_damaged_savepoint_fails_the_job_clearly(cluster, feed, tmp_path, flink_log):  # noqa: F811
    """On a cluster, --savepoint_path to a damaged savepoint fails the job at start with Flink's
    reason; nothing runs from empty state."""
    chunks, _ = feed
    write_lines(str(tmp_path / "in" / chunk_name(0)), chunks[0])
    wait_until_idle()
    start = time.monotonic()
    job = Job(watched_options(str(tmp_path / "in" / "chunk-*"), tmp_path / "out",
                              tmp_path / "checkpoints", f"--flink_master={cluster}",
                              f"--savepoint_path={damaged_savepoint(tmp_path / 'sp')}"),
              flink_log, cluster, name=f"feedcheck-damaged-{int(time.time())}")
    try:
        with pytest.raises(RuntimeError) as failure:
            job.result.wait_until_finish()
    finally:
        job.stop()
    message = str(failure.value)
    print(f"\nflink cluster job from a damaged savepoint: failed after "
          f"{time.monotonic() - start:.1f} s: {message[:300]}")
    assert "failed in state FAILED" in message
    assert "Unexpected magic number" in message and "savepoint file has been corrupted" in message
    assert not (tmp_path / "out" / "clean").exists() and not (tmp_path / "out" / "summary.json").exists()


class StoredStateV0(msgspec.Struct):
    """transforms.sequence_state.StoredState as an older release would have written it."""

    machine: SequencerState
    stream: StreamState
    version: int = 0


def _state_resets(out) -> list:
    return [row for row in Outputs(str(out)).parquet_rows("corrupt_periods")
            if row["reason"] == "state_reset"]


def test_state_of_another_version_restarts_each_key_with_state_reset(
        cluster, feed, tmp_path, flink_log, caplog):  # noqa: F811
    """A savepoint of a job whose sequencer state has schema version 0, restored into this version:
    each key, on its first event, logs a warning, writes a `state_reset` corrupt period and starts
    again; the job goes on and accounts for every record."""
    chunks, expected_summary = feed
    half = CHUNKS // 2                     # four files, one per symbol, each in order
    inputs, staging, checkpoints = tmp_path / "in", tmp_path / "staging", tmp_path / "checkpoints"
    inputs.mkdir()
    staging.mkdir()
    for index in range(half):
        drop(inputs, index, chunks[index], staging)
    name = f"feedcheck-state-version-{int(time.time())}"
    base = f"http://{cluster}"
    caplog.set_level(logging.WARNING, logger="transforms.sequence_state")
    version = sequence_module.STATE_VERSION
    assert version != 0

    wait_until_idle()
    with pytest.MonkeyPatch.context() as old_release:      # the job an older release ran
        old_release.setattr(sequence_module, "STATE_VERSION", 0)
        old_release.setattr(sequence_module, "StoredState", StoredStateV0)
        old_release.setattr(sequence_module, "_stored_codec", msgspec.msgpack.Decoder(StoredStateV0))
        old = Job(watched_options(str(inputs / "chunk-*"), tmp_path / "old", checkpoints,
                                  f"--flink_master={cluster}", f"--job_name={name}-v0"),
                  flink_log, cluster, f"{name}-v0")
        try:
            job_id = old.job_id()
            wait_for(lambda: _sequenced(tmp_path / "old", sum(map(len, chunks[:half]))), 180,
                     "the first half of the feed to be sequenced")
            # stop with a savepoint, through Flink's REST API
            trigger = rest(base, f"/jobs/{job_id}/stop",
                           {"targetDirectory": f"file://{tmp_path / 'savepoints'}", "drain": False})
            done = wait_for(lambda: (lambda s: s if s["status"]["id"] == "COMPLETED" else None)(
                rest(base, f"/jobs/{job_id}/savepoints/{trigger['request-id']}")), 60,
                "the savepoint")
            savepoint = done["operation"]["location"]
            wait_for(lambda: not old.flink_jobs(), 60, "the old job to stop")
        finally:
            old.stop()
    assert _state_resets(tmp_path / "old") == []
    assert not [r for r in caplog.records if "state reset" in r.getMessage()]

    wait_until_idle()
    new = Job(watched_options(str(inputs / "chunk-*"), tmp_path / "new", checkpoints,
                              f"--flink_master={cluster}", f"--job_name={name}-v1",
                              f"--savepoint_path={savepoint}"), flink_log, cluster, f"{name}-v1")
    try:
        job_id = new.job_id()
        restored = new.checkpoints(job_id)["latest"]["restored"]
        for index in range(half, CHUNKS):       # one file per symbol: all at once is in order
            drop(inputs, index, chunks[index], staging)
        wait_for(lambda: len(_state_resets(tmp_path / "new")) >= len(SYMBOLS)
                 and (_summary(tmp_path / "new") or {}).get("input_records")
                 == expected_summary["input_records"], 180,
                 "a state_reset for every symbol and every record accounted for")
    finally:
        new.stop()

    # Flink restored the new job from the savepoint (REST API): the summary's counts went on from
    # the old job's, and the files the old job had read were not read again.
    assert restored["is_savepoint"] and restored["external_path"] == savepoint
    assert _summary(tmp_path / "new")["input_records"] == expected_summary["input_records"]
    clean_ids = [tuple(row[k] for k in readback.KEYS["clean"]) for job in ("old", "new")
                 for row in readback.read_raw(str(tmp_path / job), "clean").to_pylist()]
    assert len(clean_ids) == len(set(clean_ids)), "a clean row is in both jobs' outputs"
    resets = _state_resets(tmp_path / "new")
    assert sorted((r["market"], r["symbol"]) for r in resets) == sorted(SYMBOLS)
    assert all((r["start_id"], r["end_id"], r["start_time"]) == (0, 0, None) for r in resets)
    warned = [r.getMessage() for r in caplog.records if "state reset" in r.getMessage()]
    assert len(warned) == len(SYMBOLS)
    assert all(f"state version 0, expected {version}" in message for message in warned)
