"""Stopping a streaming job on the standalone Flink cluster as users do (SIGTERM to the command):
Flink's stop-with-savepoint (no drain) writes a savepoint with every key's state and timers, the
command exits 0 and prints where it went and the command that resumes from it.

The job watches a folder holding the first half of the feed (test_flink_recovery.py's feed and
helpers). The printed command resumes it from the savepoint (Flink's REST API: restored from a
savepoint); the second half of the feed, dropped while the resumed job runs, is read (its watch
ticks after the restore), the rows that waited for a flush at the savepoint are written by the
resumed job, and after readback's dedup every output equals a DirectRunner batch run of the same
files; the resumed job stops with SIGTERM as the first did."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from beam_pipeline.cli import main as cli_main
from tests.integration.test_flink_cluster import _rest, cluster, wait_until_idle  # noqa: F401
from tests.integration.test_flink_recovery import (CHECKPOINT_MS, FOLDERS,  # noqa: F401  (feed)
                                                   RECOVERY_TIMEOUT, _drained, _sequenced,
                                                   _summary, drop, feed, rows_of)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def _command(cluster_master, folder, out, checkpoints, *extra):
    return [sys.executable, "-m", "beam_pipeline", "--runner", "FlinkRunner",
            "--flink_master", cluster_master, "--streaming", "--input", f"{folder}/chunk-*",
            "--watch_seconds", "1", "--output", str(out), "--recovery_timeout", RECOVERY_TIMEOUT,
            "--checkpointing_interval", str(CHECKPOINT_MS), "--state_backend", "rocksdb",
            "--state_backend_storage_path", f"file://{checkpoints}", "--job_id", "flink-stop",
            *extra]


def _wait(condition, timeout_s, what, log=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    tail = open(log).read()[-3000:] if log else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{tail}")


def _stop(job, log) -> str:
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=120) == 0, open(log).read()[-3000:]
    return open(log).read()


def test_sigterm_takes_a_savepoint_and_prints_the_command_that_resumes(cluster, feed, tmp_path):  # noqa: F811
    chunks, _ = feed
    folder, staging, out = tmp_path / "in", tmp_path / "staging", tmp_path / "out"
    folder.mkdir()
    staging.mkdir()
    first = len(chunks) // 2
    for index in range(first):
        drop(folder, index, chunks[index], staging)
    log = str(tmp_path / "job.log")
    wait_until_idle()
    env = dict(os.environ, PYTHONPATH=REPO)
    job = subprocess.Popen(_command(cluster, folder, out, tmp_path / "checkpoints"), cwd=REPO,
                           env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _sequenced(out, sum(map(len, chunks[:first]))), 240,
              "the first files to be sequenced", log)
    except BaseException:
        job.kill()
        raise
    text = _stop(job, log)
    assert "stopping on SIGTERM: Flink takes a savepoint" in text
    resume = shlex.split(text.split("Resume this job from it with:\n", 1)[1].splitlines()[0])
    savepoint = resume[resume.index("--savepoint_path") + 1]
    assert os.path.exists(savepoint.split(":", 1)[1]), savepoint
    assert "--job_id" in resume and "--overwrite" not in resume

    # Resume; drop the second half once the resumed job runs on the cluster.
    wait_until_idle()
    log2 = str(tmp_path / "resumed.log")
    resumed = subprocess.Popen(resume, cwd=REPO, env=env, stdout=open(log2, "w"),
                               stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _running_job() is not None, 240, "the resumed job to run", log2)
        restored = _rest(f"/jobs/{_running_job()}/checkpoints")["latest"]["restored"]
        assert restored and restored["is_savepoint"], restored
        for index in range(first, len(chunks)):
            drop(folder, index, chunks[index], staging)
        _, expected_summary = feed
        _wait(lambda: _drained(out, expected_summary), 240, "the whole feed on disk", log2)
    except BaseException:
        resumed.kill()
        raise
    _stop(resumed, log2)

    reference = tmp_path / "reference"
    assert cli_main(["--input", f"{folder}/chunk-*", "--output", str(reference),
                     f"--recovery_timeout={RECOVERY_TIMEOUT}"]) == 0
    assert _summary(out) == _summary(reference)
    for name in FOLDERS:
        assert rows_of(out, name, dedupe=True) == rows_of(reference, name, dedupe=True), name


def _running_job():
    jobs = [j["jid"] for j in _rest("/jobs/overview")["jobs"] if j["state"] == "RUNNING"]
    return jobs[0] if jobs else None


