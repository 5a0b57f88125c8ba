"""The order-book checksums venues send, as pure functions of a book's best levels. Free of Beam.

Each takes the best levels per side, best first, as (price text, size text) exactly as the venue
sent them (core/books/book.py keeps them so), and returns the number the venue would send.
Algorithms and test vectors: ../shared/docs/exchange-sequencing.md.

  okx        CRC32 as a signed int32 of the best 25 bids and asks interleaved
             bidPx:bidSz:askPx:askSz:..., the longer side's extra levels appended. A checksum of 0
             means "not sent" (OKX stopped sending it from 2026-06-23): see NOT_SENT.
  bitget     Bitget spot v1: the same as OKX.
  kraken     Kraken spot v1 and v2: CRC32 (unsigned) of the best 10 asks (low to high) then the
             best 10 bids (high to low), each price and size with "." removed and leading zeros
             stripped, concatenated.
  bitfinex   Bitfinex `cs` messages: CRC32 signed of the best 25 levels alternating bid and ask,
             `price:amount`, ask amounts negative (as Bitfinex sends them).
"""
from __future__ import annotations

import zlib
from typing import Callable, Optional

NOT_SENT = 0          # OKX / Bitget: a checksum of 0 means the venue did not send one


def _signed(crc: int) -> int:
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def _interleaved(bids: list, asks: list, depth: int, ask_sign: str = "") -> str:
    parts = []
    for i in range(depth):
        if i < len(bids):
            parts.append(bids[i][0])
            parts.append(bids[i][1])
        if i < len(asks):
            parts.append(asks[i][0])
            parts.append(_negated(asks[i][1]) if ask_sign else asks[i][1])
    return ":".join(parts)


def _negated(text: str) -> str:
    return text[1:] if text.startswith("-") else "-" + text


def okx_string(bids: list, asks: list) -> str:
    return _interleaved(bids, asks, 25)


def okx(bids: list, asks: list) -> int:
    """OKX v5 `books` checksum of the best 25 levels per side."""
    return _signed(zlib.crc32(okx_string(bids, asks).encode()))


bitget = okx           # Bitget spot v1 `books`: the same algorithm


def _kraken_digits(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def kraken_string(bids: list, asks: list) -> str:
    parts = [_kraken_digits(t) for level in asks[:10] for t in level[:2]]
    parts += [_kraken_digits(t) for level in bids[:10] for t in level[:2]]
    return "".join(parts)


def kraken(bids: list, asks: list) -> int:
    """Kraken spot v1/v2 `book` checksum (unsigned) of the best 10 levels per side."""
    return zlib.crc32(kraken_string(bids, asks).encode())


def bitfinex(bids: list, asks: list) -> int:
    """Bitfinex `cs` checksum of the best 25 levels per side; ask amounts are given positive here
    (as the book keeps sizes) and negated in the string, as Bitfinex's own book holds them."""
    return _signed(zlib.crc32(_interleaved(bids, asks, 25, ask_sign="-").encode()))


# name -> (function, the number of levels per side it reads)
ALGORITHMS: dict[str, tuple[Callable[[list, list], int], int]] = {
    "okx": (okx, 25), "bitget": (bitget, 25), "kraken": (kraken, 10), "bitfinex": (bitfinex, 25),
}


def of_book(algorithm: str, book) -> int:
    """The checksum `algorithm` gives for `book` (a core.books.Book)."""
    function, depth = ALGORITHMS[algorithm]
    return function(book.top_bids(depth), book.top_asks(depth))


def matches(algorithm: str, book, sent: Optional[int]) -> Optional[bool]:
    """Does the checksum the venue sent agree with `book`? None when nothing was sent (no field,
    or OKX's/Bitget's 0)."""
    if sent is None or (sent == NOT_SENT and algorithm in ("okx", "bitget")):
        return None
    return of_book(algorithm, book) == int(sent)
