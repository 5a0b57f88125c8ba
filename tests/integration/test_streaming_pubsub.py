"""Streaming end to end on the real Pub/Sub emulator: the same gap rows as batch, alerts and
recovery requests published, a clean stop on SIGTERM, and the gap-to-alert delay measured. The feed
holds Binance and three other rule shapes in their own wire format, each with its faults: OKX
(previous-link, in-stream snapshots, its maintenance reset), Gate.io (range-plus-one ranges, REST
snapshots) and Bybit v5 (one id, the `u == 1` reset)."""
import heapq
import json
import os
import signal
import subprocess
import sys
import threading
import time

from beam_pipeline.cli import main
from tests.tooling.synthetic import generate, write_lines
from tests.tooling.synthetic_venues import as_envelopes, faults_for, generate_venue
from tests.conftest import REPO

FAULTS = [("small_gap", 0), ("medium_gap_resynced", 0), ("large_gap", 0), ("reorder", 0),
          ("medium_gap_timeout", 1), ("duplicate", 1), ("medium_gap_resynced", 2)]
# a resync snapshot is published up to 0.8 s after its gap: a 3 s wait leaves the replay room to lag
# under load (with 1 s, the gap came out timed out in streaming on a loaded machine, 2026-12-07)
COMMON = ["--recovery_timeout", "3", "--error_window", "5"]
# previous-link, range-plus-one with REST snapshots, one id: each with its gap classes and reset (the
# other faults are covered in batch by tests/beam/test_venue_synthetic.py; few messages keep the
# load, and so the wall time, near the Binance feed's alone)
VENUE_FAULTS = {"okx": ["medium_gap_resynced", "id_reset", "medium_gap_timeout", "duplicate"],
                "gateio": ["small_gap", "medium_gap_resynced", "large_gap", "id_reset"],
                "bybit": ["id_reset", "medium_gap_timeout", "reorder", "small_gap"]}
VENUES = tuple(VENUE_FAULTS)


def _venue_feeds(start, step_ms):
    """Each of VENUES with its faults (VENUE_FAULTS), 14 messages (3.5 s > the 3 s recovery
    timeout) apart, live from `start` -> {exchange: (envelope lines, Expected)}. A resync snapshot
    comes 30 ms after its gap (max_held=0), well inside the timeout whatever the load."""
    feeds = {}
    for exchange, faults in VENUE_FAULTS.items():
        assert set(faults) <= set(faults_for(exchange))
        items, expected = generate_venue(exchange, (len(faults) + 1) * 14, 5, faults,
                                         ["bad_price_level"], spacing=14, step_ms=step_ms,
                                         start_ms=start, max_held=0)
        feeds[exchange] = (as_envelopes(exchange, items), expected)
    return feeds


def _by_receive_time(*feeds):
    """The feeds' lines merged by receive time, each feed's own order kept (a record without one,
    a bad record, goes with the one before it)."""
    keyed = []
    for index, lines in enumerate(feeds):
        at, rows = 0, []
        for position, line in enumerate(lines):
            try:
                at = json.loads(line)["recv_ts_ms"]
            except (ValueError, KeyError, TypeError):
                pass
            rows.append((at, index, position, line))
        keyed.append(rows)
    return [line for _, _, _, line in heapq.merge(*keyed)]


def _gap_rows(out):
    return sorted((r["exchange"], r["market"], r["symbol"], r["last_good_id"], r["next_first_id"], r["gap_size"],
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
    binance, expected = generate(480, seed=5, faults=FAULTS, bad_records=["bad_json", "mistyped_field"],
                                 ignored=3, spacing=40, start_ms=start, step_ms=250)
    venues = _venue_feeds(start, 250)
    lines = _by_receive_time(binance, *(feed for feed, _ in venues.values()))
    venue_gaps = [gap for _, part in venues.values() for gap in part.gaps]

    # The batch answer on the same records.
    write_lines(str(tmp_path / "feed.jsonl"), lines)
    assert main(["--input", str(tmp_path / "feed.jsonl"), "--output", str(tmp_path / "batch"),
                 *COMMON]) == 0
    batch_gaps = _gap_rows(outputs(tmp_path / "batch"))
    assert len(batch_gaps) == len(expected.gaps) + len(venue_gaps)
    assert {g[0] for g in batch_gaps} == {"binance", *VENUES}

    try:
        # the venues' messages span the same event time as Binance's: publish them as fast
        _replay(emu, feed, lines, per_second=16 * len(lines) / len(binance))
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
    probe_gaps = [g for g in stream_gaps if g[4] == last_u + 5001]
    assert len(probe_gaps) == 1 and probe_gaps[0][6] == "large"
    assert [g for g in stream_gaps if g[4] != last_u + 5001] == batch_gaps

    summary = outputs(out).summary()
    assert summary["input_records"] == len(lines) + 1 + heartbeat.sent and summary["balanced"]
    assert summary["clean_records"] == (outputs(tmp_path / "batch").summary()["clean_records"]
                                        + 1 + heartbeat.sent)
    assert outputs(out).parquet_rows("error_counts")
    requests = [json.loads(data) for data, _ in emu.pull_all(recovery_sub, max_wait_s=5)]
    # a medium gap asks from the id after the last good one; a reset revealed by a delta (not by
    # Bybit's u == 1 snapshot) asks from the new epoch's first id
    asked = [(g["exchange"], g["market"], g["symbol"], g["last_good_id"] + 1)
             for g in expected.gaps + venue_gaps if g["gap_class"] == "medium"]
    asked += [(g["exchange"], g["market"], g["symbol"], g["next_first_id"]) for g in venue_gaps
              if g["gap_class"] == "reset" and g["exchange"] != "bybit"]
    assert sorted({(r["exchange"], r["market"], r["symbol"], r["from_id"]) for r in requests}) == \
        sorted(asked)
