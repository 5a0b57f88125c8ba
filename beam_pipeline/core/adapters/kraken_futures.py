"""Kraken Futures (formerly Crypto Facilities): `book_snapshot` and `book` feeds (ws v1).

Exchange `kraken_futures`. Market: the instrument type Kraken Futures gives the product, from its
prefix: `futures_inverse` (PI_, FI_), `flexible_futures` (PF_, FF_), `futures_vanilla` (PV_, FV_).
Symbol: `product_id` as sent (`PI_XBTUSD`). Other feeds (`trade`, `ticker_lite`, ...) are ignored by
name; `info` as `status`, `subscribed` as `subscription`, the `heartbeat` feed as `heartbeat`.

Rule: range-plus-one with one id: `seq == previous seq + 1` per product. `book_snapshot` carries
the `seq` the book is at and anchors a segment; a `book` message changes one level.
"""
from __future__ import annotations

from typing import Optional

from beam_pipeline.core.adapters import _common as c
from beam_pipeline.core.model import (DELTA, HEARTBEAT, RANGE_PLUS_ONE, SNAPSHOT, STATUS,
                                      SUBSCRIPTION, Event, Ignored, encode_levels)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "kraken_futures"
EXCHANGES = (NAME,)
DOMAINS = ("futures.kraken.com", "cryptofacilities.com")
SNAPSHOT_PATHS = ("/orderbook",)
SYMBOL_PARAM = "symbol"
_TYPES = {"PI": "futures_inverse", "FI": "futures_inverse", "PF": "flexible_futures",
          "FF": "flexible_futures", "PV": "futures_vanilla", "FV": "futures_vanilla"}
RULES = {market: RANGE_PLUS_ONE for market in set(_TYPES.values())}


def market_of(product: str) -> str:
    return _TYPES.get(product[:2].upper(), "futures_inverse")


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None):
    exchange = c.exchange_of(exchange, EXCHANGES)
    msg = c.loads(raw)
    if not isinstance(msg, dict):
        raise Rejected(Reason.BAD_FRAMING, "a Kraken Futures message that is not a JSON object")
    if "event" in msg:
        return Ignored(SUBSCRIPTION if msg["event"] in ("subscribed", "unsubscribed", "error",
                                                         "alert") else STATUS)
    feed = msg.get("feed")
    if feed == "heartbeat":
        return Ignored(HEARTBEAT)
    if feed not in ("book", "book_snapshot"):
        return Ignored(feed if isinstance(feed, str) else STATUS)
    product = msg.get("product_id")
    mkt = market_of(product) if isinstance(product, str) else None
    try:
        if not isinstance(product, str):
            raise Rejected(Reason.MISSING_FIELD, f"a Kraken Futures {feed} message without product_id")
        assert mkt is not None                  # a str product always has a market
        seq = c.an_id(msg.get("seq"), "seq")
        event_time = c.time_ms(msg.get("timestamp"), "timestamp")
        if feed == "book_snapshot":
            return Event(exchange, mkt, product, SNAPSHOT, seq, seq, None, event_time, recv_time,
                         c.object_levels(msg.get("bids", []), "price", "qty"),
                         c.object_levels(msg.get("asks", []), "price", "qty"), RANGE_PLUS_ONE, source)
        side = msg.get("side")
        if side not in ("buy", "sell"):
            raise Rejected(Reason.BAD_PRICE_LEVEL, f"Kraken Futures book side {side!r} is not buy/sell")
        level = encode_levels([(c.decimal_text(msg.get("price"), "price"),
                                c.decimal_text(msg.get("qty"), "qty"))])
        return Event(exchange, mkt, product, DELTA, seq, seq, None, event_time, recv_time,
                     level if side == "buy" else b"[]", level if side == "sell" else b"[]",
                     RANGE_PLUS_ONE, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, product), event_time=recv_time) from None
