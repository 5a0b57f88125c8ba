"""HTX (formerly Huobi): spot `market.<symbol>.mbp.<levels>` incremental books and
`market.<symbol>.depth.step<N>` full books; frames are gzip-compressed binary (the framing
inflates them: core/framings/cryptofeed.py).

Exchange `htx` (hosts htx.com, huobi.pro, huobi.com, hbdm.com, hbdm.vn). Market: `spot` (the spot
API), `futures`, `swap`, `linear-swap` (the derivatives APIs, by URL path). Symbol: the symbol of
the channel as sent (`btcusdt`). Other channels are ignored by name (`trade`, `kline`, ...);
`subbed` replies as `subscription`, `ping` as `heartbeat`.

`mbp.<levels>`: previous-link, `prevSeqNum == previous seqNum`; its snapshot comes by a `req` on
the topic (a `rep` message with `data.seqNum`), and deltas with `prevSeqNum < seqNum` of the snapshot
are superseded (the sequencer's bridge). `mbp.refresh.<levels>` pushes full books with `seqNum`.
`depth.step<N>` pushes a full book each time (no seqNum): every message is a snapshot, ordered by
its `ts`; nothing can be missing between two full books, so there is no continuity to check.
The shared capture (HUOBI.ws.44.0.gz) holds `depth.step0` only: the `mbp` rule is tested on the
venue's documented message shapes and synthetic feeds.
"""
from __future__ import annotations

from typing import Optional
from urllib.parse import urlparse

from beam_pipeline.core.adapters import _common as c
from beam_pipeline.core.model import (DELTA, HEARTBEAT, PREVIOUS_LINK, SNAPSHOT, STATUS,
                                      SUBSCRIPTION, Event, Ignored)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "htx"
EXCHANGES = (NAME,)
SNAPSHOT_PATHS = ("/market/depth",)
SYMBOL_PARAM = "symbol"
RULES = {"spot": PREVIOUS_LINK, "futures": PREVIOUS_LINK, "swap": PREVIOUS_LINK,
         "linear-swap": PREVIOUS_LINK}


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None):
    exchange = c.exchange_of(exchange, EXCHANGES)
    msg = c.loads(raw)
    if not isinstance(msg, dict):
        raise Rejected(Reason.BAD_FRAMING, "an HTX message that is not a JSON object")
    if "ping" in msg or msg.get("op") in ("ping", "pong"):
        return Ignored(HEARTBEAT)
    if "subbed" in msg or "unsubbed" in msg or msg.get("status") == "error":
        return Ignored(SUBSCRIPTION)
    topic = msg.get("ch", msg.get("rep"))
    if not isinstance(topic, str):
        return Ignored(STATUS)
    parts = topic.split(".")
    if len(parts) < 3 or parts[0] != "market":
        return Ignored(topic)
    symbol, channel = parts[1], parts[2]
    if channel not in ("mbp", "depth"):
        return Ignored(channel)
    mkt = market or "spot"
    try:
        tick = msg.get("tick", msg.get("data"))
        if not isinstance(tick, dict):
            raise Rejected(Reason.MISSING_FIELD, f"an HTX {channel} message without tick")
        bids, asks = c.levels(tick.get("bids", [])), c.levels(tick.get("asks", []))
        ts = c.time_ms(msg.get("ts", tick.get("ts")), "ts")
        if channel == "depth":                  # a full book each time: ordered by its time
            stamp = c.time_ms(tick.get("ts", msg.get("ts")), "ts")
            if stamp is None:
                raise Rejected(Reason.MISSING_FIELD, "an HTX depth message without ts")
            return Event(exchange, mkt, symbol, SNAPSHOT, stamp, stamp, None, ts, recv_time,
                         bids, asks, PREVIOUS_LINK, source)
        seq = c.an_id(tick.get("seqNum"), "seqNum")
        full = "rep" in msg or (len(parts) > 3 and parts[3] == "refresh")
        if full:
            return Event(exchange, mkt, symbol, SNAPSHOT, seq, seq, None, ts, recv_time, bids,
                         asks, PREVIOUS_LINK, source)
        prev = c.an_id(tick.get("prevSeqNum"), "prevSeqNum")
        return Event(exchange, mkt, symbol, DELTA, seq, seq, prev, ts, recv_time, bids, asks,
                     PREVIOUS_LINK, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, symbol), event_time=recv_time) from None


def stream_of_url(url: str) -> Optional[tuple[str, Optional[str]]]:
    host = c.host_of(url)
    if not c.on_domain(host, "htx.com", "huobi.pro", "huobi.com", "hbdm.com", "hbdm.vn",
                       "huobi.br.com"):
        return None
    if not c.on_domain(host, "hbdm.com", "hbdm.vn"):
        return NAME, "spot"
    try:
        path = urlparse(url).path
    except ValueError:
        return None
    if "linear-swap" in path:
        return NAME, "linear-swap"
    if "swap" in path:
        return NAME, "swap"
    return NAME, "futures"
