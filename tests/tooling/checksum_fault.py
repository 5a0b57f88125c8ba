"""A checksum venue's real capture with one size altered: its book no longer matches the checksum
the venue sent with that message, so --book_checks reports one checksum_mismatch period there.

The shared file stays as it is; the copy is written where asked.
"""
from __future__ import annotations

import gzip
import os
from decimal import Decimal

from tests.conftest import REPO

EXCHANGES = os.path.join(os.path.dirname(REPO), "shared", "data", "exchanges")
KRAKEN = "KRAKEN.ws.50.0.gz"


def alter_one_kraken_size(destination: str) -> tuple[str, int]:
    """Writes KRAKEN.ws.50.0.gz into `destination` with one size among the best ten levels of a
    checksum-bearing delta raised by 1 -> (the pair, the id of the altered message: Kraken has no
    ids, a message's id is its receive ms x 10^6 + its line number)."""
    from tests.unit.test_books import CAPTURES, _target

    reader, profile, _ = CAPTURES[KRAKEN]
    messages = list(reader(KRAKEN))
    target, side, j = _target(messages, profile)
    pair, number, recv, _, bids, asks, _ = messages[target]
    price, size = (bids, asks)[side - 4][j]
    with gzip.open(os.path.join(EXCHANGES, KRAKEN), "rt") as handle:
        lines = handle.read().split("\n")
    old = f'["{price}","{size}"'
    if lines[number - 1].count(old) != 1:
        raise ValueError(f"line {number} of {KRAKEN} does not hold {old} once")
    lines[number - 1] = lines[number - 1].replace(old, f'["{price}","{Decimal(size) + 1}"')
    os.makedirs(destination, exist_ok=True)
    with gzip.open(os.path.join(destination, KRAKEN), "wt") as handle:
        handle.write("\n".join(lines))
    return pair, recv * 10**6 + number
