"""A streaming job on the Pub/Sub emulator as a user runs it (a subprocess of the real command),
and what a test or benchmark compares of its outputs with a batch run's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from beam_pipeline.readback import read

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUMMARY_COUNTS = ("input_records", "clean_records", "ignored", "duplicates", "superseded",
                  "dead_letters", "gaps", "corrupt_periods", "symbols")


def start_job(emulator_host: str, subscription: str, out: str, *extra: str,
              flush_seconds: float | None = 1) -> subprocess.Popen:
    """`python -m beam_pipeline --streaming ...` reading `subscription`; its log in <out>.log.
    `flush_seconds`: --output_flush_seconds (1: rows on disk within a second or so, for tests
    that wait for them); None leaves the option out: the default users get (options.py)."""
    env = dict(os.environ, PUBSUB_EMULATOR_HOST=emulator_host, PYTHONPATH=REPO)
    log = open(out + ".log", "w")
    flush = [] if flush_seconds is None else ["--output_flush_seconds", str(flush_seconds)]
    return subprocess.Popen([sys.executable, "-m", "beam_pipeline", "--streaming",
                             "--input_subscription", subscription, "--output", out,
                             *flush, *extra],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def start_watching(folder: str, out: str, *extra: str, flush_seconds="1") -> subprocess.Popen:
    """`python -m beam_pipeline --streaming --input <folder> --watch_seconds 0.5 ...` (DirectRunner
    unless `extra` names another runner), in its own process group; its log in <out>.log.
    `flush_seconds` None: the default --output_flush_seconds."""
    log = open(out + ".log", "w")
    flush = [] if flush_seconds is None else ["--output_flush_seconds", flush_seconds]
    return subprocess.Popen([sys.executable, "-m", "beam_pipeline", "--streaming", "--input", folder,
                             "--watch_seconds", "0.5", "--output", out, *flush, *extra],
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(job: subprocess.Popen) -> None:
    """Stops a job started in its own process group, and whatever it started (a Flink job
    server's JVM, its LOOPBACK workers)."""
    if job.poll() is None:
        job.terminate()
        try:
            job.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(job.pid, 9)
    except ProcessLookupError:
        pass
    job.wait()


def wait_for(condition, timeout_s: float, poll_s: float = 0.2):
    """The first true value of `condition()` within `timeout_s`, else None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    return None


def stop_job(job: subprocess.Popen) -> int:
    job.terminate()
    try:
        return job.wait(timeout=60)
    except subprocess.TimeoutExpired:
        job.kill()
        return job.wait()


def job_log(out: str) -> str:
    with open(out + ".log") as handle:
        return handle.read()


def summary_of(folder: str):
    try:
        with open(os.path.join(folder, "summary.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def wait_counted(out: str, expected: int, timeout_s: float):
    """(monotonic time, summary) once summary.json counts `expected` input records and balances;
    (None, last summary) on time-out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        summary = summary_of(out)
        if summary and summary["input_records"] >= expected and summary["balanced"]:
            return time.monotonic(), summary
        time.sleep(0.2)
    return None, summary_of(out)


def wait_written(out: str, timeout_s: float = 60) -> bool:
    """Gap and corrupt-period files hold as many rows as the summary counts (the sinks flush every
    --output_flush_seconds, the summary every 5 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        summary = summary_of(out) or {}
        try:
            gaps, corrupt = len(read(out, "gaps")), len(read(out, "corrupt_periods"))
        except Exception:          # a file being written, or no file yet
            gaps = corrupt = -1
        if summary and gaps == sum(summary["gaps"].values()) and corrupt == summary["corrupt_periods"]:
            return True
        time.sleep(0.5)
    return False


def comparable(folder: str) -> dict:
    """What must be equal between a streaming and a batch run on the same records: every gap row,
    every corrupt period and the summary's counts."""
    summary = summary_of(folder) or {}
    return {"gaps": sorted(map(str, read(folder, "gaps").to_pylist())),
            "corrupt_periods": sorted(map(str, read(folder, "corrupt_periods").to_pylist())),
            "summary": {name: summary.get(name) for name in SUMMARY_COUNTS}}
