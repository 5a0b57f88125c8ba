"""The real pipeline (beam_pipeline.cli.main) on Flink, compared with DirectRunner.

  (a) batch on the embedded MiniCluster (parallelism 2): the synthetic faulty feed (every fault of
      default_faults() and every BAD_RECORDS kind, 5,000 events over two files, one gzipped) and
      the real captures give exactly DirectRunner's outputs;
  (b) streaming from the same files with checkpointing (--streaming --input ...
      --checkpointing_interval 1000 --shutdown_sources_after_idle_ms 2000): the job ends on its own
      (LiveSequencerDoFn's end-of-stream timer), and its gaps, corrupt periods, dead letters, clean
      rows and summary equal the batch run's;
  (the standalone cluster is exercised by tests/test_flink_cluster.py).

The feed is split by market (spot lines in one file, usdm lines in the other), so each symbol's
records stay in feed order inside one file. Batch output does not depend on the split (see
tests/test_end_to_end.py); the streaming sequencer does: it re-orders only within --reorder_timeout
of processing time and not at all while a medium gap holds, so a split that interleaves one
symbol over two files read in parallel gives other answers in streaming (seen, lines alternating
over the two files: 53 small gaps instead of 1, 501 duplicates instead of 2, 274 late_event dead
letters). That is how the streaming path is designed (live feeds arrive nearly in order), so the
test feeds it per-symbol order, as a collector writes it.

Wall time on the 2-core machine with the jar and the Flink distribution cached: see the module
docstring of docs/flink.md ("Tests and their wall time").
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from beam_pipeline.cli import main
from tests.tooling.synthetic import BAD_RECORDS, default_faults, generate, write_lines
from tests.tooling.synthetic import totals as summary_totals
from runners import flink
from tests.conftest import REPO, Outputs

EVENTS = 5000
SPACING = 300            # messages of one symbol between its faults: 30 s of its event time
COMMON = ["--recovery_timeout", "10"]   # < SPACING x 100 ms, as the generator requires
STREAMING = ["--streaming", "--checkpointing_interval", "1000",
             "--shutdown_sources_after_idle_ms", "2000", "--output_flush_seconds", "1"]


CLI = "import sys; from beam_pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


# ---- feeds and output snapshots (shared with tests/test_flink_recovery.py) -------------------

def synthetic_feed(events: int = EVENTS, seed: int = 11, spacing: int = SPACING, **kwargs):
    """(lines, Expected): every fault class and every bad-record kind. Run it with
    --recovery_timeout below `spacing` x 100 ms (the generator's rule)."""
    return generate(events, seed=seed, faults=default_faults(), bad_records=BAD_RECORDS, ignored=7,
                    spacing=spacing, **kwargs)


_MARKET = re.compile(rb'"market":"(\w+)"')


def split_by_market(lines):
    """(spot lines, the rest), each in feed order; a line without a readable market goes first."""
    spot, rest = [], []
    for line in lines:
        match = _MARKET.search(line)
        (rest if match and match.group(1) != b"spot" else spot).append(line)
    return spot, rest


#: A clean row's identity: the same delta or snapshot of the same stream.
CLEAN_KEY_FIELDS = ("exchange", "market", "symbol", "kind", "first_id", "last_id")


def clean_key(row):
    return tuple(row[name] for name in CLEAN_KEY_FIELDS)


def snapshot(folder, dedupe: bool = False) -> dict:
    """A run's outputs in a comparable form. With `dedupe`, each row is read once per id (clean:
    CLEAN_KEY_FIELDS; dead letters: reason, stage, source), as a reader of at-least-once sinks
    must."""
    out = Outputs(str(folder))

    def rows(name, key):
        found = sorted(out.parquet_rows(name), key=key)
        if dedupe:
            found = list({key(row): row for row in found}.values())
        return found

    return {
        "clean": rows("clean", clean_key),
        "gaps": rows("gaps", lambda r: (r["exchange"], r["market"], r["symbol"],
                                        r["next_first_id"], r["last_good_id"] or -1)),
        "corrupt": rows("corrupt_periods", lambda r: (r["exchange"], r["market"], r["symbol"],
                                                      r["start_id"], r["end_id"], r["reason"])),
        "dead_letters": sorted((set if dedupe else list)(
            (d["reason"], d["stage"], d["source"]) for d in out.dead_letters())),
        "summary": _comparable(out.summary()),
    }


# Not compared between runs: which dead letter is a file's example depends on arrival order, a
# streaming summary says what is in flight, and the settings name each run's own runner.
ORDER_DEPENDENT = ("file_dead_letters", "in_flight", "in_flight_records", "note", "settings")


def _comparable(summary: dict) -> dict:
    return {name: value for name, value in summary.items() if name not in ORDER_DEPENDENT}


PARTS = ("clean", "gaps", "corrupt", "dead_letters", "summary")


def assert_same(actual: dict, expected: dict, parts=PARTS):
    for part in parts:
        assert actual[part] == expected[part], f"{part} differs"


def timed(label: str, fn):
    start = time.monotonic()
    result = fn()
    print(f"\n{label}: {time.monotonic() - start:.1f} s wall")
    return result


# ---- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _jar():
    """Build (or reuse) the job-server jar once, outside the timed runs."""
    return flink.job_server_jar()


@pytest.fixture(scope="module")
def feed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("feed")
    lines, expected = synthetic_feed()
    spot, usdm = split_by_market(lines)
    paths = [str(folder / "spot.jsonl"), str(folder / "usdm.jsonl.gz")]
    write_lines(paths[0], spot)
    write_lines(paths[1], usdm)
    return paths, expected


def _run_direct(inputs, output, *extra):
    assert main(["--input", ",".join(inputs), "--output", str(output), *extra]) == 0
    return dict(snapshot(output), folder=output)


@pytest.fixture(scope="module")
def direct_feed(feed, tmp_path_factory):
    paths, expected = feed
    result = timed("direct batch, synthetic feed",
                   lambda: _run_direct(paths, tmp_path_factory.mktemp("direct") / "out", *COMMON))
    assert summary_totals(result["summary"]) == dict(expected.summary(), balanced=True)
    return result


# ---- (a) batch on the embedded MiniCluster ----------------------------------------------------

def test_batch_synthetic_feed_equals_direct(feed, direct_feed, tmp_path):
    paths, _ = feed
    out = tmp_path / "flink"
    rc = timed("flink batch, synthetic feed", lambda: main(
        ["--runner", "FlinkRunner", "--input", ",".join(paths), "--output", str(out), *COMMON]))
    assert rc == 0
    assert_same(snapshot(out), direct_feed)


def test_batch_real_captures_equal_direct(captures, tmp_path):
    direct = timed("direct batch, captures", lambda: _run_direct(captures, tmp_path / "direct"))
    out = tmp_path / "flink"
    rc = timed("flink batch, captures", lambda: main(
        ["--runner", "FlinkRunner", "--input", ",".join(captures), "--output", str(out)]))
    assert rc == 0
    flink_run = snapshot(out)
    assert_same(flink_run, direct)
    assert flink_run["summary"]["clean_records"] == 929 and flink_run["summary"]["balanced"]


def test_batch_error_counts_keep_every_window(feed, direct_feed):
    """Every error is counted in error_counts/ (any runner: seen on DirectRunner and Flink).
    The feed's gap and corrupt-period errors fall in three 60 s windows of event time, its dead
    letters in the window of the run's wall clock: four windows, four files of the same name."""
    _, expected = feed
    totals = Counter()
    for row in Outputs(str(direct_feed["folder"])).parquet_rows("error_counts"):
        totals[row["error_type"].split(":")[0]] += row["count"]
    wanted = Counter(f"gap_{gap['gap_class']}" for gap in expected.gaps)
    wanted.update(corrupt_period=len(expected.corrupt_periods),
                  dead_letter=sum(expected.dead_letters.values()))
    assert totals == wanted


# ---- (b) streaming with checkpointing ---------------------------------------------------------

def _streaming_cli(program, paths, out, log_path, records, settle_s, deadline_s=600):
    """Runs the CLI in its own process group until it exits, or until `settle_s` after
    summary.json first accounted for all `records`, or `deadline_s`; then kills the group (the
    CLI, its job-server JVM, the LOOPBACK workers). Returns (exit code, or None when it had to be
    killed; seconds; seconds from the complete summary to the end; the last summary.json)."""
    argv = ["--runner", "FlinkRunner", "--input", ",".join(paths), "--output", str(out),
            *STREAMING, *COMMON]
    start = time.monotonic()
    complete_at = None
    with open(log_path, "w") as log:
        job = subprocess.Popen([sys.executable, "-c", program, *argv], cwd=REPO,
                               env=dict(os.environ, PYTHONPATH=REPO), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while job.poll() is None:
                now = time.monotonic()
                summary = _summary_or_none(out)
                if complete_at is None and summary and summary["input_records"] == records \
                        and summary["balanced"]:
                    complete_at = now
                if now - start > deadline_s or (complete_at and now - complete_at > settle_s):
                    break
                time.sleep(0.5)
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
    end = time.monotonic()
    rc = job.returncode if job.returncode >= 0 else None
    return rc, end - start, (end - complete_at) if complete_at else None, _summary_or_none(out)


def _summary_or_none(out):
    try:
        return json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _log_tail(path, lines=40):
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def test_streaming_bounded_input_finishes(feed, tmp_path):
    """The CLI as it is: every record is processed (summary.json balances), and then the job does
    not end. With the fix the job ends a few seconds after the summary balances (measured: see
    test_streaming_with_checkpointing_equals_batch); 30 s is the grace given here."""
    paths, expected = feed
    out = tmp_path / "stream"
    records = expected.summary()["input_records"]
    rc, took, after, summary = _streaming_cli(CLI, paths, out, tmp_path / "cli.log", records,
                                              settle_s=30)
    print(f"\nflink streaming (as is): {'exit ' + str(rc) if rc is not None else 'killed'} "
          f"after {took:.0f} s, {after} s after the summary balanced; last summary: {summary}")
    assert summary and summary["input_records"] == records and summary["balanced"]
    assert rc == 0, f"the job was still running {after:.0f} s after every record was accounted for"


def test_streaming_with_checkpointing_equals_batch(feed, direct_feed, tmp_path):
    """The same answers as the batch run, through the
    streaming path (per-event state and timers, sinks that keep rows in state and write one file
    per folder and flush), with a checkpoint every second."""
    paths, expected = feed
    out = tmp_path / "stream"
    log = tmp_path / "cli.log"
    rc, took, after, _ = _streaming_cli(CLI, paths, out, log,
                                        expected.summary()["input_records"], settle_s=120)
    print(f"\nflink streaming with checkpointing (end-of-stream fix): {took:.1f} s wall, "
          f"ended {after:.1f} s after the summary balanced")
    assert rc == 0, f"exit {rc} after {took:.0f} s:\n{_log_tail(log)}"
    streamed = snapshot(out)
    assert_same(streamed, direct_feed)
    assert len({clean_key(r) for r in streamed["clean"]}) == len(streamed["clean"]), \
        "a clean row was written twice"
