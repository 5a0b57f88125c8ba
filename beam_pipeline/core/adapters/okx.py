"""OKX (formerly OKEx): v5 order-book channels, and the v3 `depth` tables of older OKEx captures.

Exchange `okx` (hosts okx.com, and okex.com: `ws.okex.com`, `real.okex.com` are the same venue).
Channels read: `books`, `books5`, `books-l2-tbt`, `books50-l2-tbt`, `bbo-tbt` (v5) and the v3
tables `<type>/depth`, `<type>/depth5`, `<type>/depth_l2_tbt`. Every other channel is ignored by
its name (`tickers`, `trades`, ...); `event` replies (subscribe, error, login) as `subscription`.

Market: the instrument type lowercased (`spot`, `swap`, `futures`, `option`), read from the instId
(`BTC-USDT` spot, `*-SWAP` swap, `BTC-USD-220527` futures, `BTC-USD-220527-30000-C` option; v3:
the table's prefix). Each book channel for one instrument is its own sequence (OKX numbers
`books` and `books-l2-tbt` separately), so the channel is part of the key: the market of any
channel but `books` is `<type>@<channel>` (`spot@books-l2-tbt`); two channels never make false
gaps in each other. Symbol: the instId as sent (`BTC-USDT`).

Rule: with `seqId` (from 2022-06) previous-link on `prevSeqId` per instId and channel; a snapshot
carries `prevSeqId = -1`. The idle heartbeat (an empty update with `prevSeqId == seqId`) is ignored
as `heartbeat` (the next update links to the same id). In maintenance `seqId < prevSeqId` may occur:
such an update is taken as an id reset (prev_id -1: the sequencer's reset rule, it waits for a
snapshot). Captures without `seqId` (before 2022-06, v3) have rule none: ids are arrival ordinals,
and the data is unverified per key; the `checksum` every `books` push carries (a signed CRC32 of
the best 25 levels; 0: not sent) goes on the Event and --book_checks verifies it.
"""
from __future__ import annotations

from typing import Optional

from beam_pipeline.core.adapters import _common as c
from beam_pipeline.core.model import (DELTA, HEARTBEAT, NO_IDS, PREVIOUS_LINK, SNAPSHOT, STATUS,
                                      SUBSCRIPTION, Event, Ignored, arrival_ordinal)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "okx"
EXCHANGES = (NAME,)
DOMAINS = ("okx.com", "okex.com")     # URL_MARKET none: one connection carries every instrument type
SNAPSHOT_PATHS = ("/market/books",)
SYMBOL_PARAM = "instId"
RULES = {"spot": PREVIOUS_LINK, "swap": PREVIOUS_LINK, "futures": PREVIOUS_LINK,
         "option": PREVIOUS_LINK}
BOOK_CHANNELS = frozenset(("books", "books5", "books-l2-tbt", "books50-l2-tbt", "bbo-tbt"))
V3_BOOK_TABLES = frozenset(("depth", "depth5", "depth_l2_tbt"))
DEFAULT_CHANNEL = "books"
RESET_PREV_ID = -1      # what a maintenance update (seqId < prevSeqId) is given: the reset rule's mark


def inst_type(inst_id: str) -> str:
    """The instrument type of an instId (the venue's instType, lowercased)."""
    parts = inst_id.split("-")
    if parts[-1] == "SWAP":
        return "swap"
    if len(parts) >= 5 and parts[-1] in ("C", "P"):
        return "option"
    if len(parts) == 3 and parts[-1].isdigit():
        return "futures"
    return "spot"


def market_of(kind: str, channel: str) -> str:
    return kind if channel == DEFAULT_CHANNEL else f"{kind}@{channel}"


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None):
    exchange = c.exchange_of(exchange, EXCHANGES)
    if raw.strip() == b"pong":
        return Ignored(HEARTBEAT)
    msg = c.loads(raw)
    if not isinstance(msg, dict):
        raise Rejected(Reason.BAD_FRAMING, "an OKX message that is not a JSON object")
    if "event" in msg:
        return Ignored(SUBSCRIPTION if msg["event"] in ("subscribe", "unsubscribe", "error")
                       else STATUS)
    if "table" in msg:
        return _v3(msg, recv_time, source, exchange)
    arg = msg.get("arg")
    if not isinstance(arg, dict) or not isinstance(arg.get("channel"), str):
        raise Rejected(Reason.MISSING_FIELD, "an OKX push without arg.channel")
    channel = arg["channel"]
    if channel not in BOOK_CHANNELS:
        return Ignored(channel)
    inst = arg.get("instId")
    if not isinstance(inst, str) or not inst:
        raise Rejected(Reason.MISSING_FIELD, f"an OKX {channel} push without arg.instId")
    mkt = market_of(inst_type(inst), channel)
    try:
        return _book(msg, channel, inst, mkt, recv_time, source, exchange)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, inst), event_time=recv_time) from None


def _one_book(msg) -> dict:
    data = msg.get("data")
    if not isinstance(data, list) or not data:
        raise Rejected(Reason.MISSING_FIELD, "an OKX book push without data")
    if len(data) != 1 or not isinstance(data[0], dict):
        raise Rejected(Reason.MISTYPED_FIELD, "an OKX book push whose data is not one book object")
    return data[0]


def _book(msg, channel, inst, mkt, recv_time, source, exchange):
    book = _one_book(msg)
    action = msg.get("action", "snapshot")        # books5 / bbo-tbt: every push is a full book
    if action not in ("snapshot", "update"):
        raise Rejected(Reason.MISTYPED_FIELD, f"OKX action {action!r} is neither snapshot nor update")
    kind = SNAPSHOT if action == "snapshot" else DELTA
    bids, asks = c.levels(book.get("bids", [])), c.levels(book.get("asks", []))
    ts = c.time_ms(book.get("ts"), "ts")
    checksum = c.checksum(book.get("checksum"))        # 0: not sent (checked in core/books)
    if "seqId" not in book:
        ordinal = arrival_ordinal(recv_time, source)
        return Event(exchange, mkt, inst, kind, ordinal, ordinal, None, ts, recv_time, bids, asks,
                     NO_IDS, source, checksum)
    seq = c.an_id(book["seqId"], "seqId")
    prev = c.an_id(book.get("prevSeqId"), "prevSeqId", allow_negative=True)
    if kind == DELTA and prev == seq and bids == b"[]" and asks == b"[]":
        return Ignored(HEARTBEAT)                  # idle: the next update links to the same id
    if kind == SNAPSHOT:
        prev = None
    elif prev == -1:
        raise Rejected(Reason.INVALID_IDS, "an OKX update with prevSeqId -1 (only snapshots have it)",
                       first_id=seq, last_id=seq)
    elif seq < prev:
        prev = RESET_PREV_ID                       # maintenance: the ids restart lower
    return Event(exchange, mkt, inst, kind, seq, seq, prev, ts, recv_time, bids, asks,
                 PREVIOUS_LINK, source, checksum)


def _v3(msg, recv_time, source, exchange):
    table = msg.get("table")
    if not isinstance(table, str) or "/" not in table:
        raise Rejected(Reason.MISTYPED_FIELD, f"OKEx v3 table {table!r} is not <type>/<channel>")
    kind_name, _, channel = table.partition("/")
    if channel not in V3_BOOK_TABLES:
        return Ignored(channel)
    book = _one_book(msg)
    inst = book.get("instrument_id")
    if not isinstance(inst, str):
        raise Rejected(Reason.MISSING_FIELD, "an OKEx v3 depth push without instrument_id")
    mkt = market_of(kind_name.lower(), "books" if channel == "depth" else channel)
    kind = SNAPSHOT if msg.get("action", "partial") == "partial" else DELTA
    try:
        bids, asks = c.levels(book.get("bids", [])), c.levels(book.get("asks", []))
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, inst)) from None
    ordinal = arrival_ordinal(recv_time, source)
    return Event(exchange, mkt, inst, kind, ordinal, ordinal, None, None, recv_time, bids, asks,
                 NO_IDS, source)
