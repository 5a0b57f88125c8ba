"""What a venue's book allows, and the checks made on each complete message. Free of Beam.

A Profile says how a venue's book is kept and checked: its depth (Kraken: the subscribed depth;
None: every level), whether a delete of an absent level is an error (strict_deletes: only where
the venue's docs say it cannot happen; Binance documents it as normal), and its checksum algorithm
(core/books/checksums.py; None where the venue sends none).

check() applies one complete message to the book and returns (problems, verified): problems are
(CorruptReason, detail) pairs, in this order: bad_level / unknown_level (per level), crossed_book (after the whole
message), checksum_mismatch (when the venue sent a checksum and it disagrees); verified says whether a
checksum was sent and matched.
"""
from __future__ import annotations

from typing import Optional

import msgspec

from beam_pipeline.core.books.checksums import matches, of_book
from beam_pipeline.core.books.book import Book
from beam_pipeline.core.reasons import CorruptReason


class Profile(msgspec.Struct, frozen=True):
    depth: Optional[int] = None          # levels kept per side (None: all)
    strict_deletes: bool = False         # a delete of an absent level is unknown_level
    checksum: Optional[str] = None       # a checksums.ALGORITHMS name, or None
    drift_check: bool = False            # REST snapshots inside the stream are compared (Binance)

    def new_book(self) -> Book:
        return Book(self.depth, self.strict_deletes)


# Per venue (the exchange name adapters give). No venue in ../shared/docs/exchange-sequencing.md
# documents that a delete of an absent level cannot happen, so strict_deletes is off for all;
# Binance documents such deletes as normal. Kraken's depth is the subscription's (book-N): its
# adapter passes it (Profile(depth=N, ...)); 1000 is the deepest Kraken offers.
PROFILES: dict[str, Profile] = {
    "binance": Profile(drift_check=True),
    "okx": Profile(checksum="okx"),
    "bitget": Profile(checksum="bitget"),
    "kraken": Profile(depth=1000, checksum="kraken"),
    "bitfinex": Profile(checksum="bitfinex"),
}


def profile_of(exchange: str) -> Profile:
    """The profile of `exchange` (an exchange name, any case); a venue not listed gets the plain
    sanity checks (all levels, lenient deletes, no checksum)."""
    return PROFILES.get(exchange.lower().split("_")[0], Profile())


def crossed_problem(book: Book) -> tuple:
    """The crossed_book problem of a book that is crossed (both sides hold a level)."""
    bid, ask = book.best_bid(), book.best_ask()
    assert bid is not None and ask is not None, "called on a crossed book only"
    return CorruptReason.CROSSED_BOOK, f"best bid {bid[0]} >= best ask {ask[0]}"


def check(book: Book, profile: Profile, snapshot: bool, bids, asks,
          checksum: Optional[int] = None) -> tuple:
    """Applies one complete message (a snapshot replaces the book): (problems, checksum verified)."""
    problems = book.load(bids, asks) if snapshot else book.apply(bids, asks)
    if book.crossed():
        problems.append(crossed_problem(book))
    ok = None
    if profile.checksum is not None:
        ok = matches(profile.checksum, book, checksum)
        if ok is False:
            problems.append((CorruptReason.CHECKSUM_MISMATCH,
                             f"sent {checksum}, book gives "
                             f"{of_book(profile.checksum, book)}"))
    return problems, ok is True
