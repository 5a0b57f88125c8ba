"""One key's rebuilt book through the sequencer's order, and the corrupt periods its checks find.

KeyBook is fed every message the sequencer applies, in its order (a snapshot that anchors or
resyncs, then the deltas that continue it). Rules (issue 24):
  - a segment not anchored on a snapshot has no book: its deltas are not checked (counted as
    unchecked), until a snapshot anchors the key again;
  - the first failing check of a message opens a corrupt period with that check's reason, starting
    at the failing message (its time and ids); while it is open the book is still kept but no
    further period opens (the book is known wrong);
  - the next snapshot that resyncs the book ends it (end id and time: the snapshot's); a book still
    wrong at the end of the data ends there (close()).
Free of Beam: the batch sequencer keeps one per key in memory; the streaming one keeps it in a
cache keyed by a version its state carries (transforms/).
"""
from __future__ import annotations

from typing import Optional

import msgspec

from beam_pipeline.core.books.book import Book
from beam_pipeline.core.books.checker import Profile, check, crossed_problem


class BookProblem(msgspec.Struct, frozen=True):
    """A corrupt period the book checks found: reason a CorruptReason, detail what failed."""

    reason: str
    start_id: int
    start_time: Optional[int]
    end_id: int
    end_time: int
    detail: str
    resolved: bool                       # ended by a resyncing snapshot (else: end of the data)


class BookCounts(msgspec.Struct):
    checked: int = 0                     # messages applied to an anchored book
    checksum_verified: int = 0           # ... whose venue checksum matched
    verified_unverified: int = 0         # ... of those, messages of a rule without per-key ids
                                         # (model.UNVERIFIED_RULES): proven by the checksum alone
    unchecked: int = 0                   # deltas of segments with no snapshot (no book)
    failed: int = 0                      # corrupt periods opened
    failed_by: dict[str, int] = msgspec.field(default_factory=dict)   # ... by reason


class KeyBook:
    """The book of one key and its open corrupt period, if any."""

    __slots__ = ("profile", "book", "anchored", "open", "last_id", "last_time", "counts")

    def __init__(self, profile: Profile):
        self.profile = profile
        self.book: Book = profile.new_book()
        self.anchored = False
        self.open: Optional[tuple] = None     # (reason, start_id, start_time, detail)
        self.last_id: Optional[int] = None
        self.last_time: Optional[int] = None
        self.counts = BookCounts()

    @property
    def ok(self) -> bool:
        """Is the book anchored, and do its checks pass?"""
        return self.anchored and self.open is None

    def snapshot(self, bids, asks, first_id: int, last_id: int, time: Optional[int],
                 checksum: Optional[int] = None) -> list:
        """A snapshot that (re)anchors the key: returns the periods it ends."""
        ended = self._end(last_id, time, resolved=True)
        self.anchored = True
        self._step(True, bids, asks, first_id, last_id, time, checksum)
        return ended

    def delta(self, bids, asks, first_id: int, last_id: int, time: Optional[int],
              checksum: Optional[int] = None) -> None:
        if not self.anchored:
            self.counts.unchecked += 1
            return
        self._step(False, bids, asks, first_id, last_id, time, checksum)

    def deltas(self, bids: list, asks: list, first_ids: list, last_ids: list, times: list) -> None:
        """Consecutive deltas at once (a clean stretch): what delta() does for each, in a loop
        that keeps only the per-message work (the book checks' hot path; venues with a checksum
        take delta() per message)."""
        if not self.anchored or self.profile.checksum is not None:
            for row in zip(bids, asks, first_ids, last_ids, times):
                self.delta(*row)
            return
        book = self.book
        apply, crossed = book.apply, book.crossed
        for i, (bid_levels, ask_levels) in enumerate(zip(bids, asks)):
            problems = apply(bid_levels, ask_levels)
            if crossed():
                problems.append(crossed_problem(book))
            if problems and self.open is None:
                reason, detail = problems[0]
                self.fail(reason, detail, first_ids[i], times[i])
        if last_ids:
            self.counts.checked += len(last_ids)
            self.last_id, self.last_time = last_ids[-1], times[-1]

    def unanchor(self) -> None:
        """The sequencer continued without a snapshot (a gap): the key has no book until the next
        snapshot. An open period stays open (the next snapshot or the end of the data ends it)."""
        self.anchored = False
        self.book.clear()

    def fail(self, reason, detail: str, start_id: int, start_time: Optional[int]) -> bool:
        """Opens a period found outside check() (the drift check); False when one is open."""
        if self.open is not None:
            return False
        self.open = (reason, start_id, start_time, detail)
        self.counts.failed += 1
        self.counts.failed_by[str(reason)] = self.counts.failed_by.get(str(reason), 0) + 1
        return True

    def close(self) -> list:
        """The end of the data: ends an open period at the last message seen."""
        if self.last_id is None:
            return []
        return self._end(self.last_id, self.last_time or 0, resolved=False)

    def _step(self, snapshot, bids, asks, first_id, last_id, time, checksum) -> None:
        self.last_id, self.last_time = last_id, time
        counts = self.counts
        counts.checked += 1
        book = self.book
        if not snapshot and self.profile.checksum is None:      # the hot path: check(), inlined
            problems = book.apply(bids, asks)
            if book.crossed():
                problems.append(crossed_problem(book))
        else:
            problems, verified = check(book, self.profile, snapshot, bids, asks, checksum)
            counts.checksum_verified += verified
        if problems and self.open is None:
            reason, detail = problems[0]
            self.fail(reason, detail, first_id, time)

    def _end(self, end_id: int, end_time: Optional[int], resolved: bool) -> list:
        if self.open is None:
            return []
        reason, start_id, start_time, detail = self.open
        self.open = None
        return [BookProblem(str(reason), start_id, start_time, end_id,
                            end_time if end_time is not None else 0, detail, resolved)]
