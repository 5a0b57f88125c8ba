"""The book checks on the sequencer's clean output, one key at a time. Free of Beam.

BookWatch is the hook the sequencing DoFns call for every message the state machine applies, in
the machine's order: its clean outputs, (Event, segment_id, anchored) or a CleanStretch of
deltas. It keeps the key's KeyBook (core/books/tracker.py) and returns the corrupt periods its
checks find, as CorruptPeriod rows with their ErrorEvents, like the machine's own.

  - A snapshot anchors the book (and ends an open period: it resyncs). A delta of a segment that
    is not anchored has no book to check (counted as unchecked).
  - Sanity and checksum checks: core/books/checker.py, per complete message.
  - Binance drift check: a snapshot inside a continuous segment is compared with the book rebuilt
    up to it. The book is exact only at a delta boundary (lastUpdateId equal to the last applied
    delta's last id); otherwise the comparison waits for the delta that straddles the snapshot
    and leaves out the levels it touches (if the next delta does not continue the stream, the
    snapshot only resyncs). Only prices both the anchoring snapshot and this one cover are
    compared (bids down to the higher of their lowest bids, asks up to the lower of their highest
    asks), so deep levels never seen give no false alarm. A difference is a snapshot_mismatch
    period from just after the last snapshot that agreed up to this one, detail the number of
    differing levels; the snapshot then resyncs the book.
  - Book snapshots (--book_snapshots N:INTERVAL): at the end of every INTERVAL of event time in
    which the book changed, its best N levels a side, stamped with that time, its segment and the
    last id applied; taken when the first message at or after that time arrives, only while the
    book is anchored and its checks pass, and only if that message continues the segment (one that
    starts a new segment may follow lost messages). On a venue whose
    only proof is the drift check (Binance) they are held until a snapshot inside the stream agrees
    (or the segment or the data ends); a disagreement drops them, as they lie in its period. While
    they wait, at most HELD_IN_MEMORY of them are in memory: the rest wait in an anonymous
    temporary file (_Held), so a stream with hours between two REST snapshots holds little.
"""
from __future__ import annotations

import tempfile
from decimal import Decimal
from typing import IO, Optional

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipeline.core.books.book import price_key
from beam_pipeline.core.books.checker import Profile, profile_of
from beam_pipeline.core.books.tracker import BookProblem, KeyBook
from beam_pipeline.core.columns import RULES, CleanStretch
from beam_pipeline.core.model import (PREVIOUS_LINK, SNAPSHOT, UNVERIFIED_RULES, CorruptPeriod,
                                      ErrorEvent, decode_levels, stream_name)
from beam_pipeline.core.reasons import CorruptReason, ErrorType
from beam_pipeline.core.tallies import BOOK_CHECKS

# The corrupt-period reasons the book checks give (each is counted in the summary's book_checks).
BOOK_REASONS = tuple(str(r) for r in (CorruptReason.CHECKSUM_MISMATCH, CorruptReason.CROSSED_BOOK,
                                      CorruptReason.BAD_LEVEL, CorruptReason.UNKNOWN_LEVEL,
                                      CorruptReason.SNAPSHOT_MISMATCH))


class BookSnapshot(msgspec.Struct, frozen=True):
    """One row of books/: the best levels of a checked book at `time` (ms, an interval's end)."""

    exchange: str
    market: str
    symbol: str
    time: int
    segment_id: Optional[int]
    last_id: int
    bids: list                     # [(price, qty)], best first, as the venue sent them
    asks: list


HELD_IN_MEMORY = 1024        # book snapshots awaiting the drift check kept in memory per key


class _Held:
    """Book snapshots awaiting the drift check, in order: up to HELD_IN_MEMORY in memory, the
    older ones written, HELD_IN_MEMORY at a time, to an anonymous temporary file (msgpack; the
    file is deleted when closed, and by the OS if the process dies)."""

    __slots__ = ("rows", "file")

    def __init__(self) -> None:
        self.rows: list = []
        self.file: Optional[IO[bytes]] = None

    def __bool__(self) -> bool:
        return bool(self.rows) or self.file is not None

    def add(self, row: "BookSnapshot") -> None:
        self.rows.append(row)
        if len(self.rows) >= HELD_IN_MEMORY:
            if self.file is None:
                self.file = tempfile.TemporaryFile()
            blob = _held_encoder.encode(self.rows)
            self.file.write(len(blob).to_bytes(8, "little") + blob)
            self.rows = []

    def drop(self) -> None:
        if self.file is not None:
            self.file.close()
        self.rows, self.file = [], None

    def take(self) -> list:
        """Every held row, oldest first; empties this."""
        rows, file = self.rows, self.file
        self.rows, self.file = [], None
        if file is None:
            return rows
        out = []
        with file:
            file.seek(0)
            while header := file.read(8):
                out.extend(_held_decoder.decode(file.read(int.from_bytes(header, "little"))))
        return out + rows


class _Pending:
    """A snapshot inside the segment that falls inside a delta: compared once that delta comes."""

    __slots__ = ("bids", "asks", "last_id", "time", "cursor")

    def __init__(self, bids, asks, last_id, time, cursor):
        self.bids, self.asks, self.last_id, self.time, self.cursor = bids, asks, last_id, time, cursor


class BookWatch:
    """The book checks of one key (`key`: (exchange, market, symbol))."""

    def __init__(self, key: tuple[str, str, str], profile: Optional[Profile] = None,
                 snapshots: Optional[tuple[int, int]] = None):
        """`snapshots`: (levels a side, interval ms) for book snapshots, or None."""
        self.key = key
        self.snapshots = snapshots
        self.changed_at: Optional[int] = None    # first change since the last book snapshot
        self.unconfirmed = _Held()               # book snapshots awaiting the drift check
        self.symbol = stream_name(key)
        self.book = KeyBook(profile or profile_of(key[0]))
        self.drift_check = self.book.profile.drift_check
        self.segment: Optional[int] = None
        self.cursor: Optional[int] = None        # last id applied to the book
        self.rule: Optional[str] = None
        self.pending: Optional[_Pending] = None
        self.anchor_range: Optional[tuple] = None  # (lowest bid, highest ask) of the anchoring snapshot
        self.agreed: Optional[tuple] = None      # (id, time) of the last snapshot the book agreed with
        self.out: list = []
        self._tallied: Optional[dict] = None

    # ---- the hook ---------------------------------------------------------------------------

    def observe(self, value) -> list:
        """One clean output of the machine -> the report rows it gives (CorruptPeriod, ErrorEvent)."""
        if isinstance(value, CleanStretch):
            self._stretch(value)
        else:
            event, segment, anchored = value
            verified = self.book.counts.checksum_verified
            if event.depth is not None:
                self.book.book.depth = event.depth      # the venue's depth (Kraken book-N)
            if event.kind == SNAPSHOT:
                self._snapshot(event.bids, event.asks, event.last_id, event.time, segment,
                               event.checksum)
            else:                       # a delta, or a CHECKSUM message (no levels)
                self._delta(decode_levels(event.bids), decode_levels(event.asks), event.first_id,
                            event.last_id, event.prev_id, event.rule, event.time, segment,
                            anchored, event.checksum)
            if event.rule in UNVERIFIED_RULES and self.book.counts.checksum_verified > verified:
                self.book.counts.verified_unverified += 1
        out, self.out = self.out, []
        return out

    def finish(self) -> list:
        """The end of the data: an open period ends at the last message."""
        self.pending = None
        self._confirm()
        self._report(self.book.close())
        out, self.out = self.out, []
        return out

    @property
    def counts(self):
        return self.book.counts

    def tallies(self) -> dict:
        """The counts that changed since the last call, as summary tallies (name -> increase);
        every name on the first call (the summary shows zeros too)."""
        counts = self.counts
        now = {"messages_checked": counts.checked, "checksums_verified": counts.checksum_verified,
               "unchecked": counts.unchecked, "failed": counts.failed,
               "unverified_checksum_verified": counts.verified_unverified,
               **{reason: 0 for reason in BOOK_REASONS}, **counts.failed_by}
        before, self._tallied = self._tallied, now
        if before is None:
            return {BOOK_CHECKS + name: n for name, n in now.items()}
        return {BOOK_CHECKS + name: n - before.get(name, 0) for name, n in now.items()
                if n != before.get(name, 0)}

    def ok(self) -> bool:
        """Is the book anchored and its checks passing (book snapshots may be taken)?"""
        return self.book.ok and self.pending is None

    # ---- messages ---------------------------------------------------------------------------

    def _stretch(self, stretch: CleanStretch) -> None:
        """A stretch's deltas, in slices (a batch stretch can hold a whole run: its levels are
        decoded a slice at a time, each slice in one decoder call)."""
        columns = stretch.columns
        for start in range(0, len(columns), _SLICE):
            self._stretch_slice(columns[start:start + _SLICE], stretch.segment_id,
                                stretch.anchored)

    def _stretch_slice(self, columns, segment, anchored) -> None:
        first, last = columns.array("first_id").tolist(), columns.array("last_id").tolist()
        times = columns.times().tolist()
        bids, asks = _levels_column(columns, "bids"), _levels_column(columns, "asks")
        rule = RULES.get(int(columns.array("rule")[0]))
        if self.pending is None and self.snapshots is None and anchored:
            # the common case, in bulk (what _delta does for each): an anchored stretch, no
            # snapshot waiting on it and no book snapshots to take between its messages
            self.segment, self.cursor, self.rule = segment, last[-1], rule
            self.book.deltas(bids, asks, first, last, times)
            return
        prev = columns.filled("prev_id", -2).tolist()
        for i in range(len(columns)):
            p = prev[i]
            self._delta(bids[i], asks[i], first[i], last[i], None if p == -2 else p, rule,
                        times[i], segment, anchored)

    def _snapshot(self, bids_text, asks_text, last_id, time, segment, checksum=None) -> None:
        kb, bids, asks = self.book, decode_levels(bids_text), decode_levels(asks_text)
        self._settle_pending()
        boundary = kb.ok and last_id == self.cursor and segment == self.segment
        if self.snapshots is not None:
            self._sample(time, boundary)
        inside = (self.drift_check and kb.ok and self.cursor is not None
                  and last_id >= self.cursor)
        if inside and last_id == self.cursor:
            self._compare(bids, asks, last_id, time, touched=None)
        elif inside:
            self.pending = _Pending(bids, asks, last_id, time, self.cursor)
            self.segment = segment
            return
        self._load(bids, asks, last_id, time, segment, checksum)

    def _delta(self, bids, asks, first_id, last_id, prev_id, rule, time, segment,
               anchored, checksum=None) -> None:
        kb = self.book
        pending = self.pending
        if pending is not None:
            self.pending = None
            continues = (prev_id == pending.cursor if rule == PREVIOUS_LINK
                         else first_id <= pending.cursor + 1)
            if anchored and continues:
                touched = {price_key(p) for p, _ in bids} | {price_key(p) for p, _ in asks}
                self._compare(pending.bids, pending.asks, pending.last_id, pending.time, touched)
            self._load(pending.bids, pending.asks, pending.last_id, pending.time, segment)
        sampling = self.snapshots is not None
        if sampling:
            self._sample(time, anchored and segment == self.segment)
        if not anchored:
            if kb.anchored:
                self._confirm()              # no snapshot inside this segment can check them now
                kb.unanchor()
                self.anchor_range = self.agreed = None
        self.segment, self.cursor, self.rule = segment, last_id, rule
        kb.delta(bids, asks, first_id, last_id, time, checksum)   # a period is reported when it ends
        if sampling:
            self._changed(time)

    def _settle_pending(self) -> None:
        """A pending snapshot with no straddling delta after it: it only resyncs."""
        pending, self.pending = self.pending, None
        if pending is not None:
            self._load(pending.bids, pending.asks, pending.last_id, pending.time, self.segment)

    def _load(self, bids, asks, last_id, time, segment, checksum=None) -> None:
        self._confirm()                      # agreed, or a resync the drift check cannot judge
        self._report(self.book.snapshot(bids, asks, last_id, last_id, time, checksum))
        self.segment, self.cursor = segment, last_id
        self.changed_at = None               # no book snapshot reaches back across a snapshot
        self._changed(time)
        self.anchor_range = _range(bids, asks)
        if self.agreed is None or self.book.open is None:
            self.agreed = (last_id, time)

    # ---- the drift check --------------------------------------------------------------------

    def _compare(self, bids, asks, last_id, time, touched) -> None:
        kb = self.book
        if not kb.ok or self.anchor_range is None:
            return
        (low_a, high_a), (low_s, high_s) = self.anchor_range, _range(bids, asks)
        book_bids, book_asks = kb.book.levels()
        differing = 0
        if low_a is not None and low_s is not None:        # a side either snapshot lacks: skipped
            low = max(low_a, low_s)
            differing += _differences(book_bids, _as_map(bids), touched, lambda p: p >= low)
        if high_a is not None and high_s is not None:
            high = min(high_a, high_s)
            differing += _differences(book_asks, _as_map(asks), touched, lambda p: p <= high)
        if differing:
            self.unconfirmed.drop()          # they lie in the period: dropped
            start_id, start_time = self.agreed if self.agreed is not None else (last_id, time)
            kb.fail(CorruptReason.SNAPSHOT_MISMATCH,
                    f"{differing} levels differ from the book rebuilt since snapshot {start_id}",
                    start_id + 1, start_time)
        # the snapshot is loaded next (_load), which ends the period there

    # ---- book snapshots ---------------------------------------------------------------------

    def _changed(self, time: int) -> None:
        if self.changed_at is None and self.snapshots is not None and self.ok():
            self.changed_at = time

    def _sample(self, time: int, continuing: bool) -> None:
        """Before a message at `time`: the book as it is ends the interval it changed in, when that
        interval has ended, the book is checked, and the message continues its segment (one that
        starts a new segment may follow lost messages: the book at the interval's end is unknown)."""
        if self.changed_at is None or self.snapshots is None:
            return
        levels, interval = self.snapshots
        due = (self.changed_at // interval + 1) * interval
        if time < due:
            return
        self.changed_at = None
        if not (continuing and self.ok()) or self.cursor is None:
            return
        book = self.book.book
        row = BookSnapshot(*self.key, time=due, segment_id=self.segment, last_id=self.cursor,
                           bids=book.top_bids(levels), asks=book.top_asks(levels))
        if self.drift_check:
            self.unconfirmed.add(row)
        else:
            self.out.append(row)

    def _confirm(self) -> None:
        if self.unconfirmed:
            self.out.extend(self.unconfirmed.take())

    # ---- outputs ----------------------------------------------------------------------------

    def _report(self, problems: list) -> None:
        for p in problems:
            self.out.append(ErrorEvent(ErrorType.CORRUPT_PERIOD, self.symbol, p.end_time))
            self.out.append(corrupt_period(self.key, p))


def corrupt_period(key: tuple[str, str, str], problem: BookProblem) -> CorruptPeriod:
    return CorruptPeriod(*key, start_id=problem.start_id, end_id=problem.end_id,
                         start_time=problem.start_time, end_time=problem.end_time,
                         reason=problem.reason, detail=problem.detail)


_held_encoder = msgspec.msgpack.Encoder()
_held_decoder = msgspec.msgpack.Decoder(list[BookSnapshot])
_SLICE = 2048                # stretch rows whose levels are decoded at once
_levels_lists = msgspec.json.Decoder(list[list[tuple[str, str]]])


def _levels_column(columns, name: str) -> list:
    """A levels column of a stretch, each row's canonical text decoded, in one decoder call on
    the texts joined by Arrow (no Python object per row before the decoder's)."""
    texts = columns.table.column(name).combine_chunks()
    as_one_list = pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), texts)
    joined = pc.binary_join(as_one_list, pa.scalar(b",", texts.type))[0].as_py()
    if joined is None:                     # a null text (none is expected): row by row
        joined = b",".join(text or b"[]" for text in texts.to_pylist())
    return _levels_lists.decode(b"[" + joined + b"]")


def _as_map(levels) -> dict:
    out = {}
    for price, size in levels:
        size = Decimal(size)
        if size:
            out[price_key(price)] = size
    return out


def _range(bids, asks) -> tuple:
    """(lowest bid, highest ask) a snapshot covers (None for an empty side)."""
    low = min((price_key(p) for p, _ in bids), default=None)
    high = max((price_key(p) for p, _ in asks), default=None)
    return low, high


def _differences(book: dict, snapshot: dict, touched, in_range) -> int:
    prices = {p for p in book.keys() | snapshot.keys() if in_range(p)}
    if touched:
        prices -= touched
    return sum(1 for p in prices if book.get(p) != snapshot.get(p))
