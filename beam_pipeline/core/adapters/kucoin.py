"""KuCoin spot: `/market/level2:<symbol>` updates and the REST level-2 snapshots that bridge them.

Exchange `kucoin`. Market: `spot` (the only KuCoin market read here; KuCoin Futures is another
API). Symbol: `data.symbol` as sent (`BTC-USDT`). Other topics are ignored by their subject
(`trade.ticker`, `trade.l3match`, ...); `welcome` as `status`, `ack` as `subscription`, `pong` as
`heartbeat`.

Rule: range-plus-one on `sequenceStart` / `sequenceEnd` (`start == previous end + 1`). Snapshot:
REST `/api/v3/market/orderbook/level2` (or v1 `level2_20` / `level2_100`) whose `sequence` is the
snapshot's id: updates with `end <= sequence` are superseded, the first applied has
`start <= sequence+1 <= end`. A change row `["0","0",seq]` is a placeholder that only advances the
sequence: it is dropped from the levels, its ids still count.
"""
from __future__ import annotations

from typing import Optional

from beam_pipeline.core.adapters import _common as c
from beam_pipeline.core.model import (DELTA, HEARTBEAT, RANGE_PLUS_ONE, SNAPSHOT, STATUS,
                                      SUBSCRIPTION, Event, Ignored, encode_levels)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "kucoin"
EXCHANGES = (NAME,)
DOMAINS = ("kucoin.com",)
URL_MARKET = "spot"
SNAPSHOT_PATHS = ("/market/orderbook/level2",)
SYMBOL_PARAM = "symbol"
RULES = {"spot": RANGE_PLUS_ONE}
_TOPIC = "/market/level2"


def _changes(rows) -> bytes:
    if not isinstance(rows, list):
        raise Rejected(Reason.BAD_PRICE_LEVEL, "KuCoin changes must be a list")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) < 2:
            raise Rejected(Reason.BAD_PRICE_LEVEL, f"KuCoin change {row!r} is not [price, size, seq]")
        if row[0] == "0" and row[1] == "0":
            continue                           # a placeholder: advances the sequence only
        out.append((c.decimal_text(row[0], "price"), c.decimal_text(row[1], "size")))
    return encode_levels(out)


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None):
    exchange = c.exchange_of(exchange, EXCHANGES)
    msg = c.loads(raw)
    if not isinstance(msg, dict):
        raise Rejected(Reason.BAD_FRAMING, "a KuCoin message that is not a JSON object")
    kind = msg.get("type")
    if kind in ("pong", "ping"):
        return Ignored(HEARTBEAT)
    if kind in ("ack", "error"):
        return Ignored(SUBSCRIPTION)
    if kind != "message":
        return Ignored(STATUS)
    topic = msg.get("topic")
    if not isinstance(topic, str):
        raise Rejected(Reason.MISSING_FIELD, "a KuCoin message without topic")
    if topic.partition(":")[0] != _TOPIC:
        subject = msg.get("subject")
        return Ignored(subject if isinstance(subject, str) else topic.partition(":")[0])
    mkt = market or "spot"
    data = msg.get("data")
    symbol = data.get("symbol") if isinstance(data, dict) else topic.partition(":")[2] or None
    try:
        if not isinstance(data, dict):
            raise Rejected(Reason.MISSING_FIELD, "a KuCoin level2 message without data")
        if not isinstance(symbol, str):
            raise Rejected(Reason.MISSING_FIELD, "a KuCoin level2 message without data.symbol")
        first = c.an_id(data.get("sequenceStart"), "sequenceStart")
        last = c.an_id(data.get("sequenceEnd"), "sequenceEnd")
        if first > last:
            raise Rejected(Reason.INVALID_IDS, f"sequenceStart={first} is after sequenceEnd={last}",
                           first_id=first, last_id=last)
        changes = data.get("changes")
        if not isinstance(changes, dict):
            raise Rejected(Reason.MISSING_FIELD, "a KuCoin level2 message without changes")
        return Event(exchange, mkt, symbol, DELTA, first, last, None,
                     c.time_ms(data.get("time"), "time"), recv_time,
                     _changes(changes.get("bids", [])), _changes(changes.get("asks", [])),
                     RANGE_PLUS_ONE, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, symbol), event_time=recv_time) from None


def decode_snapshot(payload: bytes, market: Optional[str], symbol: str, recv_time: Optional[int],
                    source: str, exchange: Optional[str] = None) -> Event:
    """A REST level-2 body {"code": "200000", "data": {"sequence", "time", "bids", "asks"}}."""
    exchange = c.exchange_of(exchange, EXCHANGES)
    mkt = market or "spot"
    try:
        body = c.loads(payload)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise Rejected(Reason.MISSING_FIELD, "a KuCoin order book without data "
                           f"(code {body.get('code') if isinstance(body, dict) else None!r})")
        sequence = c.an_id(data.get("sequence"), "sequence")
        return Event(exchange, mkt, symbol, SNAPSHOT, sequence, sequence, None,
                     c.time_ms(data.get("time"), "time"), recv_time, c.levels(data.get("bids", [])),
                     c.levels(data.get("asks", [])), RANGE_PLUS_ONE, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, symbol), event_time=recv_time) from None
