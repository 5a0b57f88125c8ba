"""Coinbase: Exchange (formerly Coinbase Pro) `level2` and Advanced Trade `level2` (`l2_data`).

Exchange `coinbase`. Market: `spot` (Coinbase lists spot products only on these feeds). Symbol:
`product_id` as sent (`BTC-USD`). Other messages are ignored by their type or channel (`ticker`,
`match`, `last_match`, `market_trades`, ...); `subscriptions` as `subscription`, `heartbeat(s)`
as `heartbeat`.

Exchange / Pro `level2`: `snapshot` then `l2update` with no sequence number: rule none (arrival
ordinals, unverified; only the book checks of the next issue apply). Advanced Trade: the envelope's
`sequence_num` numbers every message of the connection (its scope is the connection, not the
product): rule connection_sequence, the number orders and deduplicates a product's messages; a
product's numbers are not contiguous, so continuity is checked per connection instead
(`connection_number`, core/connections.py): a skipped number is a gap of every product the
connection carried.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from beam_pipeline.core.adapters import _common as c
from beam_pipeline.core.model import (CONNECTION_SEQUENCE, DELTA, HEARTBEAT, NO_IDS, SNAPSHOT,
                                      STATUS, SUBSCRIPTION, Event, Ignored, arrival_ordinal,
                                      encode_levels)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "coinbase"
EXCHANGES = (NAME,)
DOMAINS = ("coinbase.com", "gdax.com")
URL_MARKET = "spot"
SNAPSHOT_PATHS = ("/book",)
RULES = {"spot": NO_IDS}
_SIDES = {"buy": 0, "bid": 0, "sell": 1, "ask": 1, "offer": 1}


def _iso_ms(value) -> Optional[int]:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None):
    exchange = c.exchange_of(exchange, EXCHANGES)
    msg = c.loads(raw)
    if not isinstance(msg, dict):
        raise Rejected(Reason.BAD_FRAMING, "a Coinbase message that is not a JSON object")
    if "channel" in msg:
        return _advanced(msg, recv_time, source, exchange)
    kind = msg.get("type")
    if kind in ("subscriptions", "error"):
        return Ignored(SUBSCRIPTION)
    if kind == "heartbeat":
        return Ignored(HEARTBEAT)
    if kind not in ("snapshot", "l2update"):
        return Ignored(kind if isinstance(kind, str) else STATUS)
    product = msg.get("product_id")
    mkt = market or "spot"
    try:
        if not isinstance(product, str):
            raise Rejected(Reason.MISSING_FIELD, f"a Coinbase {kind} without product_id")
        if kind == "snapshot":
            bids, asks = c.levels(msg.get("bids", [])), c.levels(msg.get("asks", []))
        else:
            bids, asks = _changes(msg.get("changes"))
        ordinal = arrival_ordinal(recv_time, source)
        return Event(exchange, mkt, product, SNAPSHOT if kind == "snapshot" else DELTA, ordinal,
                     ordinal, None, _iso_ms(msg.get("time")), recv_time, bids, asks, NO_IDS, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, product), event_time=recv_time) from None


def connection_number(raw: bytes, channels=None):
    """(an Advanced Trade message's sequence_num, ("spot", product) of its l2_data or None), or
    None for a message without one (Exchange / Pro feeds, a frame that is not JSON)."""
    try:
        msg = c.loads(raw)
    except Rejected:
        return None
    if not isinstance(msg, dict) or "channel" not in msg:
        return None
    number = msg.get("sequence_num")
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        return None
    events = msg.get("events")
    product = None
    if msg["channel"] == "l2_data" and isinstance(events, list) and events and isinstance(events[0], dict):
        product = c.text(events[0].get("product_id"))
    return number, (("spot", product) if product else None)


def _changes(rows):
    if not isinstance(rows, list):
        raise Rejected(Reason.MISSING_FIELD, "a Coinbase l2update without changes")
    sides = ([], [])
    for row in rows:
        if not isinstance(row, list) or len(row) != 3 or c.text(row[0]) not in _SIDES:
            raise Rejected(Reason.BAD_PRICE_LEVEL, f"Coinbase change {row!r} is not [side, price, size]")
        sides[_SIDES[row[0]]].append((c.decimal_text(row[1], "price"), c.decimal_text(row[2], "size")))
    return encode_levels(sides[0]), encode_levels(sides[1])


def _advanced(msg, recv_time, source, exchange):
    channel = msg["channel"]
    if channel == "heartbeats":
        return Ignored(HEARTBEAT)
    if channel == "subscriptions":
        return Ignored(SUBSCRIPTION)
    if channel != "l2_data":
        return Ignored(channel if isinstance(channel, str) else STATUS)
    events = msg.get("events")
    product = None
    if isinstance(events, list) and events and isinstance(events[0], dict):
        product = events[0].get("product_id")
    try:
        if not isinstance(product, str):
            raise Rejected(Reason.MISSING_FIELD, "a Coinbase l2_data message without events[0].product_id")
        if len(events) != 1:
            raise Rejected(Reason.MISTYPED_FIELD, "a Coinbase l2_data message with several events")
        seq = c.an_id(msg.get("sequence_num"), "sequence_num")
        event = events[0]
        kind = {"snapshot": SNAPSHOT, "update": DELTA}.get(c.text(event.get("type")))
        if kind is None:
            raise Rejected(Reason.MISTYPED_FIELD, f"Coinbase l2_data event type {event.get('type')!r}")
        updates = event.get("updates")
        if not isinstance(updates, list):
            raise Rejected(Reason.MISSING_FIELD, "a Coinbase l2_data event without updates")
        sides = ([], [])
        for row in updates:
            if not isinstance(row, dict) or c.text(row.get("side")) not in _SIDES:
                raise Rejected(Reason.BAD_PRICE_LEVEL, f"Coinbase update {row!r} has no side bid/offer")
            sides[_SIDES[row["side"]]].append((c.decimal_text(row.get("price_level"), "price_level"),
                                               c.decimal_text(row.get("new_quantity"), "new_quantity")))
        return Event(exchange, "spot", product, kind, seq, seq, None, _iso_ms(msg.get("timestamp")),
                     recv_time, encode_levels(sides[0]), encode_levels(sides[1]),
                     CONNECTION_SEQUENCE, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, "spot", product), event_time=recv_time) from None


def symbol_from_url(url: str) -> Optional[str]:
    parts = url.split("/products/", 1)
    return parts[1].split("/", 1)[0] if len(parts) == 2 else None
