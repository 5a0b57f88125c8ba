"""Bitget: v1 `books` (spot `sp`, futures `mc`) and v2/v3 `books` with `seq` / `pseq`.

Exchange `bitget`. Market: the `instType` of the message's arg, lowercased, as the venue writes it
(v1 `sp`, `mc`; v2 `spot`, `usdt-futures`, ...). Like OKX, each book channel of an instrument is
its own stream: the market of any channel but `books` is `<type>@<channel>` (`sp@books5`).
Symbol: `instId` as sent (`BTCUSDT`). Other channels are ignored by name (`candle1m`, `trade`,
...); `event` replies as `subscription`, `pong` as `heartbeat`.

Rule: v1 carries only a `checksum`: rule none (arrival ordinals, unverified per key; the checksum
goes on the Event and --book_checks verifies it). v2/v3 carry `seq` and `pseq` (0 on a snapshot): previous-link `pseq == previous
seq` (inferred from clients). Snapshots (`action: snapshot`; books1/5/15 pushes are full books)
anchor a segment.
"""
from __future__ import annotations

from typing import Optional

from beam_pipeline.core.adapters import _common as c
from beam_pipeline.core.model import (DELTA, HEARTBEAT, NO_IDS, PREVIOUS_LINK, SNAPSHOT, STATUS,
                                      SUBSCRIPTION, Event, Ignored, arrival_ordinal)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "bitget"
EXCHANGES = (NAME,)
DOMAINS = ("bitget.com",)
SNAPSHOT_PATHS = ("/market/depth", "/market/orderbook")
SYMBOL_PARAM = "symbol"
RULES = {"sp": NO_IDS, "mc": NO_IDS, "spot": PREVIOUS_LINK, "usdt-futures": PREVIOUS_LINK,
         "coin-futures": PREVIOUS_LINK, "usdc-futures": PREVIOUS_LINK}
BOOK_CHANNELS = frozenset(("books", "books1", "books5", "books15"))


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None):
    exchange = c.exchange_of(exchange, EXCHANGES)
    if raw.strip() == b"pong":
        return Ignored(HEARTBEAT)
    msg = c.loads(raw)
    if not isinstance(msg, dict):
        raise Rejected(Reason.BAD_FRAMING, "a Bitget message that is not a JSON object")
    if "event" in msg:
        return Ignored(SUBSCRIPTION if msg["event"] in ("subscribe", "unsubscribe", "error") else STATUS)
    arg = msg.get("arg")
    if not isinstance(arg, dict) or not isinstance(arg.get("channel"), str):
        raise Rejected(Reason.MISSING_FIELD, "a Bitget push without arg.channel")
    channel = arg["channel"]
    if channel not in BOOK_CHANNELS:
        return Ignored(channel)
    inst, kind_name = arg.get("instId"), arg.get("instType")
    mkt = None
    if isinstance(kind_name, str):
        mkt = kind_name.lower() if channel == "books" else f"{kind_name.lower()}@{channel}"
    try:
        if not isinstance(inst, str) or mkt is None:
            raise Rejected(Reason.MISSING_FIELD, "a Bitget book push without arg.instId / instType")
        data = msg.get("data")
        if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
            raise Rejected(Reason.MISSING_FIELD, "a Bitget book push whose data is not one book")
        book = data[0]
        kind = DELTA if msg.get("action") == "update" else SNAPSHOT
        bids, asks = c.levels(book.get("bids", [])), c.levels(book.get("asks", []))
        ts = c.time_ms(book.get("ts"), "ts")
        checksum = c.checksum(book.get("checksum"))    # as OKX's (core/books/checksums.py)
        if "seq" not in book:
            ordinal = arrival_ordinal(recv_time, source)
            return Event(exchange, mkt, inst, kind, ordinal, ordinal, None, ts, recv_time, bids,
                         asks, NO_IDS, source, checksum)
        seq = c.an_id(book["seq"], "seq")
        prev = None if kind == SNAPSHOT else c.an_id(book.get("pseq"), "pseq")
        return Event(exchange, mkt, inst, kind, seq, seq, prev, ts, recv_time, bids, asks,
                     PREVIOUS_LINK, source, checksum)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, inst), event_time=recv_time) from None
