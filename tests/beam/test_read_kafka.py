"""The Kafka source's parts that need no broker: a Kafka record as a message (headers, gzip by
header or magic bytes, id, CreateTime), its records through ParseMessages, the Flink profile a
Kafka job gets, and the usage errors off Flink."""
import gzip
from types import SimpleNamespace

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipeline.cli import main
from runners import flink
from transforms.read import ParseMessages
from transforms.read_kafka import (CONTROL_HEADER, WATERMARK_MARKER, consumer_config, is_marker,
                                   kafka_message)
from transforms.tags import DEAD_LETTER, INPUT_LAG, TALLY

LINES = b'{"a":1}\n{"a":2}\n'


def record(value, headers=(), timestamp=1_796_000_000_123, offset=7):
    return SimpleNamespace(topic="feed", partition=1, offset=offset, timestamp=timestamp,
                           key=b"BTCUSDT", value=value,
                           headers=[SimpleNamespace(key=k, value=v) for k, v in headers])


def test_a_record_becomes_a_message_with_its_headers_id_and_create_time():
    message = kafka_message(record(LINES, [("format", b"envelope"), ("exchange", b"binance")]))
    assert message.data == LINES
    assert message.attributes == {"format": "envelope", "exchange": "binance"}
    assert message.message_id == "feed/1/7"
    assert int(message.publish_time.timestamp() * 1000) == 1_796_000_000_123


@pytest.mark.parametrize("headers", [[("content_encoding", b"gzip")], []])
def test_gzip_by_header_or_by_magic_bytes(headers):
    message = kafka_message(record(gzip.compress(LINES), headers))
    assert message.attributes["content_encoding"] == "gzip"


def test_only_a_watermark_marker_is_taken_for_one():
    assert is_marker(record(b"", [(CONTROL_HEADER, WATERMARK_MARKER)]))
    assert not is_marker(record(LINES, [("format", b"envelope")]))
    assert not is_marker(record(LINES, [(CONTROL_HEADER, b"other")]))
    assert not is_marker(record(LINES, [(CONTROL_HEADER, None)]))


def test_plain_data_is_not_taken_for_gzip():
    assert "content_encoding" not in kafka_message(record(LINES)).attributes


def test_records_are_parsed_as_pubsub_messages_are_with_kafka_sources():
    messages = [kafka_message(record(gzip.compress(LINES), offset=1)),
                kafka_message(record(b"\x1f\x8b not gzip", offset=2))]
    with TestPipeline() as p:
        parsed = (p | beam.Create(messages)
                  | beam.ParDo(ParseMessages(1 << 20, 1 << 24, scheme="kafka"))
                  .with_outputs(DEAD_LETTER, TALLY, INPUT_LAG, main="batches"))
        assert_that(parsed.batches | "B" >> beam.Map(lambda b: (b.source, b.records)),
                    equal_to([("kafka:feed/1/1", [(1, b'{"a":1}'), (2, b'{"a":2}')])]), label="b")
        assert_that(parsed[DEAD_LETTER] | "D" >> beam.Map(lambda d: (d.source, d.reason)),
                    equal_to([("kafka:feed/1/2", "read_error")]), label="d")


def test_offsets_are_not_auto_committed_and_a_new_group_reads_the_backlog():
    config = consumer_config("127.0.0.1:9092", "g")
    assert config["enable.auto.commit"] == "false"
    assert config["auto.offset.reset"] == "earliest"
    assert config["group.id"] == "g"


def test_the_flink_profile_of_a_kafka_job_checkpoints_and_reads_with_the_source_reader():
    argv = flink.apply_profile(["--runner=FlinkRunner", "--flink_job_server_jar=/x/job.jar",
                                "--streaming", "--kafka_bootstrap_servers", "h:1",
                                "--kafka_topic", "t", "--output", "o"])
    options = PipelineOptions(argv).get_all_options()
    assert options["checkpointing_interval"] == str(flink.KAFKA_CHECKPOINTING_INTERVAL_MS)
    assert flink.KAFKA_READ_EXPERIMENT in options["experiments"]
    given = flink.apply_profile(["--runner=FlinkRunner", "--flink_job_server_jar=/x/job.jar",
                                 "--kafka_bootstrap_servers", "h:1", "--checkpointing_interval=500"])
    assert PipelineOptions(given).get_all_options()["checkpointing_interval"] == "500"


@pytest.mark.parametrize("argv, expected", [
    (["--streaming", "--kafka_bootstrap_servers", "127.0.0.1:9092", "--kafka_topic", "t"],
     "Kafka is read on Flink only (--runner FlinkRunner), not on DirectRunner"),
    (["--runner", "FlinkRunner", "--streaming", "--kafka_bootstrap_servers", "127.0.0.1:9092"],
     "needs both --kafka_bootstrap_servers HOST:PORT and --kafka_topic"),
    (["--runner", "FlinkRunner", "--kafka_bootstrap_servers", "127.0.0.1:9092", "--kafka_topic", "t"],
     "--kafka_bootstrap_servers needs --streaming"),
    (["--runner", "FlinkRunner", "--streaming", "--kafka_bootstrap_servers", "localhost",
      "--kafka_topic", "t"], "'localhost' is not HOST:PORT"),
    (["--runner", "FlinkRunner", "--streaming", "--input_subscription",
      "projects/p/subscriptions/s"], "Pub/Sub is read on DirectRunner and Dataflow, not on Flink"),
    (["--streaming", "--input", "f", "--recovery_kafka_topic", "r"],
     "--recovery_kafka_topic needs --kafka_bootstrap_servers HOST:PORT"),
    (["--streaming", "--input", "f", "--recovery_kafka_topic", "r", "--kafka_bootstrap_servers",
      "h:1", "--recovery_topic", "projects/p/topics/r"],
     "give one of --recovery_topic (Pub/Sub) and --recovery_kafka_topic (Kafka)"),
    (["--input", "f", "--recovery_kafka_topic", "r", "--kafka_bootstrap_servers", "h:1"],
     "--recovery_kafka_topic needs --streaming"),
    (["--streaming", "--input", "f", "--recovery_kafka_topic", "r", "--kafka_bootstrap_servers",
      "h"], "'h' is not HOST:PORT"),
])
def test_kafka_usage_errors(argv, expected, tmp_path, capsys):
    assert main([*argv, "--output", str(tmp_path / "o")]) == 2
    assert expected in capsys.readouterr().err
