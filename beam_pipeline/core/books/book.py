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
_NAMES_MAX = 4096   # price texts cached per side beyond twice its levels (_Side.names)


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
    """One side: levels by price key, the keys in order (a SortedList, ascending), the best key
    (kept as the keys change, so the crossed check after every message reads two attributes),
    and a cache of price texts already keyed (parsing a price costs more than a lookup, and a
    book sees the same few price texts again and again)."""

    __slots__ = ("levels", "keys", "best", "highest", "names")

    def __init__(self, highest: bool) -> None:
        self.levels: dict = {}
        self.keys = SortedList()
        self.best = None             # the best key: the highest (bids) or the lowest (asks)
        self.highest = highest
        self.names: dict = {}        # price text -> its key (valid prices only)

    def settle(self) -> None:
        """The keys changed: find the best again."""
        keys = self.keys
        self.best = (keys[-1] if self.highest else keys[0]) if keys else None

    def key_of(self, text):
        """The key of a price text not in the cache yet, cached; None when it is not a valid price
        (not a number, negative, NaN or infinite)."""
        try:
            price = price_key(text)
        except (ValueError, TypeError):
            return None
        if not 0 <= price < _INF:                   # NaN: False
            return None
        names = self.names
        if len(names) >= _NAMES_MAX + 2 * len(self.levels):    # bounded: it is only a cache
            names.clear()
        names[text] = price
        return price

    def clear(self):
        self.levels.clear()
        self.keys.clear()
        self.best = None

    def __len__(self):
        return len(self.levels)


class Book:
    """One key's L2 book. `depth`: keep only the best `depth` levels per side (None: all)."""

    __slots__ = ("bids", "asks", "depth", "strict_deletes")

    def __init__(self, depth: Optional[int] = None, strict_deletes: bool = False):
        self.bids = _Side(highest=True)
        self.asks = _Side(highest=False)
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
            if len(side.levels) > depth:
                while len(side.levels) > depth:
                    del side.levels[side.keys.pop(worst)]
                side.settle()

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    # ---- reading it -------------------------------------------------------------------------

    def best_bid(self) -> Optional[Level]:
        best = self.bids.best
        return None if best is None else self.bids.levels[best]

    def best_ask(self) -> Optional[Level]:
        best = self.asks.best
        return None if best is None else self.asks.levels[best]

    def crossed(self) -> bool:
        """Is the book crossed or locked (best bid >= best ask)?"""
        bid, ask = self.bids.best, self.asks.best
        return bid is not None and ask is not None and bid >= ask

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
    side.settle()


def _apply_side(side: _Side, levels, name: str, problems: list, strict: bool) -> None:
    """A delta's side, level by level in order. The hot loop of the book checks: a price text
    seen before is keyed by one lookup (_Side.names), and only a new or deleted level touches
    the SortedList (and then the best key)."""
    book, keys, names = side.levels, side.keys, side.names
    moved = False
    for price_text, size_text in levels:
        price = names.get(price_text)
        if price is None:
            price = side.key_of(price_text)
        try:
            size = float(size_text)
        except (ValueError, TypeError):
            price = None
        if price is None or not 0 <= size < _INF:                # NaN: False
            problems.append((CorruptReason.BAD_LEVEL, f"{name} {price_text!r} {size_text!r}"))
            continue
        if size == 0:
            if book.pop(price, None) is not None:
                keys.remove(price)
                moved = True
            elif strict:
                problems.append((CorruptReason.UNKNOWN_LEVEL,
                                 f"{name} {price_text!r} deleted but not in the book"))
        else:
            if price not in book:
                keys.add(price)
                moved = True
            book[price] = (price_text, size_text)
    if moved:
        side.settle()
