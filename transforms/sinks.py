"""Sinks: one folder per output under --output, the same file formats in batch and streaming.

  clean/             Parquet, one row per accepted delta or snapshot
  dead_letter/       Avro (beam_pipeline/schemas/dead_letter.avsc)
  gaps/              Parquet
  corrupt_periods/   Parquet
  recovery_requests/ Parquet
  error_counts/      Parquet
  alerts/            Parquet
  undelivered/       Parquet (streaming: what could not be published to a topic)
  status/            Parquet, where each key stands (batch: one row per key at the end;
                     streaming: one row per changed key and flush, and one per key at a stop)

Every output with a symbol has the columns exchange, market, symbol, spelled as in clean/ and null
where the record yielded none. The schemas are transforms/tables.py's; a folder with no rows still
holds a file with its schema (write_empty_outputs). The Pub/Sub topics carry the same rows as JSON.

Batch writes each folder flat with fileio.WriteToFiles (clean/: the sequencer's parts, moved in).
Streaming writes at most one file per folder per flush, under a date partition
(<folder>/date=YYYY-MM-DD/, the flush's UTC processing-time date): WriteFolder. transforms/layout.py
says where files live and which a reader reads (both layouts).
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import time
import typing

import apache_beam as beam
import fastavro
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam import coders
from apache_beam.io import fileio
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec, TimerSpec,
                                              on_timer)
from apache_beam.utils.timestamp import Timestamp

from beam_pipeline.core import durability, progress, runtime
from beam_pipeline.core.runtime import iso_ms
from transforms import layout
from transforms.memory import DROP_CACHES, FLUSH, SHRINK, MemoryGuard
from beam_pipeline.core.model import stream_key
from transforms.tables import (ALERT_SCHEMA, BOOKS_SCHEMA, CLEAN_SCHEMA,  # noqa: F401 (re-exported)
                               CORRUPT_SCHEMA, ERROR_COUNT_SCHEMA, GAP_SCHEMA, RECOVERY_SCHEMA,
                               STATUS_SCHEMA, UNDELIVERED_SCHEMA, CleanPart, books_table,
                               dict_table, struct_table)
from transforms.tags import (ALERTS, BOOKS, BOOKS_SUFFIX, CLEAN, CORRUPT_PERIODS, DEAD_LETTER,
                            ERROR_COUNTS, FOLDER_SUFFIX, GAPS, RECOVERY_REQUESTS, STATUS, UNDELIVERED,
                            UNDELIVERED_SUFFIX)

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "beam_pipeline", "schemas")
DEAD_LETTER_SCHEMA = fastavro.parse_schema(
    json.load(open(os.path.join(SCHEMA_DIR, "dead_letter.avsc"))))

class ParquetSink(fileio.FileSink):
    """Buffers Arrow tables (already in `schema`) and writes them as row groups.

    The buffer is the one place rows wait in worker memory, so it follows the memory ladder
    (transforms/memory.py): smaller row groups, dropped caches, an immediate flush, or a failed
    bundle for the runner to retry. Rows are never dropped."""

    CHECK_EVERY_ROWS = 1000
    MIN_ROW_GROUP_ROWS = 1024

    def __init__(self, schema: pa.Schema, row_group_rows: int = 65536,
                 memory_limit_gb: float = None, counter: str = None):
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.memory_limit_gb = memory_limit_gb
        self.counter = counter              # a progress counter the rows add to (core/progress.py)

    def open(self, fh):
        self._writer = pq.ParquetWriter(fh, self.schema, compression="zstd")
        self._tables, self._buffered = [], 0
        self._check_at = self.CHECK_EVERY_ROWS
        self._guard = MemoryGuard.from_gb("parquet_sink", self.memory_limit_gb)

    def write(self, table: pa.Table):
        self._tables.append(table)
        self._added(table.num_rows)

    def _added(self, rows: int):
        self._buffered += rows
        if self._buffered >= self._check_at:
            self._follow_memory_ladder()
        if self._buffered >= self.row_group_rows:
            self._write_rows()

    def _follow_memory_ladder(self):
        step = self._guard.step()             # raises MemoryPressureError above 95%
        if step in (SHRINK, DROP_CACHES):
            self.row_group_rows = max(self.MIN_ROW_GROUP_ROWS, self.row_group_rows // 2)
        elif step == FLUSH:
            self._write_rows()
        self._check_at = self._buffered + self.CHECK_EVERY_ROWS

    def _pending_tables(self) -> list:
        return self._tables

    def _write_rows(self):
        tables = self._pending_tables()
        if tables:
            # One table per row group at most: streaming hands in many one-row tables.
            table = pa.concat_tables(tables).combine_chunks()
            self._writer.write_table(table, row_group_size=max(self.row_group_rows, 1))
            if self.counter:
                progress.add(self.counter, table.num_rows)
        self._tables, self._buffered = [], 0
        self._check_at = self.CHECK_EVERY_ROWS

    def flush(self):
        self._write_rows()
        self._writer.close()      # writes the footer; WriteToFiles flushes only before closing


class RowParquetSink(ParquetSink):
    """A ParquetSink fed one row (a Struct) at a time; `to_table` turns buffered rows into a table."""

    def __init__(self, schema: pa.Schema, to_table, row_group_rows: int = 65536,
                 memory_limit_gb: float = None):
        super().__init__(schema, row_group_rows, memory_limit_gb)
        self.to_table = to_table

    def open(self, fh):
        super().open(fh)
        self._rows = []

    def write(self, row):
        self._rows.append(row)
        self._added(1)

    def _pending_tables(self) -> list:
        if self._rows:
            self._tables.append(self.to_table(self._rows))
            self._rows = []
        return self._tables


class AvroSink(fileio.FileSink):
    def __init__(self, schema, to_record, counter: str = None):
        self.schema = schema
        self.to_record = to_record
        self.counter = counter

    def open(self, fh):
        self._writer = fastavro.write.Writer(fh, self.schema, codec="deflate")

    def write(self, record):
        self._writer.write(self.to_record(record))
        if self.counter:
            progress.add(self.counter, 1)

    def flush(self):
        self._writer.flush()


def dead_letter_record(letter) -> dict:
    """A DeadLetter as its Avro record: the stream name it carries inside the pipeline
    (exchange:market:symbol) as the exchange, market and symbol columns of clean/ (null where
    the record did not yield them)."""
    record = msgspec.structs.asdict(letter)
    record["exchange"], record["market"], record["symbol"] = stream_key(letter.symbol)
    return record


def recovery_request_json(request) -> dict:
    """A recovery request as written and published: its time in ISO-8601 UTC with milliseconds,
    like every JSON output."""
    row = msgspec.structs.asdict(request) if isinstance(request, msgspec.Struct) else dict(request)
    if isinstance(row.get("event_time"), int):
        row["event_time"] = iso_ms(row["event_time"])
    return row


def clean_sink(memory_limit_gb=None):
    """Streaming's clean rows: Arrow tables from the live sequencer."""
    return ParquetSink(CLEAN_SCHEMA, memory_limit_gb=memory_limit_gb, counter=progress.CLEAN)


def gap_sink(memory_limit_gb=None):
    return RowParquetSink(GAP_SCHEMA, lambda rows: struct_table(rows, GAP_SCHEMA),
                          memory_limit_gb=memory_limit_gb)


def corrupt_sink(memory_limit_gb=None):
    return RowParquetSink(CORRUPT_SCHEMA, lambda rows: struct_table(rows, CORRUPT_SCHEMA),
                          memory_limit_gb=memory_limit_gb)


def books_sink(memory_limit_gb=None):
    return RowParquetSink(BOOKS_SCHEMA, books_table, memory_limit_gb=memory_limit_gb)


def dead_letter_sink(memory_limit_gb=None):
    return AvroSink(DEAD_LETTER_SCHEMA, dead_letter_record, counter=progress.DEAD)


def status_sink(memory_limit_gb=None):
    return RowParquetSink(STATUS_SCHEMA, lambda rows: struct_table(rows, STATUS_SCHEMA),
                          memory_limit_gb=memory_limit_gb)


def _dict_sink(schema: pa.Schema):
    def make(memory_limit_gb=None):
        return RowParquetSink(schema, lambda rows: dict_table(rows, schema),
                              memory_limit_gb=memory_limit_gb)
    return make


error_count_sink = _dict_sink(ERROR_COUNT_SCHEMA)
alert_sink = _dict_sink(ALERT_SCHEMA)
recovery_sink = _dict_sink(RECOVERY_SCHEMA)
undelivered_sink = _dict_sink(UNDELIVERED_SCHEMA)
# The Arrow schema of each Parquet output folder (readers, compaction, empty folders).
PARQUET_SCHEMAS = {CLEAN: CLEAN_SCHEMA, GAPS: GAP_SCHEMA, CORRUPT_PERIODS: CORRUPT_SCHEMA,
                   RECOVERY_REQUESTS: RECOVERY_SCHEMA, ERROR_COUNTS: ERROR_COUNT_SCHEMA,
                   ALERTS: ALERT_SCHEMA, UNDELIVERED: UNDELIVERED_SCHEMA, STATUS: STATUS_SCHEMA}


def firing_file_naming(suffix: str):
    """Batch: part-[<window start>-]<shard>-of-<shards><suffix> (WriteToFiles' file naming)."""
    def name(win, pane, shard_index, total_shards, compression, destination):
        when = "" if win == window.GlobalWindow() else \
            f"{win.start.to_utc_datetime().strftime('%Y%m%dT%H%M%S')}-"   # one file per window
        return f"part-{when}{shard_index or 0:05d}-of-{total_shards or 1:05d}{suffix}"
    return name


def _handed(element, folder: str):
    durability.handed(folder)
    return element


def write_flush(folder: str, sink_fn, suffix: str, rows) -> str | None:
    """Writes `rows` as ONE file, <folder>/date=<UTC date now>/part-<now>-<tag><suffix>, under a
    hidden name first and renamed when complete, so a reader never sees part of a file. Returns
    its path; None (and no file) when there is no row."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    now = time.time()
    name = layout.flush_file_name(now, suffix)
    partition = f"{folder.rstrip('/')}/{layout.partition_of(now)}"
    final, temp = f"{partition}/{name}", f"{partition}/{layout.in_progress_name(name)}"
    rows = iter(rows)
    first = next(rows, _NOTHING)
    if first is _NOTHING:
        return None
    sink = sink_fn(None)
    with FileSystems.create(temp, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        sink.open(handle)
        sink.write(first)
        for row in rows:
            sink.write(row)
        sink.flush()
    FileSystems.rename([temp], [final])
    return final


_NOTHING = object()


class FlushFolder(beam.DoFn):
    """Streaming: every row of one output folder, gathered onto one key, waits in state and is
    written as ONE file per flush (write_flush), whatever the number of keys, bundles or workers
    that made the rows: at most one file per folder and flush.

    A flush is due `flush_seconds` of processing time after the first row since the last flush
    (never sooner than `flush_seconds` after the last flush). When the watermark reaches the end of
    the global window (a bounded input is exhausted, or a drain) the rows waiting are written at
    once: no row is left behind. Upstream end-of-stream timers emit their last rows before that
    (their timers hold the watermark; on DirectRunner see runners/direct.py:
    hold_watermark_for_end_of_window_timers); a row that still came after it would set the end
    timer again and be written by it: state, unlike a GroupByKey's window, drops nothing as late.
    One key means one writer per folder: the rows of a flush pass through one worker.
    `clock` gives the processing time the flush timer is set from (tests with TestStream, whose
    processing time starts at 0, pass one of their own)."""

    ROWS = BagStateSpec("rows", coders.PickleCoder())
    DUE = ReadModifyWriteStateSpec("due", coders.VarIntCoder())      # micros of the armed flush
    LAST = ReadModifyWriteStateSpec("last", coders.VarIntCoder())    # micros of the last flush
    FLUSH = TimerSpec("flush", TimeDomain.REAL_TIME)
    END = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, folder: str, sink_fn, suffix: str, flush_seconds: float,
                 clock=Timestamp.now, reduce=None):
        """`reduce`: rows of a flush -> the rows its file holds (None: all of them)."""
        self.folder, self.sink_fn, self.suffix = folder.rstrip("/"), sink_fn, suffix
        self.reduce = reduce
        self.flush_micros = int(round(flush_seconds * 1e6))
        self.clock = clock

    def process(self, element, rows=beam.DoFn.StateParam(ROWS), due=beam.DoFn.StateParam(DUE),
                last=beam.DoFn.StateParam(LAST), flush=beam.DoFn.TimerParam(FLUSH),
                end=beam.DoFn.TimerParam(END), win=beam.DoFn.WindowParam):
        rows.add(element[1])
        if due.read() is None:
            at = max(self.clock().micros, last.read() or 0) + self.flush_micros
            flush.set(Timestamp(micros=at))
            due.write(at)
        end.set(win.max_timestamp())

    @on_timer(FLUSH)
    def on_flush(self, fired=beam.DoFn.TimestampParam, rows=beam.DoFn.StateParam(ROWS),
                 due=beam.DoFn.StateParam(DUE), last=beam.DoFn.StateParam(LAST)):
        """A flush is due. Not during a stop's drain (runners/direct.py: its processing time runs
        fast, so every armed flush fires at once): the end of input comes soon and writes
        everything in one file, where a flush now and the end's rest would make two."""
        if runtime.draining():
            return
        yield from self._write(rows, due)
        last.write(fired.micros)

    @on_timer(END)
    def on_end(self, rows=beam.DoFn.StateParam(ROWS), due=beam.DoFn.StateParam(DUE),
               flush=beam.DoFn.TimerParam(FLUSH)):
        """The end of input: the rest now. The flush timer is cleared: Flink does not fire pending
        processing-time timers at the end of input, and their holds would keep the job alive."""
        yield from self._write(rows, due)
        flush.clear()

    def _write(self, rows, due):
        pending = list(rows.read())
        kept = self.reduce(pending) if self.reduce is not None else pending
        written = write_flush(self.folder, self.sink_fn, self.suffix, kept)
        rows.clear()
        due.clear()
        if written:
            durability.written(self.folder, len(pending))     # in place: its input may be acked
            yield written


class WriteFolder(beam.PTransform):
    """One output folder.

    Batch: fileio.WriteToFiles (flat files).
    Streaming: the rows go into the global window, onto one key, and FlushFolder writes one file
    per flush (every `flush_seconds` of processing time, and once more at the end of input) under
    <folder>/date=YYYY-MM-DD/. No row can be dropped as late: nothing here has a window to miss."""

    def __init__(self, path: str, sink, suffix: str, streaming: bool, flush_seconds: float,
                 clock=Timestamp.now, reduce=None):
        super().__init__()
        self.path, self.sink, self.suffix, self.reduce = path, sink, suffix, reduce
        self.streaming, self.flush_seconds, self.clock = streaming, flush_seconds, clock

    def expand(self, rows):
        if not self.streaming:
            return rows | "Write" >> fileio.WriteToFiles(
                self.path, sink=self.sink, file_naming=firing_file_naming(self.suffix))
        return (rows
                | "Handed" >> beam.Map(_handed, self.path)       # the durability ledger's count
                | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
                | "OneKey" >> beam.Map(lambda row: ("", row)).with_output_types(
                    typing.Tuple[str, typing.Any])
                | "Flush" >> beam.ParDo(FlushFolder(self.path, self.sink, self.suffix,
                                                    self.flush_seconds, self.clock, self.reduce)))


def latest_status_per_key(rows: list) -> list:
    """A flush's status rows -> the newest (largest as_of) of each key: one row per key and flush
    (a key's snapshot timer and the folder's flush are not in step)."""
    latest: dict = {}
    for row in rows:
        key = (row.exchange, row.market, row.symbol)
        if key not in latest or row.as_of >= latest[key].as_of:
            latest[key] = row
    return list(latest.values())


# How a streaming flush reduces a folder's rows (the others keep every row).
FLUSH_REDUCE = {STATUS: latest_status_per_key}


class CommitCleanParts(beam.DoFn):
    """Batch: moves the clean Parquet parts the sequencer wrote to the work folder into clean/ (and
    the books/ parts into books/).

    The part's name (key and replay number) is kept, so a retried bundle moves a part onto itself;
    a part already moved (the retry of a bundle that had moved it) is found in place."""

    def __init__(self, folder: str, counter=progress.CLEAN):
        """`counter`: the progress counter the moved rows add to (None: none; books/ parts)."""
        self.folder = folder.rstrip("/")
        self.counter = counter

    def setup(self):
        from apache_beam.io.filesystems import FileSystems

        try:
            FileSystems.mkdirs(self.folder)      # local filesystems need it; object stores no-op
        except IOError:
            pass                                 # already there

    def process(self, part):
        """`part`: a CleanPart, or a BookPart (books/)."""
        from apache_beam.io.filesystems import FileSystems

        target = f"{self.folder}/part-{posixpath.basename(part.path)}"
        if FileSystems.exists(part.path):
            if FileSystems.exists(target):
                FileSystems.delete([target])
            FileSystems.rename([part.path], [target])
        elif not FileSystems.exists(target):
            raise FileNotFoundError(f"clean part {part.path} is gone and {target} was never written")
        if self.counter is not None:
            progress.add(self.counter, part.rows)
        yield target


class WriteSummary(beam.DoFn):
    """Writes summary.json, replacing the previous one (streaming fires it repeatedly), with the
    run's effective settings under "settings" (beam_pipeline/settings.py) when given."""

    def __init__(self, path: str, settings: dict = None):
        self.path = path
        self.settings = settings

    def process(self, summary: dict):
        from apache_beam.io.filesystems import FileSystems

        if self.settings is not None:
            summary = {**summary, "settings": self.settings}
        with FileSystems.create(self.path) as handle:
            handle.write(json.dumps(summary, indent=2, sort_keys=True).encode() + b"\n")
        yield self.path


class PublishJson(beam.DoFn):
    """Publishes each row as JSON to a Pub/Sub topic with retries, backoff and a circuit breaker.

    A row that cannot be delivered (retries exhausted, breaker open) is not dropped: it goes to the
    `undelivered` output with the reason, and from there to the undelivered/ folder."""

    UNDELIVERED = "undelivered"

    def __init__(self, topic: str, max_outstanding_messages: int = 1000):
        self.topic = topic
        self.max_outstanding_messages = max_outstanding_messages

    def setup(self):
        from beam_pipeline.core.resilience import ResilientPublisher

        # Publisher flow control: past this many unacknowledged messages publish() blocks, so a
        # slow Pub/Sub pushes back on the bundle instead of the worker buffering without bound.
        self.publisher = ResilientPublisher(
            self.topic, max_outstanding_messages=self.max_outstanding_messages)

    def process(self, row):
        from beam_pipeline.core.resilience import ExternalCallError

        data = msgspec.json.encode(row)
        try:
            self.publisher.publish(data)
        except ExternalCallError as error:
            yield beam.pvalue.TaggedOutput(self.UNDELIVERED, {
                "exchange": row.get("exchange"), "market": row.get("market"),
                "symbol": row.get("symbol"), "topic": self.topic, "reason": type(error).__name__,
                "message": str(error), "payload": data.decode()})

    def teardown(self):
        self.publisher.close()


class PublishKafkaJson(beam.DoFn):
    """Publishes each row as JSON (the bytes PublishJson sends to Pub/Sub) to a Kafka topic, key =
    its symbol, waiting for the brokers' ack (acks=all) so a row that cannot be delivered is known:
    it goes to the `undelivered` output with the reason, as PublishJson's do. The producer retries
    on its own within delivery_timeout_s; rows are rare (recovery requests), so waiting for each
    ack costs little."""

    UNDELIVERED = PublishJson.UNDELIVERED

    def __init__(self, bootstrap_servers: str, topic: str, delivery_timeout_s: float = 30.0):
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.delivery_timeout_s = delivery_timeout_s

    def setup(self):
        self.producer = None

    def _producer(self):
        from kafka import KafkaProducer

        if self.producer is None:      # made on first use: a broker down at setup is one row's error
            timeout_ms = int(self.delivery_timeout_s * 1000)
            self.producer = KafkaProducer(
                bootstrap_servers=self.bootstrap_servers.split(","), acks="all", retries=5,
                max_block_ms=timeout_ms, request_timeout_ms=timeout_ms,
                bootstrap_timeout_ms=timeout_ms)
        return self.producer

    def process(self, row):
        from kafka.errors import KafkaError

        data = msgspec.json.encode(row)
        symbol = row.get("symbol")
        try:
            self._producer().send(self.topic, value=data, key=symbol.encode() if symbol else None
                                  ).get(timeout=self.delivery_timeout_s)
        except KafkaError as error:
            yield beam.pvalue.TaggedOutput(self.UNDELIVERED, {
                "exchange": row.get("exchange"), "market": row.get("market"), "symbol": symbol,
                "topic": f"kafka:{self.topic}", "reason": type(error).__name__,
                "message": str(error), "payload": data.decode()})

    def teardown(self):
        if self.producer is not None:
            self.producer.close(timeout=self.delivery_timeout_s)


class WriteOutputs(beam.PTransform):
    """The pipeline's outputs -> folders under --output (and Pub/Sub topics in streaming).

    `clean` is the sequencer's clean output: CleanParts in batch (moved into clean/), Arrow tables in
    streaming (written by clean_sink). `clock`: the processing time streaming's flushes are timed
    by (FlushFolder; tests with TestStream pass their own). `settings`: the run's settings record,
    written into summary.json."""

    FOLDERS = {name: (sink, FOLDER_SUFFIX[name]) for name, sink in (
        (CLEAN, clean_sink), (DEAD_LETTER, dead_letter_sink), (GAPS, gap_sink),
        (CORRUPT_PERIODS, corrupt_sink), (RECOVERY_REQUESTS, recovery_sink),
        (ERROR_COUNTS, error_count_sink), (ALERTS, alert_sink), (STATUS, status_sink))}

    def __init__(self, options, streaming: bool, clock=Timestamp.now, settings: dict = None):
        super().__init__()
        self.settings = settings
        self.output = options.output.rstrip("/")
        self.options = options
        self.streaming = streaming
        self.clock = clock

    def expand(self, outputs):
        outputs = dict(outputs)
        outputs[RECOVERY_REQUESTS] = outputs[RECOVERY_REQUESTS] | "RecoveryAsJson" >> beam.Map(
            recovery_request_json)       # the topic's JSON; the Parquet sink reads its ISO time
        limit = self.options.memory_limit_gb
        for name, (make_sink, suffix) in self.FOLDERS.items():
            rows = outputs[name]
            if name == CLEAN and not self.streaming:
                # batch: CleanParts, written by the sequencer to the work folder: move them
                rows | "Commit_clean" >> beam.ParDo(CommitCleanParts(f"{self.output}/clean"))
                continue
            rows | f"Write_{name}" >> WriteFolder(
                f"{self.output}/{name}", lambda _, make=make_sink: make(limit), suffix,
                self.streaming, self.options.output_flush_seconds, self.clock,
                FLUSH_REDUCE.get(name))
        if BOOKS in outputs and not self.streaming:   # batch: parts the sequencer wrote
            outputs[BOOKS] | "Commit_books" >> beam.ParDo(CommitCleanParts(
                f"{self.output}/{BOOKS}", counter=None))
        elif BOOKS in outputs:               # --book_snapshots: its own folder, the same writers
            outputs[BOOKS] | f"Write_{BOOKS}" >> WriteFolder(
                f"{self.output}/{BOOKS}", lambda _: books_sink(limit), BOOKS_SUFFIX,
                self.streaming, self.options.output_flush_seconds, self.clock)
        undelivered = [
            (outputs[name] | f"Publish_{name}" >> beam.ParDo(publisher).with_outputs(
                PublishJson.UNDELIVERED, main="published"))[PublishJson.UNDELIVERED]
            for name, publisher in self._publishers().items()]
        if undelivered:
            (undelivered | "AllUndelivered" >> beam.Flatten()
             | "Write_undelivered" >> WriteFolder(f"{self.output}/{UNDELIVERED}",
                                                 lambda _: undelivered_sink(),
                                                 UNDELIVERED_SUFFIX, True,
                                                 self.options.output_flush_seconds, self.clock))
        return outputs["summary"] | "WriteSummary" >> beam.ParDo(
            WriteSummary(f"{self.output}/summary.json", self.settings))

    def _publishers(self) -> dict:
        """Streaming: {output: the DoFn that publishes its rows} for each topic given."""
        if not self.streaming:
            return {}
        ops, publishers = self.options, {}
        if ops.recovery_kafka_topic:
            publishers[RECOVERY_REQUESTS] = PublishKafkaJson(ops.kafka_bootstrap_servers,
                                                             ops.recovery_kafka_topic)
        elif ops.recovery_topic:
            publishers[RECOVERY_REQUESTS] = PublishJson(ops.recovery_topic)
        if ops.alerts_topic:
            publishers[ALERTS] = PublishJson(ops.alerts_topic)
        return publishers


OUTPUT_FOLDERS = tuple(WriteOutputs.FOLDERS)
# Every folder a run leaves (undelivered/ too: a run without topics leaves it empty, with schema).
EMPTY_FOLDERS = {**{name: suffix for name, (_, suffix) in WriteOutputs.FOLDERS.items()},
                 UNDELIVERED: UNDELIVERED_SUFFIX}
EMPTY_FILE = layout.EMPTY_FILE     # + the folder's suffix: the file a folder with no rows holds


def empty_file_bytes(name: str) -> bytes:
    """A file of the folder's format with its schema and no rows."""
    buffer = io.BytesIO()
    schema = PARQUET_SCHEMAS.get(name)
    if schema is not None:
        pq.write_table(schema.empty_table(), buffer, compression="zstd")
    elif name == "dead_letter":
        fastavro.writer(buffer, DEAD_LETTER_SCHEMA, [], codec="deflate")
    return buffer.getvalue()


def write_empty_outputs(output: str, streaming: bool = False) -> list[str]:
    """Every output folder exists after a run, so readers of a folder (pq.read_table("out/gaps"),
    DuckDB's read_parquet('out/gaps/**/*.parquet')) work on a run without gaps: a folder with no
    file (in either layout) gets one with the schema and no rows, part-empty<suffix>: at the
    folder's top in batch, in the current date partition in streaming (so a streaming folder is
    all partitions, as a Hive-partitioned reader wants). Returns the files written."""
    from apache_beam.io.filesystems import FileSystems

    written = []
    for name, suffix in EMPTY_FOLDERS.items():
        folder = f"{output.rstrip('/')}/{name}"
        if layout.data_files(folder, suffix):
            continue
        where = f"{folder}/{layout.partition_of(time.time())}" if streaming else folder
        path = f"{where}/{layout.empty_file_name(suffix)}"
        if not _is_remote(where):
            os.makedirs(where, exist_ok=True)
        with FileSystems.create(path) as handle:
            handle.write(empty_file_bytes(name))
        written.append(path)
    return written


def _is_remote(path: str) -> bool:
    return "://" in path
