"""Sources: capture files (batch) and Pub/Sub messages (streaming), as batches of raw records."""
from __future__ import annotations

import contextlib
import gzip
import itertools
import logging
import time
import traceback
import zlib

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue
from isal import igzip

from beam_pipeline.core import tallies
from beam_pipeline.core.framings import HEAD_RECORDS
from beam_pipeline.core.model import DeadLetter, RawBatch, dead_letter
from beam_pipeline.core.reasons import Reason
import transforms.coders  # noqa: F401  (registers the batch coders)
from beam_pipeline.core.runtime import now_ms
from transforms.tags import DEAD_LETTER, INPUT_LAG, TALLY
from transforms.follow import FollowFeedFiles
from transforms.lines import (BLOCK_BYTES, RECORDS_PER_BATCH, Framer, LineSplitter,  # noqa: F401
                              _split_slowly, detect_framing, is_skipped, read_error, split_lines)

# split_lines, _split_slowly: transforms/lines.py, imported here too (their tests know them here)
_LOG = logging.getLogger("feedcheck.read")


def _blocks(handle):
    # GzipFile.read1: each block returns what was decompressed so far, so data before damage is kept
    read = handle.read1 if isinstance(handle, (gzip.GzipFile, igzip.IGzipFile)) else handle.read
    while True:
        block = read(BLOCK_BYTES)
        if not block:
            return
        yield block


def _remember_partial_record(blocks, partial: bytearray, limit: int):
    """Passes the blocks on, keeping in `partial` the bytes read since the last newline (at most
    `limit`): the record a read error interrupts, which its dead letter keeps as payload."""
    for block in blocks:
        end = block.rfind(b"\n")
        if end >= 0:
            partial[:] = block[end + 1:end + 1 + limit]
        elif len(partial) < limit:
            partial += block[:limit - len(partial)]
        yield block


def _file_blocks(readable: fileio.ReadableFile, stack: contextlib.ExitStack):
    """The file's bytes, decompressed, in blocks. Beam's own gzip reader ends a truncated file
    silently (its last line cut short, no error); Python's gzip raises EOFError there, so .gz files
    are read by _gzip_blocks."""
    path = readable.metadata.path
    if CompressionTypes.detect_compression_type(path) == CompressionTypes.GZIP:
        return _gzip_blocks(path)
    return _blocks(stack.enter_context(readable.open(compression_type=CompressionTypes.AUTO)))


def _open_raw(path: str):
    return FileSystems.open(path, mime_type="application/octet-stream",
                            compression_type=CompressionTypes.UNCOMPRESSED)


def _gzip_blocks(path: str):
    """A gzip file's blocks, decompressed by ISA-L (5x less CPU than zlib, measured: bench/README.md).
    ISA-L keeps back some of what it decompressed before a damaged or truncated spot, so on any
    error the file is read again by Python's gzip, which gives every byte before the damage and
    then raises its own error: the blocks and the error are exactly Python gzip's."""
    delivered = 0
    try:
        with _open_raw(path) as raw, igzip.IGzipFile(fileobj=raw, mode="rb") as fast:
            for block in _blocks(fast):
                delivered += len(block)
                yield block
        return
    except Exception:             # noqa: BLE001 (any failure: the exact reader decides)
        pass
    with _open_raw(path) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as exact:
        for block in _blocks(exact):
            if delivered >= len(block):
                delivered -= len(block)
                continue
            yield block[delivered:]
            delivered = 0


def _numbered_lines(readable: fileio.ReadableFile, max_record_bytes: int, partial: bytearray,
                    held: list = None):
    """The file's lines. With `held` (a list), an unterminated last line is not yielded but put
    there: the file may still be being written (ReadRecordBatches, quiet_seconds)."""
    with contextlib.ExitStack() as stack:
        blocks = _remember_partial_record(_file_blocks(readable, stack), partial, max_record_bytes)
        splitter = LineSplitter(max_record_bytes)
        for block in blocks:
            yield from splitter.feed(block)
        rest = splitter.rest()
        if rest is not None:
            if held is None:
                yield rest
            else:
                held.append(rest)


class _Guarded:
    """Iterates until the source raises, then keeps the error (a truncated gzip member, a vanished
    file): what was read before it is still used."""

    def __init__(self, lines):
        self.lines, self.error, self.trace = lines, None, None

    def __iter__(self):
        try:
            yield from self.lines
        except Exception as error:
            self.error, self.trace = error, traceback.format_exc()


def _head(lines, count: int) -> list:
    """The first lines of `lines` up to and including its `count`-th non-blank one."""
    head, records = [], 0
    for item in lines:
        head.append(item)
        records += bool(item[1].strip())
        if records >= count:
            break
    return head


def still_being_written(path: str, what: str, age_s: float, quiet_seconds: float):
    """A young file's torn tail, left out: a warning naming the file, and its tally (summary.json
    still_being_written)."""
    _LOG.warning("%s: %s, and the file was modified %.1f s ago (< --quiet_seconds=%g): it is still "
                 "being written; its complete records are read, that tail is not (read the file "
                 "again once it is quiet)", path, what, age_s, quiet_seconds)
    yield beam.pvalue.TaggedOutput(TALLY, ((tallies.STILL_BEING_WRITTEN, path), 1))


def is_torn(error: BaseException) -> bool:
    """A gzip stream that ends inside a member (what a writer leaves until its write is whole),
    as opposed to damage."""
    return isinstance(error, EOFError)


class ReadRecordBatches(beam.DoFn):
    """One matched file -> RawBatch elements of up to `batch_size` records, plus read failures.

    The file's format is detected from its first records (framings.detect), unless forced; see
    Framer for the lines that are not records. Per file, tallies name its format
    (`format.<name>`).

    `quiet_seconds`: a file modified less than this long ago may still be being written. Its torn
    last gzip member, or its unterminated last line, is then left out with a warning naming the
    file (tally still_being_written), not dead-lettered or read as a record; an older file's torn
    member is a read_error and its unterminated last line a record. None: every file is taken as
    it is (no age check)."""

    def __init__(self, input_format: str, max_record_bytes: int,
                 batch_size: int = RECORDS_PER_BATCH, skip_names=(), quiet_seconds=None):
        self.input_format = input_format
        self.max_record_bytes = max_record_bytes
        self.batch_size = batch_size
        self.skip_names = tuple(skip_names)
        self.quiet_seconds = quiet_seconds

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        if is_skipped(path, self.skip_names):          # a README or LICENSE beside the captures
            yield beam.pvalue.TaggedOutput(TALLY, ((tallies.SKIPPED_FILES, path), 1))
            return
        age = time.time() - (readable.metadata.last_updated_in_seconds or 0)
        young = bool(self.quiet_seconds) and age < self.quiet_seconds
        partial = bytearray()          # the record being read when a read error cuts it short
        held = [] if young else None   # a young file's unterminated last line, held back
        source = _Guarded(_numbered_lines(readable, self.max_record_bytes, partial, held))
        lines = iter(source)
        head = _head(lines, HEAD_RECORDS)
        framer = Framer.open(path, detect_framing(self.input_format, head), head, self.batch_size)
        for number, line in itertools.chain(head, lines):
            yield from framer.line(number, line)
        if source.error is not None:
            if young and is_torn(source.error):
                yield from still_being_written(path, "its last gzip member is torn", age,
                                               self.quiet_seconds)
            else:
                yield from read_error(path, framer.last_line + 1, source.error, source.trace,
                                      partial)
        elif held:
            yield from still_being_written(path, "its last line is unterminated", age,
                                           self.quiet_seconds)
        yield from framer.flush()
        yield beam.pvalue.TaggedOutput(TALLY, ((tallies.FORMAT + framer.fmt, path), 1))
        yield from framer.reconnect_tally()


class ReadFeedFiles(beam.PTransform):
    """File globs -> RawBatch (main), read failures (`dead_letter`), `tally` counts.

    With `watch_seconds` the globs are listed again every so often and each file is followed:
    what was appended since the last read is read, each byte once (transforms/follow.py); a
    streaming source that also runs on Flink, where Beam's Pub/Sub source does not. Without, the
    files are read once, whole (batch). `quiet_seconds` (--quiet_seconds): how recently modified a
    file must be for its torn tail to count as still being written (ReadRecordBatches,
    FollowFiles); None takes every file as it is."""

    def __init__(self, globs, input_format: str, max_record_bytes: int, watch_seconds=None,
                 skip_names=(), quiet_seconds=None, progress_folder: str = None, resume=None):
        """`watch_seconds`: None reads the files once (batch); `skip_names`: file-name patterns
        not to read (--skip_files); `progress_folder`, `resume`: a followed file's progress saved
        at a stop and read by the restarted job (FollowFiles)."""
        super().__init__()
        self.follow = FollowFeedFiles(
            globs, input_format, max_record_bytes, watch_seconds, quiet_seconds or 0.0, skip_names,
            progress_folder, resume) if watch_seconds else None
        self.globs = list(globs)
        self.input_format = input_format
        self.max_record_bytes = max_record_bytes
        self.skip_names = tuple(skip_names)
        self.quiet_seconds = quiet_seconds

    def expand(self, pbegin):
        if self.follow is not None:
            return pbegin | "Follow" >> self.follow
        return (pbegin
                | "Globs" >> beam.Create(self.globs)
                | "Match" >> fileio.MatchAll()
                | "Distribute" >> beam.Reshuffle()
                | "Open" >> fileio.ReadMatches()
                | "Split" >> beam.ParDo(ReadRecordBatches(self.input_format, self.max_record_bytes,
                                                         skip_names=self.skip_names,
                                                         quiet_seconds=self.quiet_seconds))
                .with_output_types(RawBatch)
                .with_outputs(DEAD_LETTER, TALLY, main="batches"))


class ParseMessages(beam.DoFn):
    """Pub/Sub messages -> RawBatches of their records (JSON Lines, gzip-compressed when the
    attribute content_encoding=gzip), or one read_error dead letter with the raw bytes for a
    message that does not decompress; plus `tally` counts and an input-lag sample (publish time,
    ingest time) per message.

    Single-record messages with the same attributes are gathered into one RawBatch per bundle
    (each record keeps its own source): every element costs the whole graph a little, so a
    thousand one-record messages cost about what one thousand-record message does."""

    def __init__(self, max_record_bytes: int, max_message_bytes: int, scheme: str = "pubsub"):
        """`scheme`: the bus, first part of each source (pubsub:<message id>, kafka:<t/p/offset>)."""
        self.max_record_bytes = max_record_bytes
        self.max_message_bytes = max_message_bytes
        self.scheme = scheme

    def start_bundle(self):
        self.singles = {}

    def process(self, message):
        ingest = now_ms()
        publish = _publish_ms(message)
        yield beam.pvalue.TaggedOutput(INPUT_LAG, (publish, ingest))
        parsed = message_batch(message.data, dict(message.attributes or {}),
                               message.message_id or "", publish, ingest,
                               self.max_record_bytes, self.max_message_bytes, self.scheme)
        if isinstance(parsed, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, parsed)
            yield beam.pvalue.TaggedOutput(TALLY, ("input_records", 1))
        elif parsed.records and parsed.records[0][0] == 0:          # a single-record message
            self.singles.setdefault(tuple(sorted(parsed.attributes.items())), []).append(parsed)
        else:
            yield parsed

    def finish_bundle(self):
        for singles in self.singles.values():
            first = singles[0]
            merged = RawBatch(self.scheme, first.fmt, first.exchange, first.market,
                              [(0, batch.records[0][1]) for batch in singles], first.attributes,
                              first.ingest_time, max(batch.publish_time for batch in singles),
                              [batch.source for batch in singles])
            yield WindowedValue(merged, Timestamp.of(merged.publish_time / 1000), [GlobalWindow()])
        self.singles = {}


def _publish_ms(message) -> int:
    published = getattr(message, "publish_time", None)
    if published is None:
        return now_ms()
    if hasattr(published, "timestamp"):          # a datetime (the Python client's type)
        return int(published.timestamp() * 1000)
    return int(published.seconds * 1000 + published.nanos // 1_000_000)   # a protobuf Timestamp


def message_batch(data: bytes, attributes: dict, message_id: str, publish_ms: int, ingest_ms: int,
                  max_record_bytes: int, max_message_bytes: int, scheme: str = "pubsub"):
    """One message's records as a RawBatch (record numbers are lines of the message; 0 for a
    single-record message, whose source stays <scheme>:<message id>), or a read_error DeadLetter."""
    source = f"{scheme}:{message_id}"
    encoding = attributes.get("content_encoding", "")
    if encoding == "gzip":
        try:
            data = _gunzip(data, max_message_bytes)
        except (OSError, EOFError, zlib.error, ValueError) as error:
            return dead_letter(Reason.READ_ERROR, f"content_encoding=gzip but the message does not "
                              f"decompress: {type(error).__name__}: {error}", "read",
                              data[:max_record_bytes + 1], source, ingest_ms)
    elif encoding not in ("", "identity"):
        return dead_letter(Reason.READ_ERROR, f"unknown content_encoding {encoding!r} (known: gzip, "
                          "identity)", "read", data[:max_record_bytes + 1], source, ingest_ms)
    fmt = attributes.get("format") or "message"
    body = data[:-1] if data.endswith(b"\n") else data
    if encoding == "" and b"\n" not in body:
        records = [(0, body)]                     # a single-record message, as before batching
    else:
        records = [(number, line.rstrip(b"\r")[:max_record_bytes + 1])
                   for number, line in enumerate(body.split(b"\n"), 1) if line.strip()]
    return RawBatch(source, fmt, attributes.get("exchange"), attributes.get("market"), records,
                    attributes, ingest_ms, publish_ms)


def _gunzip(data: bytes, limit: int) -> bytes:
    """gzip members -> bytes, refusing more than `limit` bytes (a small message can unpack huge)."""
    out, rest = [], data
    size = 0
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        out.append(inflater.decompress(rest, limit - size + 1))
        size += len(out[-1])
        if size > limit or inflater.unconsumed_tail:
            raise ValueError(f"decompresses to more than --max_message_bytes={limit}")
        if not inflater.eof:
            raise EOFError("the gzip stream is truncated")
        rest = inflater.unused_data
    return b"".join(out)


class ReadFeedMessages(beam.PTransform):
    """Pub/Sub subscription -> RawBatch per message (main `batches`), `dead_letter`, `tally`, and
    `input_lag` samples (publish time, ingest time) per message (streaming)."""

    def __init__(self, subscription: str, max_record_bytes: int, max_message_bytes: int):
        super().__init__()
        self.subscription = subscription
        self.max_record_bytes = max_record_bytes
        self.max_message_bytes = max_message_bytes

    def expand(self, pbegin):
        return (pbegin
                | "Pull" >> beam.io.ReadFromPubSub(subscription=self.subscription,
                                                   with_attributes=True)
                | "Parse" >> beam.ParDo(ParseMessages(self.max_record_bytes,
                                                      self.max_message_bytes))
                .with_output_types(RawBatch)
                .with_outputs(DEAD_LETTER, TALLY, INPUT_LAG, main="batches"))
