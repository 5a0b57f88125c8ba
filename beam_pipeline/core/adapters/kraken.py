"""Kraken spot: websocket v1 `book-<depth>` arrays and v2 `book` objects. No ids: unverified.

Exchange `kraken`. Market: `spot`. Symbol: the pair as sent (`XBT/USD`, v2 `BTC/USD`).
v1: a book message is `[channelID, {"as": [...], "bs": [...]}, "book-N", pair]` (snapshot) or
`[channelID, {"a": [...]}, ({"b": [...]},) "book-N", pair]` (update, checksum in `"c"`); levels are
`[price, volume, timestamp(, "r")]`. Other channels (`ticker`, `trade`, `spread`, `ohlc-*`) are
ignored by name; `systemStatus` as `status`, `subscriptionStatus` as `subscription`,
`heartbeat` as `heartbeat`. v2: `{"channel": "book", "type": "snapshot"|"update", "data": [...]}`
(prices are JSON numbers: kept as exact decimals).

Rule: none. Kraken numbers nothing: the ids are arrival ordinals (model.arrival_ordinal), which
order and deduplicate; continuity rests on the checksum: v1 updates carry it in `"c"`, v2
messages in `checksum`; it goes on the Event, with the depth the v1 channel name gives
(`book-1000`: the book is cut to it), and --book_checks verifies it. v2 messages name no depth:
the book is cut to the profile's 1000 (core/books/checker.py). A snapshot starts an anchored
segment.
"""
from __future__ import annotations

from typing import Optional

from beam_pipeline.core.adapters import _common as c
from beam_pipeline.core.model import (DELTA, HEARTBEAT, NO_IDS, SNAPSHOT, STATUS, SUBSCRIPTION,
                                      Event, Ignored, arrival_ordinal, encode_levels)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "kraken"
EXCHANGES = (NAME,)
SNAPSHOT_PATHS = ("/public/Depth",)
SYMBOL_PARAM = "pair"
RULES = {"spot": NO_IDS}
_EVENTS = {"heartbeat": HEARTBEAT, "subscriptionStatus": SUBSCRIPTION, "pong": HEARTBEAT}


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None):
    exchange = c.exchange_of(exchange, EXCHANGES)
    msg = c.loads(raw)
    if isinstance(msg, dict):
        if "event" in msg:
            return Ignored(_EVENTS.get(msg["event"], STATUS) if isinstance(msg["event"], str) else STATUS)
        if "method" in msg:
            return Ignored(SUBSCRIPTION)
        channel = msg.get("channel")
        if channel == "book":
            return _v2(msg, recv_time, source, exchange)
        if channel == "heartbeat":
            return Ignored(HEARTBEAT)
        return Ignored(channel if isinstance(channel, str) else STATUS)
    if not isinstance(msg, list) or len(msg) < 4:
        raise Rejected(Reason.BAD_FRAMING, "a Kraken message that is neither an event object nor "
                       "a [channelID, ..., channelName, pair] array")
    name, pair = msg[-2], msg[-1]
    if not isinstance(name, str):
        raise Rejected(Reason.MISTYPED_FIELD, "a Kraken channel name that is not a string")
    if not name.startswith("book"):
        return Ignored(name.partition("-")[0])
    mkt = market or "spot"
    try:
        if not isinstance(pair, str):
            raise Rejected(Reason.MISSING_FIELD, "a Kraken book message without its pair")
        parts = msg[1:-2]
        if not parts or not all(isinstance(part, dict) for part in parts):
            raise Rejected(Reason.BAD_FRAMING, "a Kraken book message without its book objects")
        snapshot = any("as" in part or "bs" in part for part in parts)
        bids: list = []
        asks: list = []
        checksum = None
        for part in parts:
            for key, side in (("bs", bids), ("b", bids), ("as", asks), ("a", asks)):
                if key in part:
                    side.extend(_rows(part[key]))
            if "c" in part:
                checksum = c.checksum(part["c"], "checksum c")
        ordinal = arrival_ordinal(recv_time, source)
        return Event(exchange, mkt, pair, SNAPSHOT if snapshot else DELTA, ordinal, ordinal, None,
                     None, recv_time, encode_levels(bids), encode_levels(asks), NO_IDS, source,
                     checksum, depth_of(name))
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, pair), event_time=recv_time) from None


def depth_of(channel_name: str) -> Optional[int]:
    """The depth a v1 channel name says (`book-1000` -> 1000): the venue keeps the book to it."""
    _, _, digits = channel_name.partition("-")
    return int(digits) if digits.isdigit() and 0 < len(digits) <= 6 else None


def _rows(rows) -> list:
    if not isinstance(rows, list):
        raise Rejected(Reason.BAD_PRICE_LEVEL, "Kraken levels must be a list")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) < 2:
            raise Rejected(Reason.BAD_PRICE_LEVEL, f"Kraken level {row!r} is not [price, volume, ...]")
        out.append((c.decimal_text(row[0], "price"), c.decimal_text(row[1], "volume")))
    return out


def _v2(msg, recv_time, source, exchange):
    data = msg.get("data")
    symbol = data[0].get("symbol") if isinstance(data, list) and data and isinstance(data[0], dict) else None
    try:
        if not isinstance(symbol, str):
            raise Rejected(Reason.MISSING_FIELD, "a Kraken v2 book message without data[0].symbol")
        if len(data) != 1:
            raise Rejected(Reason.MISTYPED_FIELD, "a Kraken v2 book message with several books")
        kind = {"snapshot": SNAPSHOT, "update": DELTA}.get(c.text(msg.get("type")))
        if kind is None:
            raise Rejected(Reason.MISTYPED_FIELD, f"Kraken v2 book type {msg.get('type')!r}")
        book = data[0]
        ordinal = arrival_ordinal(recv_time, source)
        return Event(exchange, "spot", symbol, kind, ordinal, ordinal, None, None, recv_time,
                     c.object_levels(book.get("bids", []), "price", "qty"),
                     c.object_levels(book.get("asks", []), "price", "qty"), NO_IDS, source,
                     c.checksum(book.get("checksum")))
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, "spot", symbol), event_time=recv_time) from None


def stream_of_url(url: str) -> Optional[tuple[str, Optional[str]]]:
    host = c.host_of(url)
    if c.on_domain(host, "kraken.com") and not c.on_domain(host, "futures.kraken.com"):
        return NAME, "spot"
    return None
