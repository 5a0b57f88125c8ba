"""Bitfinex (ws v2): `book` channels P0-P4 (price-aggregated) and R0 (raw), as arrays.

Exchange `bitfinex`. A channel message names only its channel id, `[chanId, payload, (seq)]`; the
symbol comes from the connection's `subscribed` reply, which the framing hands over as `channels`
(core/framings/cryptofeed.py: FileContext.channels). Market: the instrument type of the symbol:
`spot` (`tBTCUSD`), `derivatives` (`tBTCF0:USTF0`), `funding` (`fUSD`). Symbol: as the venue
writes it in the reply (`tBTCUSD`). Other channels are ignored by name (`ticker`, `trades`, ...);
`info`/`conf` events as `status`, `subscribed`/`error` as `subscription`, `hb` as `heartbeat`, the
`cs` checksum messages (flag 131072) as Events of kind `checksum` (no levels; sequenced with
the book's messages, verified against the rebuilt book by --book_checks; a raw R0 book's `cs`,
over order ids the book does not keep, is ignored as `checksum`).

Levels: `[price, count, amount]` (R0: `[orderId, price, amount]`); amount > 0 bids, < 0 asks (the
magnitude is kept); count 0 (R0: price 0) deletes the level: size 0. A snapshot is an array of
levels and anchors a segment.

Rule: with the SEQ_ALL flag (65536) every message of the connection carries a sequence number
after its payload, across all channels and heartbeats: `+1` per connection, not per symbol. The
rule is connection_sequence: the number orders and deduplicates a book's messages; a book's
numbers are not contiguous, so its continuity is checked per connection instead
(`connection_number`, core/connections.py): a skipped number is a gap of every book the
connection carried. Without the flag: rule none (arrival ordinals).
"""
from __future__ import annotations

from typing import Optional

from beam_pipeline.core.adapters import _common as c
from beam_pipeline.core.model import CHECKSUM as CHECKSUM_KIND
from beam_pipeline.core.model import (CONNECTION_SEQUENCE, DELTA, HEARTBEAT, NO_IDS, SNAPSHOT,
                                      STATUS, SUBSCRIPTION, Event, Ignored, arrival_ordinal,
                                      encode_levels)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "bitfinex"
EXCHANGES = (NAME,)
DOMAINS = ("bitfinex.com",)
SNAPSHOT_PATHS = ("/book/",)
RULES = {"spot": CONNECTION_SEQUENCE, "derivatives": CONNECTION_SEQUENCE,
         "funding": CONNECTION_SEQUENCE}
CHECKSUM = "checksum"


def market_of(symbol: str) -> str:
    if symbol.startswith("f"):
        return "funding"
    return "derivatives" if "F0:" in symbol else "spot"


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None):
    exchange = c.exchange_of(exchange, EXCHANGES)
    msg = c.loads(raw)
    if isinstance(msg, dict):
        event = msg.get("event")
        return Ignored(SUBSCRIPTION if event in ("subscribed", "unsubscribed", "error") else STATUS)
    if not isinstance(msg, list) or len(msg) < 2 or not isinstance(msg[0], int):
        raise Rejected(Reason.BAD_FRAMING, "a Bitfinex message that is neither an event object nor "
                       "a [chanId, ...] array")
    if msg[1] == "hb":                  # a heartbeat, whichever channel (the shared capture has
        return Ignored(HEARTBEAT)       # some before their channel's subscribed reply)
    what = (channels or {}).get(msg[0])
    if what is None:
        raise Rejected(Reason.BAD_FRAMING, f"a Bitfinex message of channel {msg[0]} before its "
                       "subscribed reply on this connection")
    channel, symbol, prec = (what.split("|") + ["", ""])[:3]
    if channel != "book":
        return Ignored(channel or STATUS)
    payload = msg[1]
    mkt = market_of(symbol)
    try:
        if payload == "cs":
            return _checksum(msg, exchange, mkt, symbol, prec, recv_time, source)
        if not isinstance(payload, list) or not payload:
            raise Rejected(Reason.BAD_PRICE_LEVEL, "a Bitfinex book message without levels")
        snapshot = isinstance(payload[0], list)
        bids: list = []
        asks: list = []
        for row in payload if snapshot else [payload]:
            _level(row, prec == "R0", bids, asks)
        tail = msg[2:]
        if tail:
            seq = c.an_id(tail[0], "seq")
            rule = CONNECTION_SEQUENCE
        else:
            seq, rule = arrival_ordinal(recv_time, source), NO_IDS
        event_time = c.time_ms(tail[1], "timestamp") if len(tail) > 1 else None
        return Event(exchange, mkt, symbol, SNAPSHOT if snapshot else DELTA, seq, seq, None,
                     event_time, recv_time, encode_levels(bids), encode_levels(asks), rule, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, symbol), event_time=recv_time) from None


def connection_number(raw: bytes, channels=None):
    """(the frame's SEQ_ALL number, (market, symbol) of the book channel it is on, its heartbeats
    included, or None for another channel), or None for a frame without a number (an event
    object, a connection without the flag, a frame that is not JSON). The number follows the
    payload: `[chanId, payload, seq(, ts)]`, `[chanId, "hb", seq(, ts)]`,
    `[chanId, "cs", crc, seq(, ts)]`, `[chanId, "te", trade, seq(, ts)]`."""
    try:
        msg = c.loads(raw)
    except Rejected:
        return None
    if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[0], int):
        return None
    at = 3 if isinstance(msg[1], str) and msg[1] != "hb" else 2
    number = msg[at] if len(msg) > at else None
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        return None
    channel, symbol = ((channels or {}).get(msg[0], "").split("|") + [""])[:2]
    return number, ((market_of(symbol), symbol) if channel == "book" and symbol else None)


def _checksum(msg, exchange, mkt, symbol, prec, recv_time, source):
    """`[chanId, "cs", crc(, seq)(, timestamp)]` -> an Event of kind CHECKSUM: no levels, sequenced
    after the book messages before it, checked against the book by --book_checks. R0 (raw) books
    are checksummed over order ids, which the book does not keep: their `cs` stay ignored."""
    if prec == "R0":
        return Ignored(CHECKSUM)
    if len(msg) < 3:
        raise Rejected(Reason.MISSING_FIELD, "a Bitfinex cs message without its checksum")
    checksum = c.checksum(msg[2], "cs checksum")
    tail = msg[3:]
    if tail:
        seq, rule = c.an_id(tail[0], "seq"), CONNECTION_SEQUENCE
    else:
        seq, rule = arrival_ordinal(recv_time, source), NO_IDS
    event_time = c.time_ms(tail[1], "timestamp") if len(tail) > 1 else None
    return Event(exchange, mkt, symbol, CHECKSUM_KIND, seq, seq, None, event_time, recv_time,
                 b"[]", b"[]", rule, source, checksum)


def _level(row, raw_book: bool, bids: list, asks: list) -> None:
    if not isinstance(row, list) or len(row) != 3:
        raise Rejected(Reason.BAD_PRICE_LEVEL, f"Bitfinex level {row!r} is not [price, count, amount]")
    amount = c.decimal_text(row[2], "amount")
    if raw_book:
        price, deleted = c.decimal_text(row[1], "price"), row[1] == 0
    else:
        price, deleted = c.decimal_text(row[0], "price"), row[1] == 0
    size = "0" if deleted else amount.lstrip("-")
    (asks if amount.startswith("-") else bids).append((price, size))


def symbol_from_url(url: str) -> Optional[str]:
    parts = url.split("/book/", 1)
    return parts[1].split("/", 1)[0] if len(parts) == 2 else None
