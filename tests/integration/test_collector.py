"""The live collector against a local fake exchange (tests/tooling/fake_exchange.py): network
partitions, REST failures, a stall, a planned reconnect, an exchange that accepts and closes at once
(the backoff, one marker per outage, the gaps a batch run reports), giving up; and end to end, fake
exchange -> collector -> Pub/Sub emulator -> streaming pipeline -> recovery requests -> collector."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from beam_pipeline.cli import main as pipeline_main
from beam_pipeline.collector import read_metrics
from beam_pipeline.readback import read
from tests.conftest import REPO
from tests.tooling.fake_exchange import FakeExchange
from tests.tooling.streaming_job import job_log, start_job, stop_job, wait_counted, wait_written

QUICK = ["--initial_backoff", "0.1", "--max_backoff", "0.5", "--status_seconds", "1"]


def _collector(exchange, *extra, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline.collector", "--exchange", exchange.exchange,
         "--market", exchange.market,
         "--symbols", ",".join(exchange.symbols), "--ws_url", exchange.ws_url,
         "--rest_url", exchange.rest_url, *QUICK, *extra],
        cwd=REPO, env=dict(env or os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, timeout_s, what, proc=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the collector exited ({proc.returncode}) while waiting for "
                                 f"{what}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    log = ""
    if proc is not None:
        proc.kill()
        log = proc.communicate()[0][-4000:]
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{log}")


def _settled(metrics_file, snapshots):
    """At least `snapshots` taken, and none waiting."""
    def check():
        status = read_metrics(metrics_file)
        return status.get("snapshots", 0) >= snapshots and status.get("snapshots_pending") == 0
    return check


def _ids_written(folder):
    deltas, snapshots = [], []
    for path in sorted(folder.iterdir()):
        with gzip.open(path) as handle:
            for line in handle:
                record = json.loads(line)
                if record["type"] == "delta":
                    deltas.append((record["symbol"], record["payload"]["u"]))
                elif record["type"] == "snapshot":
                    snapshots.append((record["symbol"], record["payload"]["lastUpdateId"]))
    return deltas, snapshots


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=60)
    return proc.returncode, log


def test_partitions_rest_failures_a_stall_and_a_planned_reconnect_to_files(tmp_path):
    exchange = FakeExchange("usdm").start()
    metrics_file = str(tmp_path / "metrics.json")
    files = tmp_path / "capture"
    proc = _collector(exchange, "--output_dir", str(files), "--metrics_file", metrics_file,
                      "--idle_timeout", "1", "--planned_reconnect", "3")
    try:
        def counted(name, at_least):
            return lambda: read_metrics(metrics_file).get(name, 0) >= at_least
        _wait_for(counted("snapshots", 4), 30, "the first snapshots", proc)
        _wait_for(counted("planned_reconnects", 1), 30, "a planned reconnect", proc)
        exchange.rest_failures([429, 500])           # the snapshots after the next reconnect
        exchange.refuse_connections(1.5)
        exchange.drop_connections()                  # partition 1: refused for a while
        _wait_for(counted("reconnects", 1), 30, "the reconnect after the partition", proc)
        exchange.stall()                             # partition 2: open, but silent past 1 s
        _wait_for(counted("reconnects", 2), 30, "the reconnect after the stall", proc)
        # a snapshot wanted while one of the symbol is queued is that one (fetched after the connect)
        _wait_for(_settled(metrics_file, 8), 60, "the snapshots after the reconnects", proc)
        time.sleep(1)
        code, log = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        exchange.stop()
    assert code == 0, log[-3000:]
    assert exchange.stats["rest_429"] == 1 and exchange.stats["rest_500"] == 1
    assert exchange.stats["refused"] >= 1
    status = read_metrics(metrics_file)
    assert status["reconnects"] >= 2 and status["disconnects"] == status["reconnects"]
    assert status["planned_reconnects"] >= 1 and status["snapshot_failures"] == 0
    assert "msg/s" in log and "reconnected after" in log

    # the folder as it is, read by a batch run
    out = tmp_path / "batch"
    assert pipeline_main(["--input", str(files), "--output", str(out)]) == 0
    with open(out / "summary.json") as handle:
        summary = json.load(handle)
    assert summary["balanced"] and summary["dead_letters"] == {}
    assert summary["control"] == status["disconnects"] * len(exchange.symbols)
    # the planned overlaps wrote no frame twice; a snapshot may be (one fetched again because it
    # was requested before a reconnect it completed after): those are the duplicates
    deltas, snapshots = _ids_written(files)
    assert len(deltas) == len(set(deltas))
    assert summary["duplicates"] == len(snapshots) - len(set(snapshots))
    gaps = read(str(out), "gaps").to_pylist()
    # every disconnection's gap resynced by the post-reconnect snapshot; the planned reconnects
    # (several: every 3 s) left none
    assert gaps and {g["resolution"] for g in gaps} == {"resynced"}
    assert len(gaps) <= status["disconnects"] * len(exchange.symbols)
    assert read(str(out), "corrupt_periods").num_rows == 0


def _captured(folder):
    """symbol -> [(U, u) of each delta in file order], and the disconnect markers' payloads."""
    deltas, markers = {}, {}
    for path in sorted(folder.iterdir()):
        with gzip.open(path) as handle:
            for line in handle:
                record = json.loads(line)
                if record["type"] == "delta":
                    payload = record["payload"]
                    deltas.setdefault(record["symbol"], []).append((payload["U"], payload["u"]))
                elif record["type"] == "disconnect":
                    markers.setdefault(record["symbol"], []).append(record["payload"])
    return deltas, markers


def _lost_runs(sent, captured):
    """The ids lost between the first and the last message captured: one (last good id, next
    first id, ids lost) per run of messages the exchange sent that were not captured."""
    kept = set(captured)
    first = sent.index(captured[0])
    last = sent.index(captured[-1])
    runs, start = [], None
    for index in range(first, last + 1):
        if sent[index] not in kept and start is None:
            start = index
        elif sent[index] in kept and start is not None:
            before, after = sent[start - 1][1], sent[index][0]
            runs.append((before, after, after - before - 1))
            start = None
    return runs


def test_an_exchange_that_accepts_and_closes_for_5_s_gets_few_handshakes_and_one_marker(tmp_path):
    """Accepted, then closed at once with 1013 "try again later" for 5 s: each such connection is a
    failed attempt (the backoff grows), the outage is one marker per symbol, and a batch run's gap
    rows are exactly the ids the exchange sent while the collector was away, all resynced."""
    exchange = FakeExchange("spot").start()
    metrics_file = str(tmp_path / "metrics.json")
    files = tmp_path / "capture"
    # the default initial backoff; --max_backoff 8 bounds the wait after the refusal (the test's
    # time); a connection proves healthy after 1 s (10 by default) so the first one has
    proc = _collector(exchange, "--output_dir", str(files), "--metrics_file", metrics_file,
                      "--initial_backoff", "0.5", "--max_backoff", "8", "--healthy_seconds", "1")
    try:
        _wait_for(_settled(metrics_file, 4), 30, "the first snapshots", proc)
        time.sleep(1.5)                                  # the first connection is healthy
        before = exchange.stats["handshakes"]
        exchange.refuse_connections(5.0, accept_then_close=True)
        exchange.drop_connections()
        _wait_for(lambda: read_metrics(metrics_file).get("reconnects", 0) >= 1, 30,
                  "the reconnect after the refusal", proc)
        _wait_for(_settled(metrics_file, 8), 30, "the snapshots after the reconnect", proc)
        time.sleep(1)
        code, log = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        exchange.stop()
    assert code == 0, log[-3000:]
    handshakes = exchange.stats["handshakes"] - before
    assert 1 < handshakes <= 12, log[-3000:]
    assert exchange.stats["closed_at_once"] == handshakes - 1      # the last one was served
    status = read_metrics(metrics_file)
    assert status["reconnects"] == 1 and status["disconnects"] == 1
    assert status["snapshots_discarded"] == 0

    deltas, markers = _captured(files)
    assert sorted(deltas) == sorted(markers) == exchange.symbols
    runs = {symbol: _lost_runs(exchange.sent_ids(symbol), deltas[symbol]) for symbol in deltas}
    for symbol, [marker] in markers.items():             # exactly one marker per symbol
        [(last_good, _, lost)] = runs[symbol]            # and one run of ids lost: the outage
        assert lost > 0
        assert marker["attempts"] == handshakes and marker["from"] < marker["to"]
        assert marker["last_id"] == last_good            # the last id before the loss

    out = tmp_path / "batch"
    batch = subprocess.run([sys.executable, "-m", "beam_pipeline", "--input", str(files),
                            "--output", str(out)], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                           capture_output=True, text=True, timeout=120)
    assert batch.returncode == 0, batch.stderr[-3000:]
    with open(out / "summary.json") as handle:
        summary = json.load(handle)
    assert summary["balanced"] and summary["dead_letters"] == {}
    assert summary["input_records"] == status["records"]
    assert summary["control"] == len(exchange.symbols) and summary["corrupt_periods"] == 0
    gaps = read(str(out), "gaps").to_pylist()
    expected = sorted((symbol, *run) for symbol in runs for run in runs[symbol])
    assert sorted((g["symbol"], g["last_good_id"], g["next_first_id"], g["gap_size"])
                  for g in gaps) == expected
    assert {(g["action"], g["resolution"]) for g in gaps} == {("hold_for_snapshot", "resynced")}
    assert sum(summary["gaps"].values()) == len(gaps)
    assert read(str(out), "corrupt_periods").num_rows == 0


@pytest.mark.parametrize("accept_then_close", [False, True], ids=["503", "accepted-then-closed"])
def test_gives_up_after_max_disconnect_with_exit_code_5(tmp_path, accept_then_close):
    exchange = FakeExchange("spot").start()
    exchange.refuse_connections(3600, accept_then_close=accept_then_close)
    try:
        proc = _collector(exchange, "--output_dir", str(tmp_path / "capture"),
                          "--max_disconnect", "2")
        log, _ = proc.communicate(timeout=60)
    finally:
        exchange.stop()
    assert proc.returncode == 5, log[-3000:]
    assert "giving up" in log and "--max_disconnect=2" in log


def test_end_to_end_collector_pubsub_pipeline_and_the_recovery_loop(pubsub_emulator, tmp_path):
    emu = pubsub_emulator
    feed = emu.create_topic(emu.unique_name("live"))
    feed_sub = emu.create_subscription(feed, emu.unique_name("live-sub"))
    recovery = emu.create_topic(emu.unique_name("recovery"))
    recovery_sub = emu.create_subscription(recovery, emu.unique_name("recovery-sub"))
    out = str(tmp_path / "stream")
    job = start_job(emu.host, feed_sub, out, "--recovery_topic", recovery,
                    "--recovery_timeout", "30")
    exchange = FakeExchange("spot").start()
    metrics_file = str(tmp_path / "metrics.json")
    proc = _collector(exchange, "--topic", feed, "--recovery_subscription", recovery_sub,
                      "--metrics_file", metrics_file,
                      env=dict(os.environ, PUBSUB_EMULATOR_HOST=emu.host))
    skipped = exchange.symbols[0]
    try:
        def counted(name, at_least):
            return lambda: (read_metrics(metrics_file).get(name) or 0) >= at_least
        _wait_for(counted("snapshots", 4), 60, "the first snapshots", proc)
        # the job has started when it has counted the first records
        _wait_for(lambda: (wait_counted(out, 1, 1)[1] or {}).get("clean_records", 0) > 0, 90,
                  "the streaming job to sequence the first records", proc)
        exchange.skip_ids(skipped, 100)            # lost by the exchange: a medium gap
        _wait_for(counted("recovery_requests", 1), 60, "the job's recovery request", proc)
        _wait_for(_settled(metrics_file, 5), 30, "the snapshot that answers it", proc)
        exchange.refuse_connections(1.0)
        exchange.drop_connections()                # a partition
        _wait_for(counted("reconnects", 1), 30, "the reconnect", proc)
        _wait_for(_settled(metrics_file, 8), 30, "the snapshots after the reconnect", proc)
        time.sleep(3)
        code, log = _stop(proc)
        assert code == 0, log[-3000:]
        status = read_metrics(metrics_file)
        written = status["records"]
        assert status.get("publish_failures", 0) == 0 and status.get("records_lost", 0) == 0
        done, summary = wait_counted(out, written, 90)
        assert done, (summary, status, job_log(out)[-3000:])
        assert wait_written(out, 60), job_log(out)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        exchange.stop()
        stop_job(job)

    assert summary["input_records"] == written and summary["balanced"]
    assert summary["control"] == status["disconnects"] * len(exchange.symbols) > 0
    assert summary["dead_letters"] == {} and summary["corrupt_periods"] == 0
    gaps = read(out, "gaps").to_pylist()
    requests = read(out, "recovery_requests").to_pylist()
    assert {g["resolution"] for g in gaps} == {"resynced"}
    # the lost ids: a medium gap, resynced by the snapshot the recovery loop fetched
    medium = [r for r in requests if r["reason"] == "medium_gap"]
    assert [r["symbol"] for r in medium] == [skipped]
    assert any(g["symbol"] == skipped and g["gap_size"] == 100 for g in gaps)
    # every symbol's disconnection reported and resynced (by a recovery or a snapshot jump)
    after_disconnect = {g["symbol"] for g in gaps if g["gap_size"] != 100}
    assert after_disconnect == set(exchange.symbols)


def test_the_collector_writes_to_kafka_keyed_by_symbol_and_a_batch_run_reads_it(kafka_broker,
                                                                                tmp_path):
    """fake exchange -> collector -> Kafka: one record per message of a symbol (key = symbol,
    headers format/exchange/market/content_encoding, CreateTime = publish time), and the records'
    lines are a feed a batch run checks clean."""
    topic = kafka_broker.unique_topic("collector")
    exchange = FakeExchange("usdm").start()
    metrics_file = str(tmp_path / "metrics.json")
    begin = int(time.time() * 1000)
    proc = _collector(exchange, "--kafka_bootstrap_servers", kafka_broker.bootstrap,
                      "--kafka_topic", topic, "--metrics_file", metrics_file)
    try:
        _wait_for(_settled(metrics_file, len(exchange.symbols)), 30, "a snapshot per symbol", proc)
        _wait_for(lambda: read_metrics(metrics_file).get("published_messages", 0) >= 20, 30,
                  "20 messages", proc)
        code, log = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        exchange.stop()
    end = int(time.time() * 1000)
    assert code == 0, log[-3000:]
    status = read_metrics(metrics_file)
    assert status["publish_failures"] == 0
    records = kafka_broker.consume_all(topic, expected=status["published_messages"])
    assert len(records) == status["published_messages"]
    lines = []
    for record in records:
        headers = dict(record.headers)
        assert headers["format"] == b"envelope" and headers["content_encoding"] == b"gzip"
        assert record.key.decode() in exchange.symbols and begin <= record.timestamp <= end
        for line in gzip.decompress(record.value).splitlines():
            assert json.loads(line)["symbol"] == record.key.decode()
            lines.append(line)
    (tmp_path / "feed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert pipeline_main(["--input", str(tmp_path / "feed.jsonl"), "--output",
                          str(tmp_path / "batch")]) == 0
    with open(tmp_path / "batch" / "summary.json") as handle:
        summary = json.load(handle)
    assert summary["balanced"] and summary["dead_letters"] == {}
    assert summary["input_records"] == len(lines) and sum(summary["gaps"].values()) == 0
