"""An L2 order book of one key, with exact decimals, and the sanity checks it can make. Free of Beam.

Each side maps a price (a Decimal: "100.0" and "100.00" are one level) to the level exactly as
the venue last sent it, (price text, size text), so checksums over the venue's own strings can be
computed (core/books/checksums.py). A size of zero removes the level. A venue that sends only the
top `depth` levels (Kraken) has its book truncated to `depth` after every message.

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

from sortedcontainers import SortedDict

from beam_pipeline.core.reasons import CorruptReason

Level = tuple  # (price text, size text), as the venue sent them

_ZERO = Decimal(0)


def _parse(text) -> Optional[Decimal]:
    """A level's price or size as a Decimal; None when it is not a finite number."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        return None
    return value if value.is_finite() else None


class Book:
    """One key's L2 book. `depth`: keep only the best `depth` levels per side (None: all)."""

    __slots__ = ("bids", "asks", "depth", "strict_deletes")

    def __init__(self, depth: Optional[int] = None, strict_deletes: bool = False):
        self.bids: SortedDict = SortedDict()   # price -> (price text, size text); best is last
        self.asks: SortedDict = SortedDict()   # best is first
        self.depth = depth
        self.strict_deletes = strict_deletes

    # ---- changing it ------------------------------------------------------------------------

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> list:
        """Replaces the book by a snapshot; returns its problems (a zero size in a snapshot is no
        level, not an unknown delete)."""
        self.bids.clear()
        self.asks.clear()
        problems: list = []
        self._apply_side(self.bids, bids, "bid", problems, False)
        self._apply_side(self.asks, asks, "ask", problems, False)
        self._truncate()
        return problems

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> list:
        """Applies a delta's levels in order; returns its problems."""
        problems: list = []
        self._apply_side(self.bids, bids, "bid", problems, self.strict_deletes)
        self._apply_side(self.asks, asks, "ask", problems, self.strict_deletes)
        self._truncate()
        return problems

    @staticmethod
    def _apply_side(side: SortedDict, levels, name: str, problems: list, strict: bool) -> None:
        for level in levels:
            price_text, size_text = level[0], level[1]
            price, size = _parse(price_text), _parse(size_text)
            if price is None or size is None or price < _ZERO or size < _ZERO:
                problems.append((CorruptReason.BAD_LEVEL, f"{name} {price_text!r} {size_text!r}"))
                continue
            if size == _ZERO:
                if side.pop(price, None) is None and strict:
                    problems.append((CorruptReason.UNKNOWN_LEVEL, f"{name} {price_text!r} deleted "
                                                                  "but not in the book"))
            else:
                side[price] = (price_text, size_text)

    def _truncate(self) -> None:
        depth = self.depth
        if depth is None:
            return
        bids, asks = self.bids, self.asks
        while len(bids) > depth:
            bids.popitem(0)           # the lowest bid
        while len(asks) > depth:
            asks.popitem(-1)          # the highest ask

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    # ---- reading it -------------------------------------------------------------------------

    def best_bid(self) -> Optional[Level]:
        return self.bids.peekitem(-1)[1] if self.bids else None

    def best_ask(self) -> Optional[Level]:
        return self.asks.peekitem(0)[1] if self.asks else None

    def crossed(self) -> bool:
        """Is the book crossed or locked (best bid >= best ask)?"""
        bids, asks = self.bids, self.asks
        return bool(bids) and bool(asks) and bids.peekitem(-1)[0] >= asks.peekitem(0)[0]

    def top_bids(self, n: Optional[int] = None) -> list:
        """The best n bids, best (highest) first, as (price text, size text)."""
        bids = self.bids
        keys = bids.islice(max(0, len(bids) - n) if n is not None else 0, None, reverse=True)
        return [bids[k] for k in keys]

    def top_asks(self, n: Optional[int] = None) -> list:
        """The best n asks, best (lowest) first."""
        asks = self.asks
        return [asks[k] for k in asks.islice(0, n)]

    def levels(self) -> tuple:
        """(bids {price: size}, asks {price: size}) as Decimals, for comparing books."""
        return ({p: Decimal(v[1]) for p, v in self.bids.items()},
                {p: Decimal(v[1]) for p, v in self.asks.items()})

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)
