"""pytest plugin: a session-wide Kafka broker (KRaft, 127.0.0.1) started with scripts/kafka.sh.

    pytest_plugins = ["tests.tooling.kafka_broker"]

    def test_something(kafka_broker):
        topic = kafka_broker.unique_topic("feed")
        kafka_broker.bootstrap   # "127.0.0.1:<port>"

The broker runs on a free port with its state under the session's temp dir and is stopped at the
end of the session (its data goes with it). Topics are created on first use (2 partitions).
"""
from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tooling.pubsub_emulator import free_local_port

KAFKA_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka.sh"


@dataclass
class KafkaBroker:
    bootstrap: str

    @staticmethod
    def unique_topic(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def end_offsets(self, topic: str) -> dict:
        """{partition: end offset} of `topic`."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
        finally:
            consumer.close()

    def committed(self, group: str, topic: str) -> dict:
        """{partition: offset committed by `group`} of `topic` (0 where it committed none)."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group,
                                 enable_auto_commit=False)
        try:
            return {p: consumer.committed(TopicPartition(topic, p)) or 0
                    for p in consumer.partitions_for_topic(topic)}
        finally:
            consumer.close()

    def consume_all(self, topic: str, expected: int, timeout_s: float = 30.0) -> list:
        """Every record of `topic` from the start (kafka-python ConsumerRecords), once `expected`
        have arrived or the timeout passed."""
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(topic, bootstrap_servers=self.bootstrap,
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=int(timeout_s * 1000))
        records = []
        try:
            for record in consumer:
                records.append(record)
                if len(records) >= expected:
                    break
        finally:
            consumer.close()
        return records


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory) -> KafkaBroker:
    # Two free ports in a row: the broker's and its controller's (port + 1).
    for _ in range(20):
        port = free_local_port()
        try:
            import socket

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            break
        except OSError:
            continue
    state = tmp_path_factory.mktemp("kafka")
    env = dict(os.environ, KAFKA_STATE_DIR=str(state))
    result = subprocess.run([str(KAFKA_SCRIPT), "start", str(port)], capture_output=True,
                            text=True, timeout=300, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"kafka.sh start {port} failed:\n{result.stderr}")
    try:
        yield KafkaBroker(f"127.0.0.1:{port}")
    finally:
        subprocess.run([str(KAFKA_SCRIPT), "stop", str(port)], capture_output=True, text=True,
                       timeout=60, env=env, check=False)
