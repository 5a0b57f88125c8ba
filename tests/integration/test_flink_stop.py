"""Stopping a streaming job on the standalone Flink cluster as users do (SIGTERM to the command):
Flink's stop-with-savepoint (no drain) writes a savepoint with every key's state and timers, the
command exits 0 and prints where it went and the command that resumes from it.

The job watches a folder holding the first half of the feed (test_flink_recovery.py's feed and
helpers).

Not shown here, because it does not work yet: a job resumed with that command restores from the
savepoint (Flink logs "Restoring job ... from Savepoint"), but it does not pick up files dropped
after the resume (its PeriodicImpulse ticks do not fire after a restore; seen 2026-12-07, Flink
1.19, Beam Java 2.70 / Python 2.75), and one stop of a resumed job did not finish in 120 s."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.integration.test_flink_cluster import cluster, wait_until_idle  # noqa: F401  (fixture)
from tests.integration.test_flink_recovery import (CHECKPOINT_MS, RECOVERY_TIMEOUT,  # noqa: F401
                                                   _sequenced, drop, feed)

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
    # (the files of the second half are never dropped: see the module docstring)
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


