"""Publish capture files to a Pub/Sub or Kafka topic as batched messages: how a capture is replayed
into a live job (python -m beam_pipeline.publish --topic projects/P/topics/T FILES..., or
--kafka_bootstrap_servers HOST:PORT --kafka_topic T FILES...).

Files are read exactly as a batch run reads them (same formats, detection, headers, line limits);
each message carries up to --records_per_message consecutive records of one file as JSON Lines,
gzip-compressed (attribute content_encoding=gzip), with the attributes the decoder needs
(format, exchange, market). The streaming job reads each record on its own. Publisher flow
control bounds memory: a slow broker blocks the reader instead of queueing the file.
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
import time

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.fileio import ReadableFile

from beam_pipeline.core.model import DeadLetter, RawBatch
from beam_pipeline.options import INPUT_FORMATS, RECORDS_PER_MESSAGE, add_message_output_arguments
from transforms.read import ReadRecordBatches

DEFAULT_RECORDS_PER_MESSAGE = RECORDS_PER_MESSAGE
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024


def message_of(batch: RawBatch, compress: bool) -> tuple[bytes, dict]:
    """A RawBatch of a file -> (data, attributes) of one message."""
    data = b"\n".join(raw for _, raw in batch.records) + b"\n"
    attributes = {"format": batch.fmt}
    if batch.exchange:
        attributes["exchange"] = batch.exchange
    if batch.market:
        attributes["market"] = batch.market
    if compress:
        data = gzip.compress(data, compresslevel=1)   # level 1: 4x smaller, and fast
        attributes["content_encoding"] = "gzip"
    return data, attributes


def batches_of(path: str, input_format: str, records_per_message: int, max_record_bytes: int):
    """RawBatch (or DeadLetter for an unreadable file) of one file, read as a batch run reads it."""
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    reader = ReadRecordBatches(input_format, max_record_bytes, records_per_message)
    for output in reader.process(ReadableFile(FileMetadata(path, size))):
        value = getattr(output, "value", output)      # a TaggedOutput (read failure or tally)
        if isinstance(value, (RawBatch, DeadLetter)):
            yield value


def _files(patterns) -> list[str]:
    paths = []
    for pattern in patterns:
        matched = FileSystems.match([pattern])[0].metadata_list
        if not matched:
            raise SystemExit(f"error: no input file matches {pattern}")
        for metadata in matched:
            if os.path.isdir(metadata.path):
                continue
            paths.append(metadata.path)
    return sorted(set(paths))


def _publisher(max_outstanding_messages: int, max_outstanding_bytes: int):
    from google.cloud import pubsub_v1
    from google.cloud.pubsub_v1 import types

    flow = types.PublishFlowControl(
        message_limit=max_outstanding_messages, byte_limit=max_outstanding_bytes,
        limit_exceeded_behavior=types.LimitExceededBehavior.BLOCK)
    return pubsub_v1.PublisherClient(
        batch_settings=types.BatchSettings(max_messages=100, max_bytes=4 * 1024 * 1024,
                                           max_latency=0.02),
        publisher_options=types.PublisherOptions(flow_control=flow))


class _PubSubSink:
    """publish(data, attributes, key) -> a future, on a Pub/Sub topic."""

    def __init__(self, topic: str, max_outstanding_messages: int, max_outstanding_bytes: int):
        self.topic = topic
        self.client = _publisher(max_outstanding_messages, max_outstanding_bytes)

    def publish(self, data: bytes, attributes: dict, key: str):
        return self.client.publish(self.topic, data, **attributes)

    def close(self):
        pass


class KafkaSink:
    """publish(data, attributes, key) -> a future, on a Kafka topic: the attributes as headers,
    `key` as the record key (records of one key stay in order in one partition), CreateTime = the
    publish time (the streaming job's event time, as Pub/Sub's publish time is). Memory is bounded
    as for Pub/Sub: publish() waits for every 1000 sends (_settle)."""

    def __init__(self, bootstrap_servers: str, topic: str):
        from kafka import KafkaProducer

        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), acks="all",
                                      linger_ms=20,
                                      max_request_size=16 << 20, max_block_ms=300_000)

    def publish(self, data: bytes, attributes: dict, key: str):
        headers = [(name, str(value).encode()) for name, value in attributes.items()]
        return self.producer.send(self.topic, value=data, key=key.encode() if key else None,
                                  headers=headers, timestamp_ms=int(time.time() * 1000))

    def close(self):
        self.producer.flush()
        self.producer.close()


class Pacer:
    """Holds publishing to `per_second` records a second (None: as fast as the broker takes)."""

    def __init__(self, per_second):
        self.per_second, self.sent, self.begin = per_second, 0, time.monotonic()

    def wait(self, records: int) -> None:
        if self.per_second:
            pause = self.begin + self.sent / self.per_second - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        self.sent += records


def publish(topic: str, paths, input_format="auto", records_per_message=DEFAULT_RECORDS_PER_MESSAGE,
            compress=True, max_record_bytes=DEFAULT_MAX_RECORD_BYTES, per_second=None,
            progress=True, max_outstanding_messages=1000,
            max_outstanding_bytes=64 * 1024 * 1024, kafka_bootstrap_servers=None) -> dict:
    """Publish every record of `paths` to the Pub/Sub `topic`, or with `kafka_bootstrap_servers`
    to that Kafka topic (key: the file's name, so a file's records stay in order in one
    partition); returns counts (records, messages, bytes, read_errors)."""
    from tqdm import tqdm

    client = (KafkaSink(kafka_bootstrap_servers, topic)
              if kafka_bootstrap_servers else
              _PubSubSink(topic, max_outstanding_messages, max_outstanding_bytes))
    counts = {"files": len(paths), "records": 0, "messages": 0, "bytes": 0, "read_errors": []}
    futures, pacer, begin = [], Pacer(per_second), time.monotonic()
    bar = tqdm(total=sum(os.path.getsize(p) for p in paths if os.path.exists(p)) or None,
               unit="B", unit_scale=True, disable=not progress, desc="publishing", file=sys.stderr)
    try:
        for path in paths:
            for batch in batches_of(path, input_format, records_per_message, max_record_bytes):
                if isinstance(batch, DeadLetter):
                    counts["read_errors"].append(f"{batch.source}: {batch.message}")
                    continue
                data, attributes = message_of(batch, compress)
                pacer.wait(len(batch.records))
                futures.append(client.publish(data, attributes, os.path.basename(path)))
                counts["records"] += len(batch.records)
                counts["messages"] += 1
                counts["bytes"] += len(data)
                bar.update(sum(len(raw) + 1 for _, raw in batch.records))
                if len(futures) >= 1000:
                    _settle(futures)
        _settle(futures)
    finally:
        bar.close()
        client.close()
    counts["seconds"] = round(time.monotonic() - begin, 3)
    return counts


def _settle(futures: list) -> None:
    for future in futures:
        if hasattr(future, "get"):             # kafka-python's FutureRecordMetadata
            future.get(timeout=300)
        else:
            future.result(timeout=300)
    futures.clear()


def build_parser() -> argparse.ArgumentParser:
    """`feedcheck-publish`'s options (docs/reference/options.md documents them)."""
    parser = argparse.ArgumentParser(
        prog="feedcheck-publish",
        description="Publish capture files (any input format) to a Pub/Sub topic as batched "
                    "messages, for a streaming job to read. Set PUBSUB_EMULATOR_HOST for the "
                    "emulator.")
    parser.add_argument("files", nargs="+", help="capture files or globs (plain or .gz)")
    add_message_output_arguments(
        parser, topic_help="the Pub/Sub topic, projects/<project>/topics/<topic>",
        kafka_help="publish to Kafka instead: brokers HOST:PORT[,HOST:PORT] (with --kafka_topic). "
                   "Headers carry the attributes, the key is the file's name, CreateTime is the "
                   "publish time.",
        records_help="records per message.")
    parser.add_argument("--input_format", default="auto", choices=INPUT_FORMATS,
                        help="the files' format, as for a batch run. Default: auto.")
    parser.add_argument("--no_gzip", action="store_true",
                        help="send plain JSON Lines (default: gzip, attribute content_encoding=gzip)")
    parser.add_argument("--records_per_second", type=float, default=None,
                        help="pace publishing to this many records a second (a live feed). "
                             "Default: as fast as the broker accepts.")
    parser.add_argument("--max_record_bytes", type=int, default=DEFAULT_MAX_RECORD_BYTES,
                        help="lines longer than this are cut, as a batch run cuts them. "
                             f"Default: {DEFAULT_MAX_RECORD_BYTES}.")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.records_per_second is not None and args.records_per_second <= 0:
        parser.error("--records_per_second must be positive")
    if args.kafka_bootstrap_servers or args.kafka_topic:
        if not (args.kafka_bootstrap_servers and args.kafka_topic) or args.topic:
            parser.error("Kafka needs --kafka_bootstrap_servers and --kafka_topic (and no --topic)")
    elif not args.topic:
        parser.error("give --topic (Pub/Sub) or --kafka_bootstrap_servers and --kafka_topic")
    elif not args.topic.startswith("projects/") or "/topics/" not in args.topic:
        parser.error(f"--topic must be projects/<project>/topics/<topic>, not {args.topic!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    topic = args.kafka_topic or args.topic
    counts = publish(topic, _files(args.files), args.input_format, args.records_per_message,
                     not args.no_gzip, args.max_record_bytes, args.records_per_second,
                     progress=not args.quiet, kafka_bootstrap_servers=args.kafka_bootstrap_servers)
    rate = counts["records"] / max(counts["seconds"], 1e-9)
    print(f"published {counts['records']:,} records from {counts['files']} file(s) in "
          f"{counts['messages']:,} messages ({counts['bytes']:,} bytes) to {topic} in "
          f"{counts['seconds']:.1f} s ({rate:,.0f} records/s)")
    for error in counts["read_errors"]:
        print(f"warning: not published, the file could not be read: {error}", file=sys.stderr)
    if counts["records"] == 0:
        print("error: no record was read from the input files", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
