"""Source: a Kafka topic (streaming on Flink), as batches of raw records.

Beam Java's KafkaIO, expanded by a Java expansion service (runners/kafka.py) and run inside the
Flink job server. Each Kafka record is one message in the Pub/Sub formats (transforms/read.py
message_batch): one record, or JSON Lines; gzip when its header content_encoding=gzip or, without
that header, when the value starts with gzip's magic bytes; its other headers are the message's
attributes (format, exchange, market). The record's key is its symbol (our publisher's and
collector's), so one partition keeps a symbol in order.

Event time is the record's CreateTime (our publisher sets it to the publish time, as Pub/Sub's
publish time is used); KafkaIO's watermark follows it per partition. Offsets are committed to the
consumer group only when a Flink checkpoint completes (commit_offset_in_finalize, no auto-commit):
after a restore the job reads again from the checkpoint's offsets.

A partition this job has read no record from holds the whole job's watermark at the start of time:
KafkaIO's CreateTime policy (TimestampPolicyFactory.withCreateTime, the only CreateTime policy
Beam Python can ask for) advances an idle partition's watermark only once it has read a record of
it. With the watermark there, every event-time wait (the sequencer's reorder wait) never ends and
nothing reaches clean/, gaps/ or corrupt_periods/ (seen on a 2-partition topic whose feed was all
in one partition). So before a job starts, mark_partitions writes one watermark marker (an empty
record with the header feedcheck_control=watermark, CreateTime now) to every partition of the
topic; the job reads it, which lets that partition's watermark follow the clock while it is idle,
and drops it before parsing (not an input record: not counted anywhere).
"""
from __future__ import annotations

import datetime

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage

from beam_pipeline.core.model import RawBatch
from transforms.read import ParseMessages
from transforms.tags import DEAD_LETTER, INPUT_LAG, TALLY

GZIP_MAGIC = b"\x1f\x8b"
#: The header of a watermark marker (mark_partitions): such records are not input.
CONTROL_HEADER = "feedcheck_control"
WATERMARK_MARKER = b"watermark"


def mark_partitions(bootstrap_servers: str, topic: str, timeout_s: float = 60.0) -> int:
    """Writes one watermark marker to every partition of `topic` (see the module docstring);
    returns how many. The topic is created (broker defaults) if it does not exist yet."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), acks="all",
                             max_block_ms=int(timeout_s * 1000))
    try:
        partitions = sorted(producer.partitions_for(topic))
        now_ms = int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000)
        for partition in partitions:
            producer.send(topic, value=b"", partition=partition, timestamp_ms=now_ms,
                          headers=[(CONTROL_HEADER, WATERMARK_MARKER)])
        producer.flush(timeout=timeout_s)
    finally:
        producer.close()
    return len(partitions)


def is_marker(record) -> bool:
    """True for a watermark marker (mark_partitions): dropped before parsing."""
    return any(header.key == CONTROL_HEADER and header.value is not None
               and bytes(header.value) == WATERMARK_MARKER for header in record.headers or ())


def consumer_config(bootstrap_servers: str, group_id: str) -> dict:
    """The Kafka consumer's settings: a new group starts at the earliest offset (a backlog is read),
    offsets are committed by the source at checkpoints only."""
    return {"bootstrap.servers": bootstrap_servers, "group.id": group_id,
            "auto.offset.reset": "earliest", "enable.auto.commit": "false"}


def kafka_message(record) -> PubsubMessage:
    """A KafkaIO record with metadata (a Beam Row: topic, partition, offset, timestamp in ms, key,
    value, headers) -> the message ParseMessages reads; its id is <topic>/<partition>/<offset>."""
    attributes = {}
    for header in record.headers or ():
        if header.value is not None:
            attributes[header.key] = bytes(header.value).decode("utf-8", "replace")
    data = bytes(record.value or b"")
    if "content_encoding" not in attributes and data[:2] == GZIP_MAGIC:
        attributes["content_encoding"] = "gzip"
    published = datetime.datetime.fromtimestamp(record.timestamp / 1000, datetime.timezone.utc)
    return PubsubMessage(data, attributes,
                         message_id=f"{record.topic}/{record.partition}/{record.offset}",
                         publish_time=published)


class ReadFeedKafka(beam.PTransform):
    """Kafka topic -> RawBatch per record (main `batches`), `dead_letter`, `tally`, `input_lag`:
    the outputs of ReadFeedMessages. `expansion_service`: what Beam's ReadFromKafka takes (an
    address, or a JavaJarExpansionService)."""

    def __init__(self, bootstrap_servers: str, topic: str, group_id: str, expansion_service,
                 max_record_bytes: int, max_message_bytes: int):
        super().__init__()
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group_id = group_id
        self.expansion_service = expansion_service
        self.max_record_bytes = max_record_bytes
        self.max_message_bytes = max_message_bytes

    def expand(self, pbegin):
        from apache_beam.io.kafka import ReadFromKafka

        return (pbegin
                | "Poll" >> ReadFromKafka(
                    consumer_config(self.bootstrap_servers, self.group_id), [self.topic],
                    with_metadata=True, commit_offset_in_finalize=True,
                    timestamp_policy=ReadFromKafka.create_time_policy,
                    expansion_service=self.expansion_service)
                | "NoMarkers" >> beam.Filter(lambda record: not is_marker(record))
                | "AsMessages" >> beam.Map(kafka_message)
                | "Parse" >> beam.ParDo(ParseMessages(self.max_record_bytes,
                                                      self.max_message_bytes, scheme="kafka"))
                .with_output_types(RawBatch)
                .with_outputs(DEAD_LETTER, TALLY, INPUT_LAG, main="batches"))
