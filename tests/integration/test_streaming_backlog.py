"""Streaming after downtime, on the real Pub/Sub emulator with DirectRunner: a backlog published
before the job starts (batched and single-record messages) gives exactly the batch run's answer
with no late_event, a message that claims gzip and is not is a read_error dead letter, the backlog
raises the backpressure alert and resolves it, the publish CLI round-trips a capture, and a silent
symbol's stall alert arrives within --stall_timeout + 5 s, idle or with other symbols flowing."""
import gzip
import json
import os
import random
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq

from beam_pipeline.cli import main as run_batch
from beam_pipeline.publish import batches_of, message_of, publish
from beam_pipeline.readback import read
from tests.conftest import REPO
from tests.tooling.streaming_job import (comparable, job_log, start_job, stop_job,
                                         wait_counted, wait_written)
from tests.tooling.synthetic import default_faults, generate, write_lines
from transforms.layout import data_files

HOUR_MS = 3600_000


def _topic_and_subscription(emu, name):
    topic = emu.create_topic(emu.unique_name(name))
    return topic, emu.create_subscription(topic, emu.unique_name(f"{name}-sub"))


FEW_FAULTS = [("small_gap", 0), ("reorder", 0), ("medium_gap_resynced", 1), ("duplicate", 2),
              ("medium_gap_timeout", 3)]


def _backlog_feed(tmp_path, events, seed, faults):
    """A faulted feed whose event times are an hour old (the job was down), and its batch answer.
    Half a second between a symbol's messages: 150 of them span the recovery timeout."""
    lines, _ = generate(events, seed=seed, faults=faults, ignored=5, spacing=150, step_ms=500,
                        bad_records=["bad_json", "invalid_ids"],
                        start_ms=int(time.time() * 1000) - HOUR_MS)
    path = str(tmp_path / "feed.jsonl")
    write_lines(path, lines)
    assert run_batch(["--input", path, "--output", str(tmp_path / "batch")]) == 0
    return path, lines


def _drained(out, expected_records, job):
    done, summary = wait_counted(out, expected_records, 180)
    assert done is not None, f"not every record was counted: {summary}\n{job_log(out)[-3000:]}"
    assert wait_written(out), f"gap rows not all written\n{job_log(out)[-3000:]}"
    return summary


def _alerts_until(emu, subscription, condition, timeout_s):
    """Alerts pulled from the alerts topic until `condition(alerts)` holds, with arrival times."""
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline and not condition(seen):
        seen += [(time.monotonic(), json.loads(data))
                 for data, _ in emu.pull_all(subscription, max_wait_s=1, settle_s=0.3)]
    return seen


def _written_alerts(out):
    return [row for name in data_files(os.path.join(out, "alerts"), ".parquet")
            for row in pq.read_table(name).to_pylist()]


def test_a_backlog_of_batched_messages_equals_the_batch_run(pubsub_emulator, tmp_path):
    emu = pubsub_emulator
    path, lines = _backlog_feed(tmp_path, 6000, 11, default_faults())
    feed, subscription = _topic_and_subscription(emu, "backlog")
    alerts, alerts_sub = _topic_and_subscription(emu, "alerts")
    # Published out of order (Pub/Sub may deliver a backlog so): the answer must not change.
    messages = [message_of(batch, compress=True) for batch in batches_of(path, "auto", 200, 1 << 20)]
    assert sum(1 for _ in messages) == -(-len(lines) // 200)
    random.Random(3).shuffle(messages)
    for future in [emu.publisher.publish(feed, data, **attributes) for data, attributes in messages]:
        future.result(timeout=60)
    not_gzip = emu.publish(feed, b'{"this is": "not gzip"}', content_encoding="gzip")
    time.sleep(3)                          # the backlog is older than --lag_warning when read

    out = str(tmp_path / "stream")
    job = start_job(emu.host, subscription, out, "--alerts_topic", alerts, "--lag_warning", "2")
    try:
        summary = _drained(out, len(lines) + 1, job)
        alerts_seen = _alerts_until(emu, alerts_sub, lambda seen: any(
            a["rule"] == "backpressure_resolved" for _, a in seen), 40)
        deadline = time.monotonic() + 20          # alerts/ is written every --output_flush_seconds
        while time.monotonic() < deadline and not {"backpressure", "backpressure_resolved"} <= {
                a["rule"] for a in _written_alerts(out)}:
            time.sleep(0.5)
    finally:
        stop_job(job)

    expected = comparable(str(tmp_path / "batch"))
    expected["summary"]["input_records"] += 1
    expected["summary"]["dead_letters"]["read_error"] = 1
    expected["summary"]["dead_letters"] = dict(sorted(expected["summary"]["dead_letters"].items()))
    assert comparable(out) == expected
    assert "late_event" not in summary["dead_letters"]

    [letter] = [d for d in read(out, "dead_letter").to_pylist() if d["reason"] == "read_error"]
    assert letter["payload"] == b'{"this is": "not gzip"}'
    assert letter["source"] == f"pubsub:{not_gzip}" and "gzip" in letter["message"]

    rules = [a["rule"] for _, a in alerts_seen if a["rule"].startswith("backpressure")]
    assert rules[0] == "backpressure" and rules[-1] == "backpressure_resolved", alerts_seen
    assert summary["input_lag_max_s"] >= 2
    assert {"backpressure", "backpressure_resolved"} <= {a["rule"] for a in _written_alerts(out)}


def test_a_backlog_of_single_record_messages_equals_the_batch_run(pubsub_emulator, tmp_path):
    emu = pubsub_emulator
    path, lines = _backlog_feed(tmp_path, 2000, 12, FEW_FAULTS)
    feed, subscription = _topic_and_subscription(emu, "singles")
    counts = publish(feed, [path], records_per_message=1, compress=False, progress=False)
    assert counts["messages"] == len(lines)

    out = str(tmp_path / "stream")
    job = start_job(emu.host, subscription, out)
    try:
        summary = _drained(out, len(lines), job)
    finally:
        stop_job(job)
    assert comparable(out) == comparable(str(tmp_path / "batch"))
    assert "late_event" not in summary["dead_letters"]
    sources = {d["source"] for d in read(out, "dead_letter").to_pylist()}
    assert all(source.startswith("pubsub:") for source in sources) and len(sources) == 2


def test_the_publish_command_round_trips_a_capture_file(pubsub_emulator, captures):
    emu = pubsub_emulator
    feed, subscription = _topic_and_subscription(emu, "publish")
    capture = next(path for path in captures if path.endswith("BINANCE_FUTURES.ws.1.0"))
    env = dict(os.environ, PUBSUB_EMULATOR_HOST=emu.host, PYTHONPATH=REPO)
    result = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.publish", "--topic", feed, capture,
         "--records_per_message", "300", "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with open(capture, "rb") as handle:
        records = [line.rstrip(b"\r\n") for line in handle.read().split(b"\n")[1:] if line.strip()]
    assert f"published {len(records):,} records from 1 file(s) in 6 messages" in result.stdout

    messages = emu.pull_all(subscription, max_wait_s=20, expected=6)
    received = []
    for data, attributes in sorted(messages, key=lambda m: m[0]):
        assert attributes == {"format": "cryptofeed", "exchange": "binance", "market": "usdm",
                              "content_encoding": "gzip"}
        received += gzip.decompress(data).rstrip(b"\n").split(b"\n")
    assert sorted(received) == sorted(records)

    missing = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.publish", "--topic", "feed", capture],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "--topic must be projects/" in missing.stderr


class _Flow(threading.Thread):
    """One symbol's live, gap-free feed: a snapshot, then a delta every 100 ms, until stopped."""

    def __init__(self, emu, topic, symbol):
        super().__init__(daemon=True)
        self.emu, self.topic, self.symbol = emu, topic, symbol
        self.stopped, self.last_sent = threading.Event(), None

    def _send(self, kind, payload):
        now = int(time.time() * 1000)
        self.emu.publish(self.topic, json.dumps({
            "exchange": "binance", "market": "spot", "symbol": self.symbol, "recv_ts_ms": now,
            "type": kind, "payload": payload}).encode())
        self.last_sent = time.monotonic()

    def run(self):
        self._send("snapshot", {"lastUpdateId": 0, "bids": [], "asks": []})
        next_id = 1
        while not self.stopped.wait(0.1):
            self._send("delta", {"e": "depthUpdate", "E": int(time.time() * 1000), "s": self.symbol,
                                 "U": next_id, "u": next_id, "b": [["1.0", "1"]], "a": []})
            next_id += 1

    def stop(self):
        self.stopped.set()
        self.join(timeout=10)


def test_a_stall_alert_arrives_within_the_timeout_idle_or_not(pubsub_emulator, tmp_path):
    emu = pubsub_emulator
    feed, subscription = _topic_and_subscription(emu, "stalls")
    alerts, alerts_sub = _topic_and_subscription(emu, "stall-alerts")
    out = str(tmp_path / "stream")
    stall_timeout = 4
    job = start_job(emu.host, subscription, out, "--alerts_topic", alerts,
                    "--stall_timeout", str(stall_timeout))
    delays = {}
    try:
        time.sleep(8)                                       # start-up
        for symbol, background in (("IDLEUSDT", None), ("BUSYUSDT", "FLOWUSDT")):
            flowing = _Flow(emu, feed, background) if background else None
            if flowing:
                flowing.start()
            silent = _Flow(emu, feed, symbol)
            silent.start()
            time.sleep(3)
            silent.stop()
            stalled = _alerts_until(emu, alerts_sub, lambda seen: any(
                a["rule"] == "stall" and a["symbol"] == symbol for _, a in seen), 30)
            if flowing:
                flowing.stop()
            arrival = [t for t, a in stalled if a["rule"] == "stall" and a["symbol"] == symbol]
            assert arrival, f"no stall alert for {symbol}: {stalled}\n{job_log(out)[-2000:]}"
            delays[symbol] = arrival[0] - silent.last_sent
            assert not [a for _, a in stalled if a["rule"] == "stall" and a["symbol"] == "FLOWUSDT"]
    finally:
        stop_job(job)
    print(f"\nstall alert after the last record: {delays} (stall_timeout {stall_timeout} s)")
    assert all(delay <= stall_timeout + 5 for delay in delays.values()), delays
