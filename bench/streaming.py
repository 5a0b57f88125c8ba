"""Streaming benchmark on the real Pub/Sub emulator with DirectRunner (a benchmark, never a timed test).

    .venv/bin/python -m bench.streaming backlog --events 100000 [--records_per_message 500]
    .venv/bin/python -m bench.streaming burst --events 400000
    .venv/bin/python -m bench.streaming live --rate 1000 --seconds 600
    .venv/bin/python -m bench.streaming backlog --events 400000 --book_checks   # with book checks

backlog: a faulted synthetic feed an hour old is published before the job starts (as after
downtime); the job drains it (figures include the job's start-up). burst: the same published at
once to a running, idle job (the drain rate alone). Reports records/s, drain time and whether every output equals the
batch run's on the same records (gap rows, corrupt periods, summary counts, no late_event).
live: the job runs first; the feed is published at --rate records/s for --seconds; reports how
long after the last message every record was counted, the input lag and the job's RSS over time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import psutil

from beam_pipeline.cli import main as run_batch
from beam_pipeline.publish import publish
from tests.tooling.pubsub_emulator import PubSubEmulator, free_local_port, start_emulator, stop_emulator
from tests.tooling.streaming_job import (comparable, start_job, stop_job, summary_of,
                                         wait_counted, wait_written)
from tests.tooling.synthetic import default_faults, generate, write_lines

BAD = ["bad_json", "mistyped_field", "invalid_ids"]


def feed(path: str, events: int, start_ms: int, seed: int = 7) -> list:
    lines, _ = generate(events, seed=seed, faults=default_faults(), bad_records=BAD, ignored=20,
                        start_ms=start_ms)
    write_lines(path, lines)
    return lines


def wait_counted_sampling(out: str, expected: int, timeout_s: float, job, samples: list):
    """wait_counted, sampling the job's RSS meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, summary = wait_counted(out, expected, 1)
        if done:
            return done, summary
        samples.append((time.monotonic(), psutil.Process(job.pid).memory_info().rss))
    return None, summary_of(out)


def backlog(args, emu, work) -> dict:
    path = os.path.join(work, "feed.jsonl")
    lines = feed(path, args.events, int(time.time() * 1000) - 3600_000)
    batch_out = os.path.join(work, "batch")
    assert run_batch(["--input", path, "--output", batch_out, *args.job_options]) == 0
    topic = emu.create_topic(emu.unique_name("feed"))
    subscription = emu.create_subscription(topic, emu.unique_name("feed-sub"))
    alerts = emu.create_topic(emu.unique_name("alerts"))
    counts = publish(topic, [path], records_per_message=args.records_per_message,
                     compress=args.records_per_message > 1, progress=False)
    out = os.path.join(work, "stream")
    launched = time.monotonic()
    job = start_job(emu.host, subscription, out, "--alerts_topic", alerts, *args.job_options)
    try:
        done, summary = wait_counted(out, len(lines), args.timeout)
        written = done is not None and wait_written(out)
    finally:
        stop_job(job)
    result = {"mode": "backlog", "records": len(lines), "messages": counts["messages"],
              "records_per_message": args.records_per_message,
              "publish_s": counts["seconds"], "counted": (summary or {}).get("input_records")}
    if done is None:
        result["error"] = f"not all records counted within {args.timeout} s"
        return result
    result.update(job_wall_s=round(done - launched, 1),
                  records_per_s_with_startup=round(len(lines) / (done - launched)),
                  late_events=summary["dead_letters"].get("late_event", 0),
                  input_lag_max_s=summary.get("input_lag_max_s"))
    result["equals_batch"] = written and comparable(out) == comparable(batch_out)
    return result


def burst(args, emu, work) -> dict:
    """A running, idle job gets --events records at once: the drain rate without start-up."""
    topic = emu.create_topic(emu.unique_name("feed"))
    subscription = emu.create_subscription(topic, emu.unique_name("feed-sub"))
    out = os.path.join(work, "stream")
    path = os.path.join(work, "feed.jsonl")
    lines = feed(path, args.events, int(time.time() * 1000) - 600_000)
    batch_out = os.path.join(work, "batch")
    assert run_batch(["--input", path, "--output", batch_out, *args.job_options]) == 0
    job = start_job(emu.host, subscription, out, *args.job_options)
    try:
        time.sleep(15)                                     # start-up, then idle pulls
        begin = time.monotonic()
        counts = publish(topic, [path], records_per_message=args.records_per_message,
                         compress=args.records_per_message > 1, progress=False)
        done, summary = wait_counted(out, len(lines), args.timeout)
        written = done is not None and wait_written(out)
    finally:
        stop_job(job)
    if done is None:
        return {"mode": "burst", "error": f"not all records counted within {args.timeout} s"}
    return {"mode": "burst", "records": len(lines), "messages": counts["messages"],
            "records_per_message": args.records_per_message, "publish_s": counts["seconds"],
            "drain_s": round(done - begin, 1), "records_per_s": round(len(lines) / (done - begin)),
            "late_events": summary["dead_letters"].get("late_event", 0),
            "equals_batch": written and comparable(out) == comparable(batch_out)}


def live(args, emu, work) -> dict:
    topic = emu.create_topic(emu.unique_name("feed"))
    subscription = emu.create_subscription(topic, emu.unique_name("feed-sub"))
    alerts = emu.create_topic(emu.unique_name("alerts"))
    out = os.path.join(work, "stream")
    job = start_job(emu.host, subscription, out, "--alerts_topic", alerts, *args.job_options)
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
        done, summary = wait_counted_sampling(out, len(lines), 120, job, samples)
    finally:
        stop_job(job)
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
    parser.add_argument("mode", choices=("backlog", "burst", "live"))
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--records_per_message", type=int, default=500)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--work_dir", default=None)
    parser.add_argument("--book_checks", action="store_true",
                        help="run the job (and the batch run it is compared with) with --book_checks")
    parser.add_argument("--port", type=int, default=None, help="the emulator's port (default: a free one)")
    args = parser.parse_args(argv)
    args.job_options = ["--book_checks"] if args.book_checks else []
    port = args.port or free_local_port()
    start_emulator(port)
    emu = PubSubEmulator(host=f"127.0.0.1:{port}")
    os.environ["PUBSUB_EMULATOR_HOST"] = emu.host
    work = args.work_dir or tempfile.mkdtemp(prefix="feedcheck-stream-bench-")
    try:
        result = {"backlog": backlog, "burst": burst, "live": live}[args.mode](args, emu, work)
    finally:
        emu.close()
        stop_emulator(port)
    result["work_dir"] = work
    print(json.dumps(result, indent=2))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
