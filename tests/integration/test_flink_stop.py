"""Stopping a streaming job on the standalone Flink cluster as users do (SIGTERM to the command),
and resuming it with the command it prints: Flink's stop-with-savepoint keeps every key's state,
timers and what the watched folder has read, so the resumed job continues where the first
stopped, and the two together equal the batch run on the same files.

The job watches a folder into which the test drops the feed one file at a time (as in
test_flink_recovery.py, whose feed and helpers this reuses): the first files before the stop, the
rest while the resumed job runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from beam_pipeline import readback
from beam_pipeline.cli import main as cli_main
from tests.conftest import REPO
from tests.integration.test_flink_cluster import cluster, wait_until_idle  # noqa: F401  (fixture)
from tests.integration.test_flink_recovery import (CHECKPOINT_MS, FOLDERS, RECOVERY_TIMEOUT,
                                                   _sequenced, chunk_name, drop, feed,  # noqa: F401
                                                   rows_of)

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


def test_sigterm_takes_a_savepoint_and_the_printed_command_resumes(cluster, feed, tmp_path):  # noqa: F811
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
    resume = text.split("Resume this job from it with:\n", 1)[1].splitlines()[0].split()
    savepoint = resume[resume.index("--savepoint_path") + 1]
    assert os.path.exists(savepoint.split(":", 1)[1]), savepoint
    assert "--job_id" in resume and "--overwrite" not in resume

    wait_until_idle()
    job = subprocess.Popen(resume, cwd=REPO, env=env, stdout=open(log, "a"),
                           stderr=subprocess.STDOUT)
    try:
        time.sleep(5)
        for index in range(first, len(chunks)):
            drop(folder, index, chunks[index], staging)
        # The savepoint carries the summary's counts on: the resumed job counts every file.
        _wait(lambda: _sequenced(out, sum(map(len, chunks))), 240,
              "the rest of the files to be sequenced by the resumed job", log)
        time.sleep(3)                     # the last flush of every folder
    finally:
        _stop(job, log)

    # The reference: batch over every file.
    batch = tmp_path / "batch"
    assert cli_main(["--input", f"{folder}/chunk-*", "--output", str(batch),
                     "--recovery_timeout", RECOVERY_TIMEOUT]) == 0
    for name in FOLDERS:
        assert rows_of(out, name, dedupe=True) == rows_of(batch, name, dedupe=True), name
    assert readback.read(str(out), "gaps").num_rows > 0
