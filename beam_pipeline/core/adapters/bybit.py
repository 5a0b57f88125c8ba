"""Bybit: v5 `orderbook.{depth}.{symbol}` and the retired legacy `orderBookL2_25` / `orderBook_200`.

Exchange `bybit`. Market: the v5 category (`spot`, `linear`, `inverse`, `option`) from the URL
path `/v5/public/<category>`; legacy `realtime_public` is USDT perpetuals (`linear`), `realtime`
inverse (`inverse`), `/spot/` spot. Symbol: `data.s` (v5) or the topic's symbol (`BTCUSDT`).
Other topics (trades, tickers, ...) are ignored by their name; `op`/`success` replies and pongs are
`subscription` / `heartbeat`.

v5 rule: range-plus-one with one id, `data.u == previous u + 1` per topic (`seq` orders across
depths: not a gap counter). Every snapshot replaces the book (an anchored segment). `u == 1` is a
service restart with a full snapshot: the ids restart lower, which the sequencer's id-reset rule
resyncs at that snapshot (not a gap to mend). Depth 1 re-sends its snapshot after 3 s idle with
the same `u`: a duplicate of the book it is at.

Legacy `orderBookL2_25`: `cross_seq` is the matching engine's sequence, shared by the symbols it
trades. On the shared capture (BYBIT.ws.25.0.gz) it increases on every message of a topic, by 1
to thousands (540 of 3,252 steps are +1): it orders and deduplicates a topic's messages but cannot
reveal a lost one. Rule none with `cross_seq` as the ids: unverified.
"""
from __future__ import annotations

from typing import Optional
from urllib.parse import urlparse

from beam_pipeline.core.adapters import _common as c
from beam_pipeline.core.model import (DELTA, HEARTBEAT, NO_IDS, RANGE_PLUS_ONE, SNAPSHOT,
                                      SUBSCRIPTION, Event, Ignored, encode_levels)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "bybit"
EXCHANGES = (NAME,)
SNAPSHOT_PATHS = ("/market/orderbook",)
SYMBOL_PARAM = "symbol"
RULES = {"spot": RANGE_PLUS_ONE, "linear": RANGE_PLUS_ONE, "inverse": RANGE_PLUS_ONE,
         "option": RANGE_PLUS_ONE}
LEGACY_TOPICS = ("orderBookL2_25", "orderBook_200", "orderBookL2_200", "depth")


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None):
    exchange = c.exchange_of(exchange, EXCHANGES)
    msg = c.loads(raw)
    if not isinstance(msg, dict):
        raise Rejected(Reason.BAD_FRAMING, "a Bybit message that is not a JSON object")
    if "topic" not in msg:
        if msg.get("op") in ("pong", "ping") or msg.get("ret_msg") == "pong":
            return Ignored(HEARTBEAT)
        if "success" in msg or "op" in msg or "request" in msg:
            return Ignored(SUBSCRIPTION)
        raise Rejected(Reason.MISSING_FIELD, "a Bybit message without topic")
    topic = msg["topic"]
    if not isinstance(topic, str):
        raise Rejected(Reason.MISTYPED_FIELD, "a Bybit topic that is not a string")
    name, _, rest = topic.partition(".")
    if name == "orderbook":
        return _v5(msg, rest, market, recv_time, source, exchange)
    if name in LEGACY_TOPICS:
        return _legacy(msg, rest.rpartition(".")[2], market, recv_time, source, exchange)
    return Ignored(name)


def _v5(msg, rest, market, recv_time, source, exchange):
    mkt = market or "linear"
    symbol = rest.partition(".")[2] or None
    try:
        kind = {"snapshot": SNAPSHOT, "delta": DELTA}.get(c.text(msg.get("type")))
        if kind is None:
            raise Rejected(Reason.MISTYPED_FIELD, f"Bybit type {msg.get('type')!r} is neither snapshot "
                           "nor delta")
        data = msg.get("data")
        if not isinstance(data, dict):
            raise Rejected(Reason.MISSING_FIELD, "a Bybit orderbook message without data")
        symbol = data.get("s", symbol)
        if not isinstance(symbol, str):
            raise Rejected(Reason.MISSING_FIELD, "a Bybit orderbook message without data.s")
        u = c.an_id(data.get("u"), "u")
        return Event(exchange, mkt, symbol, kind, u, u, None, c.time_ms(msg.get("ts"), "ts"),
                     recv_time, c.levels(data.get("b", [])), c.levels(data.get("a", [])),
                     RANGE_PLUS_ONE, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, symbol), event_time=recv_time) from None


def _legacy(msg, symbol, market, recv_time, source, exchange):
    mkt = market or "linear"
    try:
        kind = {"snapshot": SNAPSHOT, "delta": DELTA}.get(c.text(msg.get("type")))
        if kind is None:
            raise Rejected(Reason.MISTYPED_FIELD, f"Bybit type {msg.get('type')!r} is neither snapshot "
                           "nor delta")
        data = msg.get("data")
        if kind == SNAPSHOT:
            rows = data.get("order_book") if isinstance(data, dict) else data
            changes = [("", rows)]
        elif isinstance(data, dict):
            changes = [(action, data.get(action, [])) for action in ("delete", "update", "insert")]
        else:
            raise Rejected(Reason.MISSING_FIELD, "a Bybit delta without delete/update/insert")
        bids, asks = [], []
        for action, rows in changes:
            if not isinstance(rows, list):
                raise Rejected(Reason.BAD_PRICE_LEVEL, "Bybit levels must be a list")
            for row in rows:
                if not isinstance(row, dict) or row.get("side") not in ("Buy", "Sell"):
                    raise Rejected(Reason.BAD_PRICE_LEVEL, f"Bybit level {row!r} has no side Buy/Sell")
                size = "0" if action == "delete" else c.decimal_text(row.get("size"), "size")
                (bids if row["side"] == "Buy" else asks).append(
                    (c.decimal_text(row.get("price"), "price"), size))
        seq = c.an_id(msg.get("cross_seq"), "cross_seq")
        stamp = msg.get("timestamp_e6")
        event_time = c.time_ms(int(stamp) // 1000, "timestamp_e6") if isinstance(stamp, (int, str)) \
            and str(stamp).isdigit() else None
        return Event(exchange, mkt, symbol, kind, seq, seq, None, event_time, recv_time,
                     encode_levels(bids), encode_levels(asks), NO_IDS, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, symbol), event_time=recv_time) from None


def stream_of_url(url: str) -> Optional[tuple[str, Optional[str]]]:
    if not c.on_domain(c.host_of(url), "bybit.com", "bytick.com"):
        return None
    try:
        path = urlparse(url).path.rstrip("/")
    except ValueError:
        return None
    if path.startswith("/v5/public/"):
        return NAME, path.rsplit("/", 1)[1]
    if path.endswith("/realtime_public"):
        return NAME, "linear"
    if path.endswith("/realtime"):
        return NAME, "inverse"
    if path.startswith("/spot"):
        return NAME, "spot"
    return NAME, None
