"""Stopping, killing and restarting a streaming job on the real Pub/Sub emulator, the way users do
it (SIGTERM, Ctrl-C, SIGKILL, the same command again), with the defaults they get (no flush or
timeout flags): what is on disk afterwards equals the batch run on the same records."""
import os
import signal
import subprocess
import sys
import time

from beam_pipeline.publish import publish
from beam_pipeline.readback import read
from tests.conftest import REPO
from tests.tooling.streaming_job import comparable, summary_of
from tests.tooling.synthetic import generate, write_lines
from beam_pipeline.cli import main

FAULTS = [("small_gap", 0), ("medium_gap_resynced", 0), ("large_gap", 1), ("reorder", 1),
          ("medium_gap_timeout", 2), ("duplicate", 2), ("medium_gap_resynced", 3)]
BAD = ["bad_json", "mistyped_field", "invalid_ids"]
STOP_TIMEOUT_S = 25          # --stop_timeout's default: the stop must end within it


def _feed(tmp_path, events, seed, name="feed.jsonl"):
    lines, expected = generate(events, seed=seed, faults=FAULTS, bad_records=BAD, ignored=3,
                               spacing=max(200, events // 40))
    path = str(tmp_path / name)
    write_lines(path, lines)
    return path, lines, expected


def _batch(path, out):
    assert main(["--input", path, "--output", str(out)]) == 0
    return comparable(str(out))


def _start(emu, subscription, out, *extra):
    """The command as a user types it: no tuning flags."""
    env = dict(os.environ, PUBSUB_EMULATOR_HOST=emu.host, PYTHONPATH=REPO)
    log = open(str(out) + ".log", "a")
    return subprocess.Popen([sys.executable, "-m", "beam_pipeline", "--streaming",
                             "--input_subscription", subscription, "--output", str(out), *extra],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _log(out) -> str:
    with open(str(out) + ".log") as handle:
        return handle.read()


def _wait(condition, timeout_s, what, out=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}"
                         + (f"\n--- job log:\n{_log(out)[-3000:]}" if out else ""))


def _counted(out, records):
    summary = summary_of(str(out))
    return summary if summary and summary["input_records"] >= records else None


def _stop(job, sig):
    started = time.monotonic()
    job.send_signal(sig)
    code = job.wait(timeout=STOP_TIMEOUT_S + 30)
    return code, time.monotonic() - started


def _subscription(emu, prefix):
    topic = emu.create_topic(emu.unique_name(prefix))
    return topic, emu.create_subscription(topic, emu.unique_name(prefix + "-sub"))


def test_sigterm_as_soon_as_counted_writes_everything(pubsub_emulator, tmp_path):
    """SIGTERM the moment summary.json counts every record, with the default 60 s flush: every
    gap, corrupt period, dead letter and clean row equals the batch run's, on disk, and the job
    exits 0 within --stop_timeout."""
    emu = pubsub_emulator
    path, lines, expected = _feed(tmp_path, 12_000, seed=11)
    want = _batch(path, tmp_path / "batch")
    topic, subscription = _subscription(emu, "stop")
    out = tmp_path / "stream"
    job = _start(emu, subscription, out)
    try:
        publish(topic, [path], progress=False)
        _wait(lambda: _counted(out, len(lines)), 120, "summary.json to count the feed", out)
    except BaseException:
        job.kill()
        raise
    code, took = _stop(job, signal.SIGTERM)
    log = _log(out)
    assert code == 0, log[-3000:]
    assert took < STOP_TIMEOUT_S, f"the stop took {took:.1f} s"
    assert "stopping on SIGTERM" in log and "Continue this job with:" in log and "--job_id" in log
    got = comparable(str(out))
    assert got == want, log[-3000:]
    assert sum(got["summary"]["gaps"].values()) == len(expected.gaps) > 0
    summary = summary_of(str(out))
    assert summary["balanced"] and not summary.get("in_flight")
    # Count what is on disk, not what the summary says.
    assert len(read(str(out), "dead_letter")) == sum(summary["dead_letters"].values()) == len(BAD)
    assert len(read(str(out), "clean")) == summary["clean_records"] == \
        len(read(str(tmp_path / "batch"), "clean"))
    # Everything was acknowledged: nothing is delivered again.
    assert emu.pull_all(subscription, max_wait_s=3, settle_s=1) == []
