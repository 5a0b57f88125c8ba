"""Stopping, killing and restarting a streaming job on the real Pub/Sub emulator, the way users do
it (SIGTERM, Ctrl-C, SIGKILL, the same command again), with the defaults they get (no flush or
timeout flags): what is on disk afterwards equals the batch run on the same records."""
import gzip
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from beam_pipeline.publish import publish
from beam_pipeline.readback import read
from tests.conftest import REPO
from tests.tooling.streaming_job import comparable, summary_of
from tests.tooling.synthetic import generate, write_lines
from beam_pipeline.cli import INFLIGHT_JOURNAL, main

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


def _publish_and_count(job, topic, path, out, records: int) -> None:
    """Publishes the feed to the running job and waits for summary.json to count all of it (the
    job is killed if that fails, so no test leaves one running)."""
    try:
        publish(topic, [path], progress=False)
        _wait(lambda: _counted(out, records), 120, "summary.json to count the feed", out)
    except BaseException:
        job.kill()
        raise


def _pulls_journaled(out) -> int:
    """How many pulls the job has journaled (cli.INFLIGHT_JOURNAL): one is written as soon as a
    pull returns, before its messages are processed."""
    try:
        text = (out / INFLIGHT_JOURNAL).read_text()
    except FileNotFoundError:
        return 0
    return text.count('{"pull":')


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
    _publish_and_count(job, topic, path, out, len(lines))
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


CONTINUOUS = [("small_gap", 0), ("large_gap", 1), ("reorder", 2), ("duplicate", 3)]


def _continuous_feed(tmp_path, events, seed):
    """Faults that never wait for a snapshot (small and large gaps, a reorder, a duplicate), so
    a stop anywhere ends no wait early: both runs together must answer exactly as batch does."""
    lines, expected = generate(events, seed=seed, faults=CONTINUOUS, bad_records=BAD,
                               spacing=max(200, events // 40))
    path = str(tmp_path / "feed.jsonl")
    write_lines(path, lines)
    return path, lines, expected


def _rows(folder, name, columns):
    return sorted(tuple(str(row[c]) for c in columns) for row in read(str(folder), name).to_pylist())


GAP_COLUMNS = ("market", "symbol", "last_good_id", "next_first_id", "gap_size", "gap_class",
               "action", "resolution", "event_time")
CLEAN_COLUMNS = ("market", "symbol", "kind", "first_id", "last_id", "segment_id", "anchored")


def test_ctrl_c_mid_backlog_then_restart_counts_each_record_once(pubsub_emulator, tmp_path):
    """A backlog is waiting; Ctrl-C while the job is in the middle of it. What it acknowledged is on
    disk; the same command with the printed --job_id reads the rest. Both runs together: every
    record counted once, every row equal to batch's (segments and anchoring included), and no
    `restart` gap where the feed was continuous."""
    emu = pubsub_emulator
    path, lines, expected = _continuous_feed(tmp_path, 150_000, seed=23)
    _batch(path, tmp_path / "batch")
    topic, subscription = _subscription(emu, "ctrlc")
    publish(topic, [path], progress=False, records_per_message=100)      # the backlog
    out = tmp_path / "stream"
    job = _start(emu, subscription, out)
    try:
        # Ctrl-C right after the job's first pull: waiting for summary.json to count something let
        # a fast run read the whole backlog first (seen once: 150,009 of 150,009 before the stop)
        first = _wait(lambda: _pulls_journaled(out), 120, "the job's first pull", out)
    except BaseException:
        job.kill()
        raise
    code, took = _stop(job, signal.SIGINT)
    log = _log(out)
    assert code == 0 and took < STOP_TIMEOUT_S, log[-3000:]
    run1 = summary_of(str(out))
    assert run1["balanced"] and 0 < run1["input_records"] < len(lines), (first, run1)
    restart = shlex.split(log.split("Continue this job with:\n", 1)[1].splitlines()[0])
    assert "--job_id" in restart and "--overwrite" not in restart

    job = subprocess.Popen(restart, cwd=REPO, stdout=open(str(out) + ".log", "a"),
                           stderr=subprocess.STDOUT,
                           env=dict(os.environ, PUBSUB_EMULATOR_HOST=emu.host, PYTHONPATH=REPO))
    try:
        _wait(lambda: (out / "_runs" / "1" / "summary.json").exists(), 60,
              "the restarted job to keep the first run's summary", out)
        _wait(lambda: _counted(out, len(lines) - run1["input_records"]), 180,
              "the restarted job to read the rest", out)
    except BaseException:
        job.kill()
        raise
    code, took = _stop(job, signal.SIGTERM)
    log = _log(out)
    assert code == 0 and took < STOP_TIMEOUT_S, log[-3000:]
    run2 = summary_of(str(out))
    assert run2["balanced"]
    assert run1["input_records"] + run2["input_records"] == len(lines)
    assert run2["job"]["totals"]["input_records"] == len(lines)
    assert run2["job"]["earlier_runs"][0]["input_records"] == run1["input_records"]
    # On disk, both runs together equal batch: not a row missing, none twice.
    assert _rows(out, "gaps", GAP_COLUMNS) == _rows(tmp_path / "batch", "gaps", GAP_COLUMNS)
    assert not [g for g in read(str(out), "gaps").to_pylist() if g["cause"] == "restart"]
    assert _rows(out, "clean", CLEAN_COLUMNS) == _rows(tmp_path / "batch", "clean", CLEAN_COLUMNS)
    assert _rows(out, "corrupt_periods", ("symbol", "start_id", "end_id", "reason")) == \
        _rows(tmp_path / "batch", "corrupt_periods", ("symbol", "start_id", "end_id", "reason"))
    assert len(read(str(out), "dead_letter")) == len(BAD)
def _clean_rows(folder) -> int:
    try:
        return read(str(folder), "clean").num_rows
    except Exception:            # noqa: BLE001: a folder being written; asked again
        return -1


def _clean_ids(folder):
    table = read(str(folder), "clean")            # readback: each row once
    ids = [(r["market"], r["symbol"], r["kind"], r["first_id"], r["last_id"])
           for r in table.select(["market", "symbol", "kind", "first_id", "last_id"]).to_pylist()]
    assert len(ids) == len(set(ids))
    return sorted(ids)


@pytest.mark.parametrize("flush", ["default", "5"])
def test_sigkill_mid_backlog_then_restart_loses_nothing(pubsub_emulator, tmp_path, flush):
    """SIGKILL (no drain, as an out-of-memory kill) in the middle of a backlog, then the same
    command again. Pub/Sub delivers what was not acknowledged again, the restarted job sequences
    it before anything newer, and after readback's deduplication every record is on disk exactly
    once. With the default flush the kill comes before anything was written or acknowledged; with
    `--output_flush_seconds 5` it comes after a first flush was written (and perhaps acknowledged),
    so rows of redelivered messages are on disk twice and readback must take them once."""
    emu = pubsub_emulator
    path, lines, expected = _continuous_feed(tmp_path, 60_000, seed=29)
    _batch(path, tmp_path / "batch")
    topic, subscription = _subscription(emu, "kill")
    out = tmp_path / "stream"
    flags = ["--job_id", "killed"] + ([] if flush == "default" else ["--output_flush_seconds", flush])
    if flush == "default":
        publish(topic, [path], progress=False, records_per_message=100)      # the backlog
        job = _start(emu, subscription, out, *flags)
        try:
            _wait(lambda: _counted(out, 1), 120, "the job to start on the backlog", out)
        finally:
            job.kill()
            job.wait(timeout=30)
    else:
        # A first part is read and flushed; the kill comes while the second part is in flight.
        half = len(lines) // 2
        write_lines(str(tmp_path / "part1.jsonl"), lines[:half])
        write_lines(str(tmp_path / "part2.jsonl"), lines[half:])
        publish(topic, [str(tmp_path / "part1.jsonl")], progress=False, records_per_message=100)
        job = _start(emu, subscription, out, *flags)
        try:
            _wait(lambda: _clean_rows(out) > 0, 120, "a first flush of clean rows", out)
            publish(topic, [str(tmp_path / "part2.jsonl")], progress=False,
                    records_per_message=100)
            _wait(lambda: _counted(out, half + 1), 120, "the second part to be in flight", out)
        finally:
            job.kill()
            job.wait(timeout=30)
        assert 0 < read(str(out), "clean").num_rows < len(lines)

    job = _start(emu, subscription, out, *flags)
    want = _clean_ids(tmp_path / "batch")
    try:
        if flush == "default":
            # the kill came long before the first 60 s flush: nothing was acknowledged, so the
            # restarted job reads every record again; then it is stopped as users stop it
            _wait(lambda: (out / "_runs" / "1" / "summary.json").exists(), 60,
                  "the restarted job to keep the killed run's summary", out)
            _wait(lambda: _counted(out, len(lines)), 240,
                  "the restarted job to read everything", out)
        else:
            _wait(lambda: (out / "_runs" / "1" / "summary.json").exists(), 60,
                  "the restarted job to keep the killed run's summary", out)
            _wait(lambda: _clean_rows(out) >= len(want) and
                  len(_clean_ids(out)) == len(want), 240,
                  "every record on disk after the redelivery", out)
    finally:
        code, _ = _stop(job, signal.SIGTERM)
    log = _log(out)
    assert code == 0, log[-3000:]
    assert _clean_ids(out) == want
    assert len(read(str(out), "dead_letter")) == len(BAD)
    assert summary_of(str(out))["balanced"]
    assert emu.pull_all(subscription, max_wait_s=3, settle_s=1) == []


def test_sigterm_while_starting_stops_gracefully(pubsub_emulator, tmp_path):
    """A stop signal while Python is still importing Beam (a deploy replaced at once) is kept and
    acted on when the job runs: exit 0; what the job pulled before it could act is written, the
    rest is still on the subscription for the next run."""
    emu = pubsub_emulator
    path, lines, _ = _feed(tmp_path, 4_000, seed=5)
    topic, subscription = _subscription(emu, "early")
    publish(topic, [path], progress=False, records_per_message=100)
    out = tmp_path / "stream"
    job = _start(emu, subscription, out)
    time.sleep(0.3)                    # inside the imports: nothing of Beam is loaded yet
    code, _ = _stop(job, signal.SIGTERM)
    log = _log(out)
    assert code == 0, log[-3000:]
    assert "stopping on SIGTERM" in log
    left = emu.pull_all(subscription, max_wait_s=3, settle_s=1)
    summary = summary_of(str(out))
    assert summary["balanced"]
    assert summary["input_records"] + sum(len(gzip.decompress(data).splitlines())
                                          for data, _ in left) == len(lines)
    assert len(read(str(out), "clean")) == summary["clean_records"]


def test_sigterm_writes_every_keys_last_status(pubsub_emulator, tmp_path):
    """With the default flush, a SIGTERM stop writes each key's status as it stands at the stop:
    status/ on disk holds rows stamped with as_of (inside the job's life), and readback's latest
    row per key has the last id published for that key, nothing held, no open gap, and the
    anchoring of its newest clean row."""
    import json

    from beam_pipeline.readback import read_raw, read_status

    emu = pubsub_emulator
    lines, _ = generate(3_000, seed=31, faults=CONTINUOUS, spacing=200)
    path = str(tmp_path / "feed.jsonl")
    write_lines(path, lines)
    last_published = {}
    for line in lines:
        record = json.loads(line)
        payload = record["payload"]
        last = payload.get("u", payload.get("lastUpdateId"))
        key = (record["exchange"], record["market"], record["symbol"])
        last_published[key] = max(last_published.get(key, last), last)
    topic, subscription = _subscription(emu, "status")
    out = tmp_path / "stream"
    started = time.time()
    job = _start(emu, subscription, out)
    _publish_and_count(job, topic, path, out, len(lines))
    code, _ = _stop(job, signal.SIGTERM)
    stopped = time.time()
    assert code == 0, _log(out)[-3000:]
    raw = read_raw(str(out), "status").to_pylist()
    assert len(raw) >= len(last_published)
    assert all(started <= row["as_of"].timestamp() <= stopped for row in raw)
    latest = {(r["exchange"], r["market"], r["symbol"]): r for r in read_status(str(out)).to_pylist()}
    assert {key: row["last_id"] for key, row in latest.items()} == last_published
    clean = read(str(out), "clean").to_pylist()
    for key, row in latest.items():
        newest = max((r for r in clean if (r["exchange"], r["market"], r["symbol"]) == key),
                     key=lambda r: (r["last_id"], r["kind"] == "delta"))
        assert (row["segment_id"], row["anchored"]) == (newest["segment_id"], newest["anchored"])
        assert (row["held_events"], row["hold_reason"], row["open_gap_size"]) == (0, None, None)
