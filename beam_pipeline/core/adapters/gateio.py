"""Gate.io: spot `spot.order_book_update` and futures `futures.order_book_update` (APIv4), with the
REST order-book snapshots (`with_id=true`) that bridge them.

Exchange `gateio`. Market: the instrument type, lowercased: `spot` (api.gateio.ws/ws/v4,
/api/v4/spot/...), `futures` (perpetuals: fx-ws.gateio.ws/v4/ws/<settle>, /api/v4/futures/...),
`delivery` (/ws/delivery/..., /api/v4/delivery/...). Symbol: the pair or contract as sent
(`BTC_USDT`). Other channels are ignored by their name (`trades`, `tickers`, ...); subscribe
replies as `subscription`, pongs as `heartbeat`.

Rule: range-plus-one, `U == previous u + 1`. Snapshot: the REST body's `id`; the first applied
update has `U <= id+1 <= u` (the same rule from the snapshot's id), updates with `u <= id` are
superseded. Futures levels are objects {"p": price, "s": size} (size an integer of contracts).
"""
from __future__ import annotations

from decimal import Decimal
from typing import Optional
from urllib.parse import urlparse

from beam_pipeline.core.adapters import _common as c
from beam_pipeline.core.model import (DELTA, HEARTBEAT, RANGE_PLUS_ONE, SNAPSHOT, STATUS,
                                      SUBSCRIPTION, Event, Ignored)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "gateio"
EXCHANGES = (NAME,)
RULES = {"spot": RANGE_PLUS_ONE, "futures": RANGE_PLUS_ONE, "delivery": RANGE_PLUS_ONE}
_BOOK_UPDATE = "order_book_update"


def _levels(rows) -> bytes:
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        return c.object_levels(rows, "p", "s")
    return c.levels(rows)


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None):
    exchange = c.exchange_of(exchange, EXCHANGES)
    msg = c.loads(raw)
    if not isinstance(msg, dict):
        raise Rejected(Reason.BAD_FRAMING, "a Gate.io message that is not a JSON object")
    channel = msg.get("channel")
    if not isinstance(channel, str):
        return Ignored(STATUS)
    name = channel.partition(".")[2] or channel
    if name in ("pong", "ping"):
        return Ignored(HEARTBEAT)
    if msg.get("event") in ("subscribe", "unsubscribe"):
        return Ignored(SUBSCRIPTION)
    if name != _BOOK_UPDATE:
        return Ignored(name)
    mkt = market or ("spot" if channel.startswith("spot.") else "futures")
    result = msg.get("result")
    symbol = result.get("s") if isinstance(result, dict) else None
    try:
        if msg.get("event") != "update":
            raise Rejected(Reason.MISTYPED_FIELD, f"Gate.io book event {msg.get('event')!r} is not update")
        if not isinstance(result, dict):
            raise Rejected(Reason.MISSING_FIELD, "a Gate.io book update without result")
        if not isinstance(symbol, str):
            raise Rejected(Reason.MISSING_FIELD, "a Gate.io book update without result.s")
        first, last = c.an_id(result.get("U"), "U"), c.an_id(result.get("u"), "u")
        if first > last:
            raise Rejected(Reason.INVALID_IDS, f"first update id U={first} is after last update id u={last}",
                           first_id=first, last_id=last)
        return Event(exchange, mkt, symbol, DELTA, first, last, None,
                     c.time_ms(result.get("t"), "t"), recv_time, _levels(result.get("b", [])),
                     _levels(result.get("a", [])), RANGE_PLUS_ONE, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, symbol), event_time=recv_time) from None


def decode_snapshot(payload: bytes, market: Optional[str], symbol: str, recv_time: Optional[int],
                    source: str, exchange: Optional[str] = None) -> Event:
    """A REST order-book body requested with with_id=true: {"id", "bids", "asks", ...}."""
    exchange = c.exchange_of(exchange, EXCHANGES)
    mkt = market or "spot"
    try:
        body = c.loads(payload)
        if not isinstance(body, dict):
            raise Rejected(Reason.MISTYPED_FIELD, "a Gate.io order book that is not an object")
        if "id" not in body:
            raise Rejected(Reason.MISSING_FIELD, "a Gate.io order book without id (request it "
                           "with with_id=true)")
        book_id = c.an_id(body["id"], "id")
        current = body.get("current")      # spot: ms (an int); futures: seconds with a fraction
        event_time = c.time_ms(current, "current", 1000 if isinstance(current, Decimal) else 1)
        return Event(exchange, mkt, symbol, SNAPSHOT, book_id, book_id, None, event_time,
                     recv_time, _levels(body.get("bids", [])), _levels(body.get("asks", [])),
                     RANGE_PLUS_ONE, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, symbol), event_time=recv_time) from None


def stream_of_url(url: str) -> Optional[tuple[str, Optional[str]]]:
    host = c.host_of(url)
    if not c.on_domain(host, "gateio.ws", "gate.io", "gateio.live", "gate.com"):
        return None
    try:
        path = urlparse(url).path
    except ValueError:
        return None
    if "/delivery" in path:
        return NAME, "delivery"
    if host.startswith("fx-") or "/futures" in path:
        return NAME, "futures"
    return NAME, "spot"


def is_depth_snapshot_url(url: str) -> bool:
    return urlparse(url).path.rstrip("/").endswith("/order_book")


def symbol_from_url(url: str) -> Optional[str]:
    return c.query_value(url, "currency_pair") or c.query_value(url, "contract")
