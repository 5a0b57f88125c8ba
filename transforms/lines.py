"""A file's bytes -> numbered lines -> RawBatches, shared by the batch reader (transforms/read.py)
and the follower of growing files (transforms/follow.py): the line splitter and the framer keep
their state in the open so that a followed file is split and framed a read at a time exactly as a
whole file is."""
from __future__ import annotations

import fnmatch

import apache_beam as beam

from beam_pipeline.core import adapters, framings, tallies
from beam_pipeline.core.connections import ConnectionState, ConnectionWatch
from beam_pipeline.core.framings import UNKNOWN, FileContext
from beam_pipeline.core.framings.base import CONNECT, DISCONNECT, MESSAGE
from beam_pipeline.core.model import RawBatch, dead_letter
from beam_pipeline.core.reasons import Reason, Rejected
from transforms.tags import DEAD_LETTER, TALLY

BLOCK_BYTES = 1 << 20
# Records per RawBatch: 5,000 (~2 MB of JSON) makes Beam's per-element costs and the batch
# sequencer's per-chunk costs vanish, and keeps a worker's memory flat.
RECORDS_PER_BATCH = 5000


def split_lines(blocks, max_record_bytes: int):
    """Yield (line_number, bytes) from byte blocks; a line longer than the limit is cut at limit+1
    bytes (enough for the decoder to reject it) and the rest of it is skipped, so one huge line never
    sits in memory whole.

    A block whose lines are all short, without a carriage return, is split by one bytes.split (the
    common case); any other block line by line (`_split_slowly`): the same lines either way."""
    splitter = LineSplitter(max_record_bytes)
    for block in blocks:
        yield from splitter.feed(block)
    rest = splitter.rest()
    if rest is not None:
        yield rest


class LineSplitter:
    """split_lines with its state in the open: the lines numbered so far, the bytes after the last
    newline and whether they are an oversized line being skipped. A followed file
    (transforms/follow.py) keeps that state between two reads, so a line cut by the end of what was
    written so far continues where the next read begins; the lines are the same whatever the
    blocks."""

    def __init__(self, max_record_bytes: int, number: int = 0, pending: bytes = b"",
                 oversized: bool = False):
        self.max_record_bytes = max_record_bytes
        self.number, self.pending, self.oversized = number, pending, oversized

    def feed(self, block: bytes):
        """Yield the lines `block` completes. Consume it whole before reading the state."""
        if self.oversized or self.number == 0 or b"\r" in block or b"\r" in self.pending:
            yield from self._slowly(block)
            return
        lines = (self.pending + block).split(b"\n") if self.pending else block.split(b"\n")
        if max(map(len, lines)) > self.max_record_bytes:
            yield from self._slowly(block)
            return
        self.pending = lines.pop()
        first = self.number + 1
        self.number += len(lines)
        yield from zip(range(first, first + len(lines)), lines)

    def _slowly(self, block: bytes):
        self.number, self.pending, self.oversized = yield from _split_slowly(
            block, self.number, self.pending, self.oversized, self.max_record_bytes)

    def rest(self):
        """The unterminated last line as (number, bytes), None when there is none: at the end of
        a file it is a record (split_lines yields it)."""
        if not self.pending:
            return None
        return self.number + 1, self.pending.rstrip(b"\r")


def _split_slowly(block: bytes, number: int, pending: bytes, oversized: bool, max_record_bytes: int):
    """split_lines for one block, line by line; returns the state after it."""
    start = 0
    while True:
        end = block.find(b"\n", start)
        if end < 0:
            if not oversized:
                pending += block[start:]
                if len(pending) > max_record_bytes:
                    pending, oversized = pending[:max_record_bytes + 1], True
            return number, pending, oversized
        number += 1
        line = pending + block[start:end] if not oversized else pending
        pending, oversized = b"", False
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]                # a UTF-8 byte-order mark is not content
        yield number, line[:max_record_bytes + 1].rstrip(b"\r")
        start = end + 1


def detect_framing(input_format: str, head_lines):
    """The framing of a file from its first lines (framings.detect), or the forced one; None: no
    format recognises it."""
    if input_format == "auto":
        return framings.detect([line.lstrip() for _, line in head_lines if line.strip()])
    return framings.framing_for(input_format)


class Framer:
    """A file's lines -> RawBatches of up to `batch_size` records. Lines that are not records
    (headers, connect lines, blank lines) are skipped, a reconnect or disconnect marker counted
    (`reconnects`: a point where a gap may follow); a context change (a connect line naming another
    stream) closes the batch. Its state (context, connected, started, connection) outlives one read
    of a followed file (transforms/follow.py).

    In a format whose connect lines delimit connections (a framing's CONNECTIONS), the frames of a
    venue that numbers its connections' messages are checked here, in receive order: a skipped
    number gives a CONNECTION_BREAK marker per key the connection carried (core/connections.py),
    sent with the batch of the frame that revealed it (RawBatch.markers) and counted
    (`connection_breaks`)."""

    def __init__(self, path: str, framing, ctx: FileContext, batch_size: int,
                 connected: bool = False, started: bool = False,
                 connection: "ConnectionState | None" = None):
        self.path, self.ctx, self.batch_size = path, ctx, batch_size
        self.fmt = framing.NAME if framing else UNKNOWN
        self.control = framing.control if framing else (lambda line, ctx: None)
        self.observe = getattr(framing, "observe", None)   # optional: framings/base.py
        self.blank_is_disconnect = bool(framing and framing.BLANK_IS_DISCONNECT)
        self.connected, self.started = connected, started
        self.split = framing.split if framing else None
        self.delimits_connections = bool(getattr(framing, "CONNECTIONS", False))
        self.connection = connection            # the current connection's numbers, once numbered
        self.markers: list = []
        self.breaks = 0
        self.records, self.reconnects, self.last_line = [], 0, 0
        self.batch_fields = {}         # more RawBatch fields for every batch (a followed file's)

    @classmethod
    def open(cls, path: str, framing, head_lines, batch_size: int, **state) -> "Framer":
        ctx = (framing.open([line for _, line in head_lines if line.strip()], path) if framing
               else FileContext(UNKNOWN))
        return cls(path, framing, ctx, batch_size, **state)

    def line(self, number: int, line: bytes):
        """Yields the RawBatch this line completes, if any."""
        self.last_line = number
        if not line or line.isspace():             # blank lines are not records
            self.reconnects += self.blank_is_disconnect and self.started
            return
        marker = self.control(line, self.ctx)
        if marker is not None:                     # a header or connect line is not a record
            if marker.kind == DISCONNECT or (marker.kind == CONNECT and self.connected):
                self.reconnects += 1
            self.connected = self.connected or marker.kind == CONNECT
            if marker.kind in (CONNECT, DISCONNECT):
                self.connection = None             # a new connection numbers from its own start
            if marker.context != self.ctx:
                yield from self.flush()            # they belong to the previous stream
                self.ctx = marker.context
            return
        self.started = True
        if self.observe is not None:
            ctx = self.observe(line, self.ctx)
            if ctx is not self.ctx:                # a new channel: later records need it
                yield from self.flush()
                self.ctx = ctx
        self.records.append((number, line))
        if self.delimits_connections:
            self._check_connection(number, line)
        if len(self.records) >= self.batch_size:
            yield from self.flush()

    def _check_connection(self, number: int, line: bytes) -> None:
        """The frame's number, when its venue numbers the connection: markers of a break."""
        numbering = adapters.connection_numbering(self.ctx.exchange)
        if numbering is None:
            return
        try:
            record = self.split(line, self.ctx)
        except Rejected:
            return                                 # its dead letter comes from the decode stage
        found = numbering(record.payload, self.ctx.channels) if record.kind == MESSAGE else None
        if found is None:
            return
        if self.connection is None:
            self.connection = ConnectionState()
        markers = ConnectionWatch(self.ctx.exchange, self.connection).see(
            found[0], found[1], record.recv_time, f"{self.path}:{number}")
        if markers:
            self.breaks += 1
            self.markers.extend(markers)

    def flush(self):
        """The records gathered so far as one RawBatch (with the markers of the breaks they
        revealed)."""
        if self.records:
            yield RawBatch(self.path, self.fmt, self.ctx.exchange, self.ctx.market, self.records,
                           symbol=self.ctx.symbol, channels=self.ctx.channels,
                           markers=self.markers or None, **self.batch_fields)
            self.records, self.markers = [], []

    def reconnect_tally(self):
        if self.reconnects:
            yield beam.pvalue.TaggedOutput(TALLY, ((tallies.RECONNECTS, self.path), self.reconnects))
            self.reconnects = 0
        if self.breaks:
            yield beam.pvalue.TaggedOutput(TALLY, ((tallies.CONNECTION_BREAKS, self.path),
                                                   self.breaks))
            self.breaks = 0


def read_error(path: str, line: int, error: BaseException, trace: str, partial: bytes):
    """A read failure as its dead letter and its input-record tally: payload, the bytes read of the
    record the damage cut short (the schema's raw bytes, at most --max_record_bytes); message, what
    failed, with its trace."""
    yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
        Reason.READ_ERROR, f"{type(error).__name__}: {error}\n{trace[-4096:]}", "read",
        bytes(partial), f"{path}:{line}"))
    yield beam.pvalue.TaggedOutput(TALLY, (tallies.key(tallies.INPUT_RECORDS, path), 1))


def is_skipped(path: str, patterns) -> bool:
    """True when the file's name matches one of the --skip_files patterns."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)
