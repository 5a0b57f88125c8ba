"""Streaming from files that grow (--streaming --input ... --watch_seconds N): rolling files are
read to their end, exactly once, as they are written.

    WatchTicks        one tick every N seconds of wall-clock time, stamped with it
      | ListFiles     the globs listed again: (path, Seen(size, mtime, newer file exists)) per file
      | FollowFiles   keyed by path: what is new since the last read -> RawBatches

How far each file was read is Beam state of its key (FileProgress in a ValueState: the offset of
the first gzip member not read whole, or of the first plain byte not read; the decompressed bytes
of that member already split into lines; the line number and the unterminated rest; the format and
framing context), so a Flink restore resumes each file where its checkpoint had it, and nothing of
it lives in a DoFn's memory. A gzip file (the collector's binance-spot-YYYYMMDDTHH.jsonl.gz, one
complete member per flush) is read member by member from that offset; a plain file line by line.

A graceful stop on DirectRunner (SIGTERM, Ctrl-C: the ticks end and the watermark reaches the end
of time) saves every file's progress in the output folder (transforms/cursors.py:
save_file_progress); the same job restarted (--job_id) starts each file from it, so nothing is
read twice across the two runs. During that drain no file is read again: the stop ends the input.

A file's format is detected from its first lines as in batch (up to 32 records), from those
there are when it is first read.

The tail is what a writer may still be writing: a gzip member the bytes end inside of (torn), or
an unterminated last line. While the file was modified less than --quiet_seconds ago its tail is
left for a later read (the lines decompressed so far from a torn member are read; the rest of it
and the unterminated line wait), and a processing-time timer reads the file again when that time is
up. Once the file has been quiet that long its tail is final: a torn member is a read_error dead
letter and nothing more of the file is read (as a batch run of it reads it); an unterminated line
is a record. A file is finished when it is quiet, read to its end and a newer file exists; a
finished file that grows after all is read again (and logged).

Time. Each batch of a followed file is published, for the live sequencer, at the latest receive
time of its records plus --quiet_seconds (transforms/decode.py: published): a writer that flushes
within --quiet_seconds of receiving a record (the collector flushes every second) has it on disk by
then. The watermark is the time of the last tick, and everything on disk at a tick is read before
that tick's watermark passes the reader (Beam's watermark follows the elements a step emits), so
when the watermark passes a batch's publish time plus --reorder_timeout every record received up to
--reorder_timeout after it has been sequenced: the reorder wait is on event time, as for Pub/Sub,
and the answer does not depend on load. A file that appears later holding records received long
ago is late: its records are sequenced as they come, the way a late Pub/Sub message is.

The ticks: on Flink (and Dataflow) Beam's PeriodicImpulse. Beam's streaming DirectRunner cannot run
it (a splittable DoFn: "PeriodicImpulse ... was not replaced as expected"). A stateful DoFn
looping on a processing-time timer after an Impulse did not tick either, seen on both runners: on
DirectRunner the Impulse's watermark ended the pipeline at once; on embedded Flink no timer fired in
90 s (the Impulse's final watermark expires the global window; Beam's Flink runner ignores
processing-time timers of an expired window). So on DirectRunner the ticks are a root transform of
our own (_DirectTicks), evaluated the way Beam evaluates its Pub/Sub read: one tick per bundle when
due, the watermark at the last tick.
"""
from __future__ import annotations

import logging
import time
import traceback
import zlib
from typing import Optional

import apache_beam as beam
import msgspec
from apache_beam import pvalue
from apache_beam.coders import BytesCoder
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Timestamp

from beam_pipeline.core import framings, runtime, tallies
from beam_pipeline.core.connections import ConnectionState
from beam_pipeline.core.framings import HEAD_RECORDS, FileContext
from beam_pipeline.core.model import RawBatch
from beam_pipeline.core.runtime import now_ms
from transforms.cursors import save_file_progress
from transforms.lines import (BLOCK_BYTES, RECORDS_PER_BATCH, Framer, LineSplitter, detect_framing,
                              is_skipped, read_error)
from transforms.tags import DEAD_LETTER, TALLY

_LOG = logging.getLogger("feedcheck.follow")

# FileProgress.closed
READING, SKIPPED, FAILED, FINISHED = "", "skipped", "read_error", "finished"


class Seen(msgspec.Struct, array_like=True):
    """What a listing says of a file."""

    size: int
    mtime: float               # seconds since the epoch
    newer: bool = False        # another file the same glob matches was modified later


class FileProgress(msgspec.Struct):
    """How far a followed file has been read (Beam state, one per file)."""

    offset: int = 0            # gzip: where the first member not read whole begins; plain: bytes read
    member_skip: int = 0       # gzip: decompressed bytes of that member already split into lines
    number: int = 0            # lines split so far
    pending: bytes = b""       # the bytes after the last newline (at most --max_record_bytes + 1)
    oversized: bool = False    # ... an oversized line, whose rest is skipped
    fmt: Optional[str] = None  # the format once detected (framings.detect), None before
    ctx: Optional[FileContext] = None
    connected: bool = False
    started: bool = False
    connection: Optional[ConnectionState] = None   # the numbers of the connection being read
    size: int = -1             # the file as it was at the last read
    mtime: float = 0.0
    newer: bool = False
    waiting: bool = False      # a tail waits for the file to be quiet (the quiet timer is set)
    behind: bool = False       # the last read stopped at READ_LIMIT_BYTES: more is on disk
    closed: str = READING      # SKIPPED, FAILED (a read_error: nothing more is read), FINISHED
    records: int = 0           # lines read (for the log)


READ_LIMIT_BYTES = 32 << 20    # of a file per read: a backlog is read this much a tick


_progress_codec = msgspec.msgpack.Decoder(FileProgress)
_encode = msgspec.msgpack.Encoder().encode


def _is_gzip(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) == CompressionTypes.GZIP


def _is_plain(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) == CompressionTypes.UNCOMPRESSED


def _open(path: str):
    return FileSystems.open(path, mime_type="application/octet-stream",
                            compression_type=CompressionTypes.UNCOMPRESSED)


class Torn(Exception):
    """The bytes end inside a gzip member (it is being written, or a write was cut short)."""


def gzip_members(handle, offset: int, skip: int):
    """A gzip file's decompressed bytes from `offset` (where a member begins), the first `skip` of
    them left out. Yields ("data", bytes) and, after each whole member, ("end", the offset after
    it); raises Torn when the bytes end inside a member (after yielding what it decompressed),
    zlib.error on damage. Zero bytes between members are padding, as for Python's gzip."""
    handle.seek(offset)
    position, buffered, inflater = offset, b"", None
    while True:
        if not buffered:
            buffered = handle.read(BLOCK_BYTES)
            if not buffered:
                break
        if inflater is None:
            if position > 0:
                stripped = buffered.lstrip(b"\0")
                position += len(buffered) - len(stripped)
                buffered = stripped
                if not buffered:
                    continue
            inflater = zlib.decompressobj(wbits=31)
        given = buffered
        out = inflater.decompress(given, BLOCK_BYTES)
        buffered = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        position += len(given) - len(buffered)
        out, skip = out[skip:], max(0, skip - len(out))
        if out:
            yield "data", out
        if inflater.eof:
            inflater = None
            yield "end", position
    if inflater is not None:                # the bytes ended inside a member
        out = inflater.flush()
        out, skip = out[skip:], max(0, skip - len(out))
        if out:
            yield "data", out
        raise Torn("Compressed file ended before the end-of-stream marker was reached")


def plain_blocks(handle, offset: int):
    """A plain file's bytes from `offset`: ("data", block), ("end", the offset after it)."""
    handle.seek(offset)
    while True:
        block = handle.read(BLOCK_BYTES)
        if not block:
            return
        offset += len(block)
        yield "data", block
        yield "end", offset


class _Read:
    """One read of a followed file: its new lines through a splitter into a framer."""

    def __init__(self, fn: "FollowFiles", path: str, progress: FileProgress, published: int):
        self.fn, self.path, self.progress = fn, path, progress
        self.splitter = LineSplitter(fn.max_record_bytes, progress.number, progress.pending,
                                     progress.oversized)
        framing = framings.framing_for(progress.fmt) if progress.fmt != framings.UNKNOWN else None
        self.framer = Framer(path, framing, progress.ctx, fn.batch_size, progress.connected,
                             progress.started, progress.connection)
        self.framer.batch_fields = {"publish_time": published, "recv_slack_ms": fn.quiet_ms}

    def lines(self, events, limit: int = None):
        """Yields the batches the new lines complete; keeps the progress in step with them. Stops
        at the first member (or block) end past `limit` bytes of the file read: the rest is read
        the next time (`behind`), so one read of a long backlog stays a bounded bundle."""
        progress = self.progress
        start = progress.offset
        for kind, value in events:
            if kind == "data":
                for number, line in self.splitter.feed(value):
                    yield from self.framer.line(number, line)
                progress.member_skip += len(value)
            else:
                progress.offset, progress.member_skip = value, 0
                if limit is not None and value - start >= limit:
                    progress.behind = True
                    return

    def final_line(self):
        """The unterminated last line as a record: the file has been quiet long enough."""
        rest = self.splitter.rest()
        if rest is not None:
            self.splitter.number, self.splitter.pending, self.splitter.oversized = rest[0], b"", False
            yield from self.framer.line(*rest)

    def close(self):
        """The batches still open, the reconnect tally; the progress saved back."""
        progress = self.progress
        yield from self.framer.flush()
        yield from self.framer.reconnect_tally()
        progress.records = self.splitter.number
        progress.number, progress.pending = self.splitter.number, self.splitter.pending
        progress.oversized = self.splitter.oversized
        progress.ctx, progress.connected = self.framer.ctx, self.framer.connected
        progress.started = self.framer.started
        progress.connection = self.framer.connection


class FollowFiles(beam.DoFn):
    """(path, Seen) -> what is new in the file since the last read: RawBatches (published for the
    live sequencer at their receive times plus --quiet_seconds, see the module docstring), read
    failures (`dead_letter`) and `tally` counts. Keyed by path: FileProgress in Beam state."""

    PROGRESS = ReadModifyWriteStateSpec("progress", BytesCoder())
    QUIET = TimerSpec("quiet", TimeDomain.REAL_TIME)
    END = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, input_format: str, max_record_bytes: int, quiet_seconds: float,
                 skip_names=(), batch_size: int = RECORDS_PER_BATCH, progress_folder: str = None,
                 resume=None):
        """`progress_folder`: where the end of the input (a graceful stop) saves each file's
        progress; `resume`: {path: FileProgress} the last stop of this job saved, each file's
        start when it has no state yet (a restart)."""
        self.progress_folder = progress_folder
        self.resume = dict(resume or {})
        self.input_format = input_format
        self.max_record_bytes = max_record_bytes
        self.quiet_seconds = quiet_seconds
        self.quiet_ms = max(1, int(round(quiet_seconds * 1000)))
        self.skip_names = tuple(skip_names)
        self.batch_size = batch_size

    def process(self, element, state=beam.DoFn.StateParam(PROGRESS),
                quiet_timer=beam.DoFn.TimerParam(QUIET), end_timer=beam.DoFn.TimerParam(END)):
        path, seen = element
        if self.progress_folder:
            end_timer.set(GlobalWindow().max_timestamp())
        yield from self._follow(path, seen, state, quiet_timer)

    @on_timer(QUIET)
    def quiet(self, path=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(PROGRESS),
              quiet_timer=beam.DoFn.TimerParam(QUIET)):
        """The file a tail waited in has been quiet for --quiet_seconds (unless it changed since):
        read it again now rather than at the next tick. Not during a stop's drain (whose
        processing time runs fast, runners/direct.py): the stop ended the input, and what the
        file holds now is for the restarted job."""
        if runtime.draining():
            return
        progress = self._load(path, state)
        try:
            [metadata] = FileSystems.match([path])[0].metadata_list
        except Exception:            # gone, or no longer one file: the next listing tells
            return
        seen = Seen(metadata.size_in_bytes, metadata.last_updated_in_seconds, progress.newer)
        yield from self._follow(path, seen, state, quiet_timer)

    @on_timer(END)
    def end(self, path=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(PROGRESS),
            quiet_timer=beam.DoFn.TimerParam(QUIET)):
        """The end of the input (a graceful stop): save how far the file was read, for the same
        job restarted."""
        quiet_timer.clear()
        save_file_progress(self.progress_folder, path, self._load(path, state))

    # -- the state --

    def _load(self, path: str, state) -> FileProgress:
        blob = state.read()
        if blob:
            return _progress_codec.decode(blob)
        resumed = self.resume.get(path)
        return msgspec.structs.replace(resumed) if resumed is not None else FileProgress()

    # -- one file --

    def _follow(self, path: str, seen: Seen, state, quiet_timer):
        progress = self._load(path, state)
        if progress.closed in (SKIPPED, FAILED):
            if progress.closed == FAILED and seen.size != progress.size:
                _LOG.warning("%s grew to %d bytes after its read_error at line %d: the rest is not "
                             "read (as in a batch run)", path, seen.size, progress.number + 1)
                progress.size, progress.mtime = seen.size, seen.mtime
                state.write(_encode(progress))
            return
        if is_skipped(path, self.skip_names):          # a README or LICENSE beside the captures
            progress.closed = SKIPPED
            state.write(_encode(progress))
            yield beam.pvalue.TaggedOutput(TALLY, ((tallies.SKIPPED_FILES, path), 1))
            return
        changed = (seen.size, seen.mtime) != (progress.size, progress.mtime)
        progress.newer = seen.newer
        quiet = time.time() - seen.mtime >= self.quiet_seconds
        if not changed and not progress.waiting and not progress.behind:
            if quiet and seen.newer and progress.closed != FINISHED:
                progress.closed = FINISHED
                _LOG.info("%s finished: %d lines, %d bytes (quiet, and a newer file exists)", path,
                          progress.records, seen.size)
                state.write(_encode(progress))
            return
        if changed and progress.closed == FINISHED:
            _LOG.warning("%s changed after it was finished (%d -> %d bytes): reading what is new",
                         path, progress.size, seen.size)
            progress.closed = READING
        if progress.size >= 0 and seen.size < progress.size:
            _LOG.warning("%s shrank (%d -> %d bytes): it was replaced or truncated; what was read "
                         "is not read again", path, progress.size, seen.size)
        progress.size, progress.mtime = seen.size, seen.mtime
        emitted = False
        try:
            for output in self._read(path, progress, quiet):
                emitted = True
                yield output
        except Exception:
            if emitted:         # outputs without the progress that goes with them: fail the bundle
                raise
            # nothing read (the file vanished, or cannot be opened now): the next tick tries again
            _LOG.warning("%s: reading failed, tried again at the next tick:\n%s", path,
                         traceback.format_exc())
            return
        if progress.waiting:
            quiet_timer.set(Timestamp.of(seen.mtime + self.quiet_seconds + 0.01))
        state.write(_encode(progress))

    def _read(self, path: str, progress: FileProgress, quiet: bool):
        """Reads what is new (mutating `progress`); yields the outputs. The caller saves the
        progress only once the whole read succeeded."""
        progress.waiting = False
        if progress.fmt is None:
            detected = self._detect(path, quiet)
            if detected is None:                   # not a record yet
                progress.waiting = not quiet
                return
            framing, head = detected
            framer = Framer.open(path, framing, head, self.batch_size)
            progress.fmt, progress.ctx = framer.fmt, framer.ctx
            yield beam.pvalue.TaggedOutput(TALLY, ((tallies.FORMAT + framer.fmt, path), 1))
        if not (_is_gzip(path) or _is_plain(path)):
            yield from self._read_whole(path, progress, quiet)
            return
        read = _Read(self, path, progress, now_ms())
        failure = None
        progress.behind = False
        with _open(path) as handle:
            events = (gzip_members(handle, progress.offset, progress.member_skip) if _is_gzip(path)
                      else plain_blocks(handle, progress.offset))
            try:
                yield from read.lines(events, READ_LIMIT_BYTES)
            except (Torn, EOFError, OSError, zlib.error) as error:
                if not isinstance(error, Torn) or quiet:
                    failure = (error, traceback.format_exc())
                else:
                    progress.waiting = True        # a member being written
            finally:
                events.close()
        if progress.behind:                        # not at the tail yet
            yield from read.close()
            return
        if failure is None and read.splitter.pending:
            if quiet:
                yield from read.final_line()
            else:
                progress.waiting = True            # a line being written
        yield from read.close()
        if failure is not None:
            progress.closed = FAILED
            yield from read_error(path, progress.number + 1, *failure,
                                  progress.pending[:self.max_record_bytes])

    def _read_whole(self, path: str, progress: FileProgress, quiet: bool):
        """Another compression (bzip2, ...): no member to resume at, so the file is read whole once
        it is quiet."""
        if not quiet:
            progress.waiting = True
            return
        read = _Read(self, path, progress, now_ms())
        failure = None
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
                yield from read.lines(plain_blocks(handle, 0))
        except Exception as error:
            failure = (error, traceback.format_exc())
        if failure is None:
            yield from read.final_line()
        yield from read.close()
        progress.closed = FAILED if failure else FINISHED
        if failure is not None:
            yield from read_error(path, progress.number + 1, *failure,
                                  progress.pending[:self.max_record_bytes])

    def _detect(self, path: str, quiet: bool):
        """(framing, head lines) from the file's first complete lines, up to HEAD_RECORDS
        non-blank ones, as batch detects from the whole file's; None while there is none. A file
        is read as soon as it holds a record: one that first holds a few lines of another format
        than the rest can be told apart only with --input_format."""
        splitter = LineSplitter(self.max_record_bytes)
        head, records = [], 0

        def take(items):
            nonlocal records
            for item in items:
                head.append(item)
                records += bool(item[1].strip())
                if records >= HEAD_RECORDS:
                    return True
            return False

        try:
            if _is_gzip(path) or _is_plain(path):
                with _open(path) as handle:
                    events = gzip_members(handle, 0, 0) if _is_gzip(path) else plain_blocks(handle, 0)
                    for kind, value in events:
                        if kind == "data" and take(splitter.feed(value)):
                            return detect_framing(self.input_format, head), head
            elif quiet:                            # another compression: read whole once quiet
                with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
                    for kind, value in plain_blocks(handle, 0):
                        if kind == "data" and take(splitter.feed(value)):
                            return detect_framing(self.input_format, head), head
        except (Torn, EOFError, OSError, zlib.error):
            pass                                   # the head is what could be read
        rest = splitter.rest()
        if quiet and rest is not None:             # a final line (see _read)
            take([rest])
        if not records:
            return None
        return detect_framing(self.input_format, head), head


class ListFiles(beam.DoFn):
    """A tick -> (path, Seen) for every file the globs match now (each path once)."""

    def __init__(self, globs):
        self.globs = list(globs)

    def process(self, _tick):
        seen = {}
        for pattern in self.globs:
            try:
                found = FileSystems.match([pattern])[0].metadata_list
            except Exception as error:    # a folder not there yet: nothing to read
                _LOG.debug("%s matches nothing yet: %s", pattern, error)
                continue
            newest = max((m.last_updated_in_seconds or 0 for m in found), default=0)
            for metadata in found:
                mtime = metadata.last_updated_in_seconds or 0
                seen.setdefault(metadata.path, Seen(metadata.size_in_bytes, mtime, mtime < newest))
        yield from seen.items()


class _DirectTicks(beam.PTransform):
    """The ticks' root on Beam's streaming DirectRunner (evaluated by _TicksEvaluator)."""

    def __init__(self, interval_s: float):
        super().__init__()
        self.interval_s = interval_s

    def get_windowing(self, unused_inputs):
        return beam.Windowing(GlobalWindows())

    def expand(self, pbegin):
        return pvalue.PCollection(pbegin.pipeline, is_bounded=False)


IDLE_SLEEP_S = 0.05     # DirectRunner: a root bundle whose tick is not due yet waits this long at most


def _register_direct_ticks() -> None:
    """Teach Beam's bundle-based DirectRunner to evaluate _DirectTicks: each root bundle emits one
    tick if one is due (else waits a little, as its Pub/Sub read polls), and holds the watermark at
    the last tick's time; the bundle is scheduled again, so the source never ends until a graceful
    stop (runners/direct.py: request_stop): then the ticks end and the watermark jumps to the end
    of time, and the job drains what it has read as a bounded input ends."""
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.runners.direct.util import TransformResult

    registry = transform_evaluator.TransformEvaluatorRegistry
    if _DirectTicks in registry._test_evaluators_overrides:
        return

    class _TicksEvaluator(transform_evaluator._TransformEvaluator):
        last_tick: dict = {}          # (run, applied transform label) -> time of its last tick

        def start_bundle(self):
            pass

        def process_element(self, element):
            pass

        def finish_bundle(self):
            if runtime.draining():        # a graceful stop: no more listings, the input ends
                return TransformResult(self, [], [], None, {None: MAX_TIMESTAMP})
            label = (id(self._evaluation_context), self._applied_ptransform.full_label)
            interval = self._applied_ptransform.transform.interval_s
            due = self.last_tick.get(label, 0.0) + interval
            wait = due - time.time()
            if wait > 0:
                time.sleep(min(wait, IDLE_SLEEP_S))
            bundles = []
            if time.time() >= due:
                now = time.time()
                self.last_tick[label] = now
                bundle = self._evaluation_context.create_bundle(list(self._outputs)[0])
                bundle.output(GlobalWindows.windowed_value(Timestamp.of(now),
                                                           timestamp=Timestamp.of(now)))
                bundles = [bundle]
            last = self.last_tick.get(label)
            watermark = Timestamp.of(last) if last is not None else MIN_TIMESTAMP
            again = self._evaluation_context.create_bundle(
                pvalue.PBegin(self._applied_ptransform.transform.pipeline))
            return TransformResult(self, bundles, [again], None, {None: watermark})

    registry._test_evaluators_overrides[_DirectTicks] = _TicksEvaluator


def _is_direct(runner) -> bool:
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner, DirectRunner

    return isinstance(runner, (DirectRunner, BundleBasedDirectRunner))


class WatchTicks(beam.PTransform):
    """One element every `interval_s` seconds of wall-clock time, stamped with its time; the
    watermark is the last tick's time. PeriodicImpulse, or _DirectTicks on DirectRunner."""

    def __init__(self, interval_s: float):
        super().__init__()
        self.interval_s = interval_s

    def expand(self, pbegin):
        if _is_direct(pbegin.pipeline.runner):
            _register_direct_ticks()
            return pbegin | "DirectTicks" >> _DirectTicks(self.interval_s)
        return pbegin | "PeriodicImpulse" >> PeriodicImpulse(
            start_timestamp=Timestamp.now(), fire_interval=self.interval_s)


class FollowFeedFiles(beam.PTransform):
    """File globs, watched -> RawBatch (main `batches`), read failures (`dead_letter`), `tally`."""

    def __init__(self, globs, input_format: str, max_record_bytes: int, watch_seconds: float,
                 quiet_seconds: float, skip_names=(), progress_folder: str = None, resume=None):
        """`progress_folder`, `resume`: see FollowFiles; used on DirectRunner only, whose stop
        drains the job (Flink keeps each file's progress in its checkpoints and savepoints)."""
        super().__init__()
        self.progress_folder = progress_folder
        self.resume = resume
        self.globs = list(globs)
        self.input_format = input_format
        self.max_record_bytes = max_record_bytes
        self.watch_seconds = watch_seconds
        self.quiet_seconds = quiet_seconds
        self.skip_names = tuple(skip_names)

    def expand(self, pbegin):
        direct = _is_direct(pbegin.pipeline.runner)
        return (pbegin
                | "Ticks" >> WatchTicks(self.watch_seconds)
                | "List" >> beam.ParDo(ListFiles(self.globs))
                | "TypedPaths" >> beam.Map(lambda kv: kv).with_output_types(
                    beam.typehints.Tuple[str, Seen])
                | "Follow" >> beam.ParDo(FollowFiles(
                    self.input_format, self.max_record_bytes, self.quiet_seconds, self.skip_names,
                    progress_folder=self.progress_folder if direct else None,
                    resume=self.resume if direct else None))
                .with_output_types(RawBatch)
                .with_outputs(DEAD_LETTER, TALLY, main="batches"))
