"""Recovery requests over Kafka, without Google Cloud: a streaming job's --recovery_kafka_topic
receives each recovery request as the JSON Pub/Sub would carry, keyed by symbol, equal to the
recovery_requests/ row on disk; and the collector's --recovery_kafka_topic answers a request from
that topic as it answers one from Pub/Sub (a fresh snapshot fetched and written)."""
from __future__ import annotations

import datetime
import gzip
import json
import os
import subprocess
import sys
import time

from beam_pipeline.collector import read_metrics
from beam_pipeline.readback import read
from tests.conftest import REPO
from tests.integration.test_collector import _collector, _settled, _stop, _wait_for
from tests.tooling.fake_exchange import FakeExchange
from tests.tooling.synthetic import generate, write_lines


def test_a_streaming_run_publishes_its_recovery_request_to_kafka(kafka_broker, tmp_path):
    topic = kafka_broker.unique_topic("recovery")
    lines, _ = generate(120, seed=3, faults=[("medium_gap_resynced", 0)], spacing=60)
    write_lines(str(tmp_path / "feed.jsonl"), lines)
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "beam_pipeline", "--streaming", "--input", str(tmp_path / "feed.jsonl"),
         "--output", str(out), "--kafka_bootstrap_servers", kafka_broker.bootstrap,
         "--recovery_kafka_topic", topic],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
        timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    on_disk = read(str(out), "recovery_requests").to_pylist()
    assert [row["reason"] for row in on_disk] == ["medium_gap"]
    records = kafka_broker.consume_all(topic, expected=1, timeout_s=10)
    assert len(records) == 1
    [record] = records
    published = json.loads(record.value)
    [row] = on_disk
    assert record.key.decode() == row["symbol"]
    # the JSON's time is ISO-8601 UTC with milliseconds; the Parquet row's a timestamp
    assert datetime.datetime.fromisoformat(published.pop("event_time")) == row.pop("event_time")
    assert published == row
    assert read(str(out), "undelivered").num_rows == 0


def test_the_collector_answers_a_recovery_request_from_kafka(kafka_broker, tmp_path):
    """fake exchange -> collector (files); a recovery request on the Kafka topic -> the collector
    fetches a fresh REST snapshot of that symbol and writes it in-stream."""
    from kafka import KafkaProducer

    topic = kafka_broker.unique_topic("recovery")
    exchange = FakeExchange("spot").start()
    metrics_file, capture = str(tmp_path / "metrics.json"), tmp_path / "capture"
    proc = _collector(exchange, "--output_dir", str(capture), "--metrics_file", metrics_file,
                      "--kafka_bootstrap_servers", kafka_broker.bootstrap,
                      "--recovery_kafka_topic", topic, "--recovery_dedup_seconds", "0.5")
    symbol = exchange.symbols[0]
    try:
        first = len(exchange.symbols)
        _wait_for(_settled(metrics_file, first), 30, "a snapshot per symbol", proc)
        time.sleep(1)           # past --recovery_dedup_seconds of the first snapshot
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
        for request in ({"exchange": "binance", "market": "spot", "symbol": symbol,
                         "from_id": 1, "reason": "medium_gap", "event_time": "x"},
                        {"exchange": "binance", "market": "usdm", "symbol": symbol,  # not ours
                         "from_id": 1, "reason": "medium_gap", "event_time": "x"}):
            producer.send(topic, key=symbol.encode(), value=json.dumps(request).encode())
        producer.send(topic, key=symbol.encode(), value=b"not json")
        producer.flush()
        producer.close()
        _wait_for(lambda: read_metrics(metrics_file).get("recovery_requests", 0) >= 1, 20,
                  "the request from Kafka", proc)
        _wait_for(_settled(metrics_file, first + 1), 20, "the snapshot that answers it", proc)
        time.sleep(1.5)         # a status line later: nothing else was asked for
        code, log = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        exchange.stop()
    assert code == 0, log[-3000:]
    status = read_metrics(metrics_file)
    assert status["recovery_requests"] == 1 and status["snapshots"] == first + 1
    assert "a recovery request that is not JSON" in log
    snapshots = [json.loads(line) for path in sorted(capture.iterdir())
                 for line in gzip.open(path) if json.loads(line)["type"] == "snapshot"]
    assert sorted(s["symbol"] for s in snapshots) == sorted([*exchange.symbols, symbol])


def test_a_request_the_brokers_do_not_take_is_an_undelivered_row():
    """No broker on the port: the row is not lost, it comes out undelivered with the reason."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from tests.tooling.pubsub_emulator import free_local_port
    from transforms.sinks import PublishKafkaJson

    request = {"exchange": "binance", "market": "spot", "symbol": "BTCUSDT", "from_id": 7,
               "reason": "medium_gap", "event_time": "2026-01-01T00:00:00.000Z"}
    with TestPipeline() as pipeline:
        undelivered = (pipeline | beam.Create([request])
                       | beam.ParDo(PublishKafkaJson(f"127.0.0.1:{free_local_port()}", "recovery",
                                                     delivery_timeout_s=2)).with_outputs(
                           PublishKafkaJson.UNDELIVERED, main="published"))
        rows = undelivered[PublishKafkaJson.UNDELIVERED] | beam.Map(
            lambda row: (row["symbol"], row["topic"], json.loads(row["payload"]) == request))
        assert_that(rows, equal_to([("BTCUSDT", "kafka:recovery", True)]))
