"""An L2 order book of one key, with exact decimals, and the sanity checks it can make. Free of Beam.

Each side maps a price to the level exactly as the venue last sent it, (price text, size text), so
checksums over the venue's own strings can be computed (core/books/checksums.py). A size of zero
removes the level. A venue that sends only the top `depth` levels (Kraken) has its book truncated
to `depth` after every message.

Prices are ordered exactly, and "100.0" and "100.00" are one level: price_key() is the float of a
price text of at most 16 characters (at most 15 significant digits: distinct such decimals are
distinct floats, in the same order, and a float compares with a Decimal exactly), and the Decimal
of a longer one. Sizes are classified (zero, negative, not a number) by their float, which is
exact for those three questions; the text is what is kept.

apply() reports what is wrong with a message, as (reason, detail) pairs, reason a CorruptReason:
  bad_level      a negative or non-numeric price or size (the level is not applied)
  unknown_level  a delete of a level that is not in the book, where the venue says it cannot happen
                 (strict_deletes; Binance documents such deletes as normal)
crossed() says whether the book is crossed or locked (best bid >= best ask); it is checked after a
complete message only (core/books/checker.py), never in the middle of one.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Iterable, Optional

from sortedcontainers import SortedList

from beam_pipeline.core.reasons import CorruptReason

Level = tuple  # (price text, size text), as the venue sent them

_INF = float("inf")
_SHORT = 16     # price texts up to this long are keyed by their float (see the module's doc)


def price_key(text):
    """The exact ordering key of a price text; raises ValueError when it is not a number."""
    if len(text) <= _SHORT:
        return float(text)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(text) from None
    if not value.is_finite():
        raise ValueError(text)
    return value


class _Side:
    """One side: levels by price key, and the keys in order (a SortedList, ascending)."""

    __slots__ = ("levels", "keys")

    def __init__(self) -> None:
        self.levels: dict = {}
        self.keys = SortedList()

    def clear(self):
        self.levels.clear()
        self.keys.clear()

    def __len__(self):
        return len(self.levels)


class Book:
    """One key's L2 book. `depth`: keep only the best `depth` levels per side (None: all)."""

    __slots__ = ("bids", "asks", "depth", "strict_deletes")

    def __init__(self, depth: Optional[int] = None, strict_deletes: bool = False):
        self.bids = _Side()          # best is the highest key
        self.asks = _Side()          # best is the lowest key
        self.depth = depth
        self.strict_deletes = strict_deletes

    # ---- changing it ------------------------------------------------------------------------

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> list:
        """Replaces the book by a snapshot; returns its problems (a zero size in a snapshot is no
        level, not an unknown delete)."""
        problems: list = []
        _load_side(self.bids, bids, "bid", problems)
        _load_side(self.asks, asks, "ask", problems)
        self._truncate()
        return problems

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> list:
        """Applies a delta's levels in order; returns its problems."""
        problems: list = []
        _apply_side(self.bids, bids, "bid", problems, self.strict_deletes)
        _apply_side(self.asks, asks, "ask", problems, self.strict_deletes)
        if self.depth is not None:
            self._truncate()
        return problems

    def _truncate(self) -> None:
        depth = self.depth
        if depth is None:
            return
        for side, worst in ((self.bids, 0), (self.asks, -1)):   # lowest bid, highest ask
            while len(side.levels) > depth:
                del side.levels[side.keys.pop(worst)]

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    # ---- reading it -------------------------------------------------------------------------

    def best_bid(self) -> Optional[Level]:
        return self.bids.levels[self.bids.keys[-1]] if self.bids.levels else None

    def best_ask(self) -> Optional[Level]:
        return self.asks.levels[self.asks.keys[0]] if self.asks.levels else None

    def crossed(self) -> bool:
        """Is the book crossed or locked (best bid >= best ask)?"""
        bids, asks = self.bids.keys, self.asks.keys
        return bool(bids) and bool(asks) and bids[-1] >= asks[0]

    def top_bids(self, n: Optional[int] = None) -> list:
        """The best n bids, best (highest) first, as (price text, size text)."""
        keys, levels = self.bids.keys, self.bids.levels
        start = max(0, len(keys) - n) if n is not None else 0
        return [levels[k] for k in keys.islice(start, None, reverse=True)]

    def top_asks(self, n: Optional[int] = None) -> list:
        """The best n asks, best (lowest) first."""
        levels = self.asks.levels
        return [levels[k] for k in self.asks.keys.islice(0, n)]

    def levels(self) -> tuple:
        """(bids {price key: size}, asks {price key: size}), sizes as Decimals, for comparing
        books."""
        return ({k: Decimal(v[1]) for k, v in self.bids.levels.items()},
                {k: Decimal(v[1]) for k, v in self.asks.levels.items()})

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)


def _load_side(side: _Side, levels, name: str, problems: list) -> None:
    """A snapshot's side: the levels as a dict, then their keys sorted at once."""
    book: dict = {}
    for level in levels:
        price_text, size_text = level[0], level[1]
        try:
            price, size = price_key(price_text), float(size_text)
        except (ValueError, TypeError):
            price = None
        if price is None or not (0 <= price < _INF and 0 <= size < _INF):    # NaN: False
            problems.append((CorruptReason.BAD_LEVEL, f"{name} {price_text!r} {size_text!r}"))
        elif size == 0:
            book.pop(price, None)
        else:
            book[price] = (price_text, size_text)
    side.levels = book
    side.keys = SortedList(book)


def _apply_side(side: _Side, levels, name: str, problems: list, strict: bool) -> None:
    book, keys = side.levels, side.keys
    for price_text, size_text in levels:
        try:                                                    # price_key, inlined (hot)
            price = float(price_text) if len(price_text) <= _SHORT else price_key(price_text)
            size = float(size_text)
        except (ValueError, TypeError):
            price = None
        if price is None or not (0 <= price < _INF and 0 <= size < _INF):    # NaN: False
            problems.append((CorruptReason.BAD_LEVEL, f"{name} {price_text!r} {size_text!r}"))
            continue
        if size == 0:
            if book.pop(price, None) is not None:
                keys.remove(price)
            elif strict:
                problems.append((CorruptReason.UNKNOWN_LEVEL,
                                 f"{name} {price_text!r} deleted but not in the book"))
        else:
            if price not in book:
                keys.add(price)
            book[price] = (price_text, size_text)
