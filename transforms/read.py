"""Sources: capture files (batch) and Pub/Sub messages (streaming), as batches of raw records."""
from __future__ import annotations

import contextlib
import gzip
import traceback

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.core.framing import context_from_header, detect_format, is_header
import transforms.coders  # noqa: F401  (registers the batch coders)
from beam_pipeline.core.model import RawBatch, dead_letter
from beam_pipeline.core.reasons import Reason
from beam_pipeline.core.runtime import now_ms
from transforms.tags import DEAD_LETTER, TALLY

BLOCK_BYTES = 1 << 20
# Records per RawBatch: 5,000 (~2 MB of JSON) makes Beam's per-element costs and the batch
# sequencer's per-chunk costs vanish, and keeps a worker's memory flat.
RECORDS_PER_BATCH = 5000


def split_lines(blocks, max_record_bytes: int):
    """Yield (line_number, bytes) from byte blocks; a line longer than the limit is cut at limit+1
    bytes (enough for the decoder to reject it) and the rest of it is skipped, so one huge line never
    sits in memory whole."""
    number, pending, oversized = 0, b"", False
    for block in blocks:
        start = 0
        while True:
            end = block.find(b"\n", start)
            if end < 0:
                if not oversized:
                    pending += block[start:]
                    if len(pending) > max_record_bytes:
                        pending, oversized = pending[:max_record_bytes + 1], True
                break
            number += 1
            line = pending + block[start:end] if not oversized else pending
            pending, oversized = b"", False
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]                # a UTF-8 byte-order mark is not content
            yield number, line[:max_record_bytes + 1].rstrip(b"\r")
            start = end + 1
    if pending:
        yield number + 1, pending.rstrip(b"\r")


def _blocks(handle):
    # GzipFile.read1: each block returns what was decompressed so far, so data before damage is kept
    read = handle.read1 if isinstance(handle, gzip.GzipFile) else handle.read
    while True:
        block = read(BLOCK_BYTES)
        if not block:
            return
        yield block


def _open(readable: fileio.ReadableFile, stack: contextlib.ExitStack):
    """Beam's own gzip reader ends a truncated file silently (its last line cut short, no error);
    Python's gzip raises EOFError there, so .gz files are decompressed with it."""
    path = readable.metadata.path
    if CompressionTypes.detect_compression_type(path) == CompressionTypes.GZIP:
        raw = stack.enter_context(FileSystems.open(
            path, mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED))
        return stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
    return stack.enter_context(readable.open(compression_type=CompressionTypes.AUTO))


class ReadRecordBatches(beam.DoFn):
    """One matched file -> RawBatch elements of up to `batch_size` records, plus read failures."""

    def __init__(self, input_format: str, max_record_bytes: int,
                 batch_size: int = RECORDS_PER_BATCH):
        self.input_format = input_format
        self.max_record_bytes = max_record_bytes
        self.batch_size = batch_size

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        fmt = None if self.input_format == "auto" else self.input_format
        ctx = None
        records, last_line = [], 0
        try:
            with contextlib.ExitStack() as stack:
                handle = _open(readable, stack)
                for number, line in split_lines(_blocks(handle), self.max_record_bytes):
                    last_line = number
                    if not line.strip():
                        continue                       # blank lines are not records
                    if ctx is None:
                        fmt = fmt or detect_format(line)
                        ctx = context_from_header(fmt, line) if is_header(line) else None
                        if ctx is not None:
                            continue                   # a capture header is not a record
                        ctx = context_from_header(fmt, b"-")
                    elif fmt == "cryptofeed" and is_header(line):
                        if records:                    # they belong to the previous header's stream
                            yield RawBatch(path, fmt, ctx.exchange, ctx.market, records)
                            records = []
                        ctx = context_from_header(fmt, line)
                        continue
                    records.append((number, line))
                    if len(records) >= self.batch_size:
                        yield RawBatch(path, fmt, ctx.exchange, ctx.market, records)
                        records = []
        except Exception as error:  # a truncated gzip member, a vanished file: keep what was read
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                Reason.READ_ERROR, f"{type(error).__name__}: {error}", "read",
                traceback.format_exc().encode()[-4096:], f"{path}:{last_line + 1}"))
            yield beam.pvalue.TaggedOutput(TALLY, ("input_records", 1))
        if records:
            yield RawBatch(path, fmt, ctx.exchange, ctx.market, records)


class ReadFeedFiles(beam.PTransform):
    """File globs -> RawBatch (main) and read failures (`dead_letter`), `tally` counts.

    With `watch_seconds`, the globs are matched again every so often and new files are read as they
    appear (fileio.MatchContinuously): a streaming source that also runs on Flink, where Beam's
    Pub/Sub source does not."""

    def __init__(self, globs, input_format: str, max_record_bytes: int, watch_seconds=None):
        """`watch_seconds`: None reads the files once (batch)."""
        super().__init__()
        self.globs = list(globs)
        self.input_format = input_format
        self.max_record_bytes = max_record_bytes
        self.watch_seconds = watch_seconds

    def _matched(self, pbegin):
        if not self.watch_seconds:
            return (pbegin | "Globs" >> beam.Create(self.globs)
                    | "Match" >> fileio.MatchAll())
        return [pbegin | f"Watch{i}" >> fileio.MatchContinuously(glob, self.watch_seconds)
                for i, glob in enumerate(self.globs)] | "AllMatches" >> beam.Flatten()

    def expand(self, pbegin):
        return (self._matched(pbegin)
                | "Distribute" >> beam.Reshuffle()
                | "Open" >> fileio.ReadMatches()
                | "Split" >> beam.ParDo(ReadRecordBatches(self.input_format, self.max_record_bytes))
                .with_output_types(RawBatch)
                .with_outputs(DEAD_LETTER, TALLY, main="batches"))


class ReadFeedMessages(beam.PTransform):
    """Pub/Sub subscription -> one RawBatch per message (streaming)."""

    def __init__(self, subscription: str):
        super().__init__()
        self.subscription = subscription

    def expand(self, pbegin):
        source = f"pubsub:{self.subscription}"
        return (pbegin
                | "Pull" >> beam.io.ReadFromPubSub(subscription=self.subscription,
                                                   with_attributes=True)
                | "AsBatch" >> beam.Map(lambda msg: RawBatch(
                    f"{source}/{msg.message_id or ''}", "message", None, None, [(0, msg.data)],
                    dict(msg.attributes or {}), now_ms())).with_output_types(RawBatch))
