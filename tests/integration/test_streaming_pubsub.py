"""Streaming end to end on the real Pub/Sub emulator: the same gap rows as batch, alerts and
recovery requests published, a clean stop on SIGTERM, and the gap-to-alert delay measured."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

from beam_pipeline.cli import main
from tests.tooling.synthetic import generate, write_lines
from tests.conftest import REPO

FAULTS = [("small_gap", 0), ("medium_gap_resynced", 0), ("large_gap", 0), ("reorder", 0),
          ("medium_gap_timeout", 1), ("duplicate", 1), ("medium_gap_resynced", 2)]
COMMON = ["--recovery_timeout", "1", "--error_window", "5"]


def _gap_rows(out):
    return sorted((r["market"], r["symbol"], r["last_good_id"], r["next_first_id"], r["gap_size"],
                   r["gap_class"], r["action"], r["resolution"], int(r["event_time"].timestamp() * 1000))
                  for r in out.parquet_rows("gaps"))


def _wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _spot_btc_last_ids(lines):
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (record["market"], record["symbol"], record["type"]) == ("spot", "BTCUSDT", "delta"):
            yield record["payload"].get("u", 0)


class _Heartbeat(threading.Thread):
    """A continuous, gap-free feed of one more symbol (a snapshot, then a delta every 100 ms)."""

    def __init__(self, emu, topic):
        super().__init__(daemon=True)
        self.emu, self.topic, self.sent = emu, topic, 0
        self._stop_event = threading.Event()

    def _publish(self, kind, payload):
        now = int(time.time() * 1000)
        record = {"exchange": "binance", "market": "spot", "symbol": "HBTUSDT", "recv_ts_ms": now,
                  "type": kind, "payload": payload}
        self.emu.publish(self.topic, json.dumps(record).encode())
        self.sent += 1

    def run(self):
        self._publish("snapshot", {"lastUpdateId": 0, "bids": [], "asks": []})
        next_id = 1
        while not self._stop_event.wait(0.1):
            now = int(time.time() * 1000)
            self._publish("delta", {"e": "depthUpdate", "E": now, "s": "HBTUSDT", "U": next_id,
                                    "u": next_id, "b": [["1.0", "1"]], "a": []})
            next_id += 1

    def stop(self):
        self._stop_event.set()
        self.join(timeout=10)


def _replay(emu, topic, lines, per_second):
    """Publish in order at a steady rate, as a collector would."""
    begin = time.monotonic()
    futures = []
    for index, line in enumerate(lines):
        pause = begin + index / per_second - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        futures.append(emu.publisher.publish(topic, line))
    for future in futures:
        future.result(timeout=60)


def _summary_if_done(folder, expected_inputs):
    try:
        with open(os.path.join(folder, "summary.json")) as handle:
            summary = json.load(handle)
    except (OSError, ValueError):
        return None
    return summary if summary["input_records"] == expected_inputs and summary["balanced"] else None


def test_streaming_on_the_emulator_matches_batch(pubsub_emulator, tmp_path, outputs):
    emu = pubsub_emulator
    feed = emu.create_topic(emu.unique_name("feed"))
    subscription = emu.create_subscription(feed, emu.unique_name("feed-sub"))
    alerts = emu.create_topic(emu.unique_name("alerts"))
    alerts_sub = emu.create_subscription(alerts, emu.unique_name("alerts-sub"))
    recovery = emu.create_topic(emu.unique_name("recovery"))
    recovery_sub = emu.create_subscription(recovery, emu.unique_name("recovery-sub"))

    out = tmp_path / "stream"
    env = dict(os.environ, PUBSUB_EMULATOR_HOST=emu.host, PYTHONPATH=REPO)
    job = subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline", "--streaming", "--input_subscription", subscription,
         "--output", str(out), "--recovery_topic", recovery, "--alerts_topic", alerts,
         "--output_flush_seconds", "2", *COMMON],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(8)   # let the job start pulling

    # A live feed, replayed in real time: event times start now (the DirectRunner's Pub/Sub
    # watermark is the wall clock), 4 symbols x one message per 250 ms = 16 messages a second.
    start = int(time.time() * 1000) + 1000
    lines, expected = generate(480, seed=5, faults=FAULTS, bad_records=["bad_json", "mistyped_field"],
                               ignored=3, spacing=40, start_ms=start, step_ms=250)

    # The batch answer on the same records.
    write_lines(str(tmp_path / "feed.jsonl"), lines)
    assert main(["--input", str(tmp_path / "feed.jsonl"), "--output", str(tmp_path / "batch"),
                 *COMMON]) == 0
    batch_gaps = _gap_rows(outputs(tmp_path / "batch"))
    assert len(batch_gaps) == len(expected.gaps)

    try:
        _replay(emu, feed, lines, per_second=16)
        _wait_for(lambda: _summary_if_done(out, len(lines)), 60, "the whole feed to be accounted for")

        # Detection delay: one more delta that skips 5000 ids (a large gap) on spot BTCUSDT.
        last_u = max(_spot_btc_last_ids(lines))
        emu.pull_all(alerts_sub, max_wait_s=3, settle_s=1)     # drain the feed's own alerts
        now = int(time.time() * 1000)
        probe_window = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((now - now % 5000) / 1000))
        probe = {"exchange": "binance", "market": "spot", "symbol": "BTCUSDT", "recv_ts_ms": now,
                 "type": "delta", "payload": {"e": "depthUpdate", "E": now, "s": "BTCUSDT",
                                              "U": last_u + 5001, "u": last_u + 5002,
                                              "b": [["1.00", "1"]], "a": []}}
        # DirectRunner advances timers only when a pull returns: keep the feed flowing, as live.
        heartbeat = _Heartbeat(emu, feed)
        heartbeat.start()
        time.sleep(2)
        sent = time.monotonic()
        emu.publish(feed, json.dumps(probe).encode())

        def probe_alert():
            for data, _ in emu.pull_all(alerts_sub, max_wait_s=2, settle_s=0.5):
                alert = json.loads(data)
                if alert["rule"] == "gap_rate" and (alert["market"], alert["symbol"]) == (
                        "spot", "BTCUSDT") and alert["window_start"].startswith(probe_window):
                    return time.monotonic()
            return None
        try:
            alerted = _wait_for(probe_alert, 90, "the probe's gap-rate alert on the alerts topic")
        finally:
            heartbeat.stop()
        delay = alerted - sent
        print(f"detection delay (publish of the gap-revealing message -> alert received): {delay:.2f} s")
        (tmp_path / "detection_delay.txt").write_text(f"{delay:.3f}\n")

        _wait_for(lambda: _summary_if_done(out, len(lines) + 1 + heartbeat.sent), 90,
                  "the probe and heartbeat to be accounted for")
        _wait_for(lambda: len(_gap_rows(outputs(out))) == len(batch_gaps) + 1, 90,
                  "every gap row in gaps/")
    except AssertionError as failure:
        job.send_signal(signal.SIGTERM)
        log, _ = job.communicate(timeout=60)
        listing = sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []
        raise AssertionError(f"{failure}\n--- batch gaps: {batch_gaps}\n--- stream gaps: "
                             f"{_gap_rows(outputs(out))}\n--- summary: {outputs(out).summary()}"
                             f"\n--- files: {listing}"
                             f"\n--- job log:\n{log[-3000:]}") from None
    job.send_signal(signal.SIGTERM)
    log, _ = job.communicate(timeout=60)
    assert job.returncode == 0, log[-3000:]
    assert "stopping on SIGTERM" in log

    stream_gaps = _gap_rows(outputs(out))
    probe_gaps = [g for g in stream_gaps if g[3] == last_u + 5001]
    assert len(probe_gaps) == 1 and probe_gaps[0][5] == "large"
    assert [g for g in stream_gaps if g[3] != last_u + 5001] == batch_gaps

    summary = outputs(out).summary()
    assert summary["input_records"] == len(lines) + 1 + heartbeat.sent and summary["balanced"]
    assert summary["clean_records"] == (outputs(tmp_path / "batch").summary()["clean_records"]
                                        + 1 + heartbeat.sent)
    assert outputs(out).parquet_rows("error_counts")
    requests = [json.loads(data) for data, _ in emu.pull_all(recovery_sub, max_wait_s=5)]
    assert sorted({(r["market"], r["symbol"], r["from_id"]) for r in requests}) == sorted(
        (g["market"], g["symbol"], g["last_good_id"] + 1) for g in expected.gaps
        if g["gap_class"] == "medium")
