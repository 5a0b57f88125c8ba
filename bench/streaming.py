"""Streaming benchmark on the real Pub/Sub emulator with DirectRunner (a benchmark, never a timed test).

    .venv/bin/python -m bench.streaming backlog --events 100000 [--records_per_message 500]
    .venv/bin/python -m bench.streaming live --rate 1000 --seconds 600

backlog: a faulted synthetic feed an hour old is published before the job starts (as after
downtime); the job drains it. Reports records/s, drain time and whether every output equals the
batch run's on the same records (gap rows, corrupt periods, summary counts, no late_event).
live: the job runs first; the feed is published at --rate records/s for --seconds; reports how
long after the last message every record was counted, the input lag and the job's RSS over time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import psutil

from beam_pipeline.cli import main as run_batch
from beam_pipeline.publish import publish
from beam_pipeline.readback import read as read_table
from tests.tooling.pubsub_emulator import PubSubEmulator, free_local_port, start_emulator, stop_emulator
from tests.tooling.synthetic import default_faults, generate, write_lines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD = ["bad_json", "mistyped_field", "invalid_ids"]
COMMON = ["--output_flush_seconds", "2"]


def feed(path: str, events: int, start_ms: int, seed: int = 7) -> list:
    lines, _ = generate(events, seed=seed, faults=default_faults(), bad_records=BAD, ignored=20,
                        start_ms=start_ms)
    write_lines(path, lines)
    return lines


def summary_of(folder: str):
    try:
        with open(os.path.join(folder, "summary.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def comparable(folder: str) -> dict:
    """What must be equal between a streaming and a batch run on the same records."""
    gaps = read_table(folder, "gaps")
    corrupt = read_table(folder, "corrupt_periods")
    summary = summary_of(folder) or {}
    keep = ("input_records", "clean_records", "ignored", "duplicates", "superseded",
            "dead_letters", "gaps", "corrupt_periods", "symbols")
    return {"gaps": sorted(map(str, gaps.to_pylist())),
            "corrupt_periods": sorted(map(str, corrupt.to_pylist())),
            "summary": {k: summary.get(k) for k in keep}}


def start_job(emu: PubSubEmulator, subscription: str, out: str, alerts: str, extra=()):
    env = dict(os.environ, PUBSUB_EMULATOR_HOST=emu.host, PYTHONPATH=REPO)
    log = open(out + ".log", "w")
    job = subprocess.Popen([sys.executable, "-m", "beam_pipeline", "--streaming",
                            "--input_subscription", subscription, "--output", out,
                            "--alerts_topic", alerts, *COMMON, *extra],
                           cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return job


def wait_counted(out: str, expected: int, timeout_s: float, job=None, samples=None):
    """Seconds until summary.json counts `expected` input records and balances (or None)."""
    begin = time.monotonic()
    first = None
    while time.monotonic() - begin < timeout_s:
        summary = summary_of(out)
        if summary and summary["input_records"] and first is None:
            first = time.monotonic()
        if summary and summary["input_records"] >= expected and summary["balanced"]:
            return time.monotonic(), first, summary
        if job is not None and samples is not None:
            samples.append((time.monotonic(), psutil.Process(job.pid).memory_info().rss))
        time.sleep(0.25)
    return None, first, summary_of(out)


def wait_written(out: str, timeout_s: float = 60) -> bool:
    """Gap and corrupt-period files hold as many rows as the summary counts (sinks flush every
    --output_flush_seconds, the summary every 5 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        summary = summary_of(out) or {}
        try:
            gaps, corrupt = len(read_table(out, "gaps")), len(read_table(out, "corrupt_periods"))
        except Exception:   # a file being written
            gaps = corrupt = -1
        if summary and gaps == sum(summary["gaps"].values()) and corrupt == summary["corrupt_periods"]:
            return True
        time.sleep(0.5)
    return False


def stop(job) -> None:
    job.terminate()
    try:
        job.wait(timeout=30)
    except subprocess.TimeoutExpired:
        job.kill()


def backlog(args, emu, work) -> dict:
    path = os.path.join(work, "feed.jsonl")
    lines = feed(path, args.events, int(time.time() * 1000) - 3600_000)
    batch_out = os.path.join(work, "batch")
    assert run_batch(["--input", path, "--output", batch_out]) == 0
    topic = emu.create_topic(emu.unique_name("feed"))
    subscription = emu.create_subscription(topic, emu.unique_name("feed-sub"))
    alerts = emu.create_topic(emu.unique_name("alerts"))
    counts = publish(topic, [path], records_per_message=args.records_per_message,
                     compress=args.records_per_message > 1, progress=False)
    out = os.path.join(work, "stream")
    launched = time.monotonic()
    job = start_job(emu, subscription, out, alerts)
    try:
        done, first, summary = wait_counted(out, len(lines), args.timeout)
        written = done is not None and wait_written(out)
    finally:
        stop(job)
    result = {"mode": "backlog", "records": len(lines), "messages": counts["messages"],
              "records_per_message": args.records_per_message,
              "publish_s": counts["seconds"], "counted": (summary or {}).get("input_records")}
    if done is None:
        result["error"] = f"not all records counted within {args.timeout} s"
        return result
    result.update(job_wall_s=round(done - launched, 1), drain_s=round(done - first, 1),
                  records_per_s=round(len(lines) / max(done - first, 1e-9)),
                  late_events=summary["dead_letters"].get("late_event", 0),
                  input_lag_max_s=summary.get("input_lag_max_s"))
    result["equals_batch"] = written and comparable(out) == comparable(batch_out)
    return result


def live(args, emu, work) -> dict:
    topic = emu.create_topic(emu.unique_name("feed"))
    subscription = emu.create_subscription(topic, emu.unique_name("feed-sub"))
    alerts = emu.create_topic(emu.unique_name("alerts"))
    out = os.path.join(work, "stream")
    job = start_job(emu, subscription, out, alerts)
    samples = []
    try:
        time.sleep(10)                                     # start-up
        events = int(args.rate * args.seconds)
        path = os.path.join(work, "feed.jsonl")
        lines = feed(path, events, int(time.time() * 1000))
        t0 = time.monotonic()
        import threading
        publisher = threading.Thread(target=publish, args=(topic, [path]), kwargs=dict(
            records_per_message=args.records_per_message, per_second=args.rate, progress=False))
        publisher.start()
        while publisher.is_alive():
            samples.append((time.monotonic(), psutil.Process(job.pid).memory_info().rss))
            time.sleep(1)
        last_sent = time.monotonic()
        done, _, summary = wait_counted(out, len(lines), 120, job, samples)
    finally:
        stop(job)
    rss = [(round(t - t0), r // 2**20) for t, r in samples if t >= t0]
    at = lambda s: next((r for t, r in rss if t >= s), None)  # noqa: E731
    return {"mode": "live", "rate": args.rate, "seconds": args.seconds, "records": len(lines),
            "counted_after_last_message_s": None if done is None else round(done - last_sent, 1),
            "late_events": (summary or {}).get("dead_letters", {}).get("late_event", 0),
            "input_lag_max_s": (summary or {}).get("input_lag_max_s"),
            "rss_mib_at_60s": at(60), "rss_mib_at_600s": at(600), "rss_mib_last": rss[-1][1] if rss else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("backlog", "live"))
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--records_per_message", type=int, default=500)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--work_dir", default=None)
    args = parser.parse_args(argv)
    port = free_local_port()
    start_emulator(port)
    emu = PubSubEmulator(host=f"127.0.0.1:{port}")
    os.environ["PUBSUB_EMULATOR_HOST"] = emu.host
    work = args.work_dir or tempfile.mkdtemp(prefix="feedcheck-stream-bench-")
    try:
        result = (backlog if args.mode == "backlog" else live)(args, emu, work)
    finally:
        emu.close()
        stop_emulator(port)
    result["work_dir"] = work
    print(json.dumps(result, indent=2))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
