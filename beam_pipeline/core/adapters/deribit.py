"""Deribit: `book.{instrument}.{raw|100ms}` over JSON-RPC 2.0 (and the grouped
`book.{instrument}.{group}.{depth}.{interval}`, whose every message is a full book).

Exchange `deribit`. Market: Deribit's instrument `kind`, lowercased: `future` (perpetuals and dated
futures: `BTC-PERPETUAL`, `BTC-24SEP21`), `option` (`BTC-24SEP21-8000-P`), `spot` (`BTC_USDC`),
`future_combo` / `option_combo` (`BTC-FS-...`, `BTC-CS-...`), read from the instrument name.
Symbol: `instrument_name` as sent.

Rule: previous-link, `prev_change_id == previous change_id` per instrument (ids are not
contiguous). A snapshot has no `prev_change_id` and anchors a segment. Levels are
`[action, price, amount]` with JSON-number prices (kept as exact decimals); `delete` has size 0.
RPC results (subscribe replies) are `subscription`, `heartbeat` / `test_request` are `heartbeat`,
other channels are ignored by their name (`ticker`, `trades`, ...).
"""
from __future__ import annotations

from typing import Optional

from beam_pipeline.core.adapters import _common as c
from beam_pipeline.core.model import (DELTA, HEARTBEAT, PREVIOUS_LINK, SNAPSHOT, STATUS,
                                      SUBSCRIPTION, Event, Ignored, encode_levels)
from beam_pipeline.core.reasons import Reason, Rejected

NAME = "deribit"
EXCHANGES = (NAME,)
DOMAINS = ("deribit.com",)
SNAPSHOT_PATHS = ("/public/get_order_book",)
SYMBOL_PARAM = "instrument_name"
RULES = {kind: PREVIOUS_LINK for kind in ("future", "option", "spot", "future_combo", "option_combo")}


def kind_of(instrument: str) -> str:
    """Deribit's `kind` of an instrument name."""
    if "-FS-" in instrument:
        return "future_combo"
    if any(f"-{tag}-" in instrument for tag in ("CS", "PS", "STRG", "STRD", "RR", "BUT", "CCAL",
                                                "PCAL", "CDIAG", "PDIAG", "CBUT", "PBUT", "ICOND")):
        return "option_combo"
    parts = instrument.split("-")
    if len(parts) >= 4 and parts[-1] in ("C", "P"):
        return "option"
    if len(parts) == 1 and "_" in instrument:
        return "spot"
    return "future"


def decode_message(raw: bytes, recv_time: Optional[int], source: str,
                   market: Optional[str] = None, exchange: Optional[str] = None, *,
                   file_symbol: Optional[str] = None,
                   channels=None):
    exchange = c.exchange_of(exchange, EXCHANGES)
    msg = c.loads(raw)
    if not isinstance(msg, dict):
        raise Rejected(Reason.BAD_FRAMING, "a Deribit message that is not a JSON-RPC object")
    method = msg.get("method")
    if method in ("heartbeat", "public/test", "test_request"):
        return Ignored(HEARTBEAT)
    if method != "subscription":
        if "result" in msg or "error" in msg:
            return Ignored(SUBSCRIPTION)
        return Ignored(STATUS)
    params = msg.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
        raise Rejected(Reason.MISSING_FIELD, "a Deribit notification without params.channel")
    channel = params["channel"]
    name = channel.partition(".")[0]
    if name != "book":
        return Ignored(name)
    data = params.get("data")
    instrument = channel.split(".")[1] if channel.count(".") >= 2 else None
    if isinstance(data, dict) and isinstance(data.get("instrument_name"), str):
        instrument = data["instrument_name"]
    mkt = kind_of(instrument) if instrument else None
    try:
        if not isinstance(data, dict):
            raise Rejected(Reason.MISSING_FIELD, "a Deribit book notification without data")
        if instrument is None:
            raise Rejected(Reason.MISSING_FIELD, "a Deribit book notification without instrument_name")
        assert mkt is not None                  # an instrument always has a kind
        grouped = channel.count(".") > 2
        kind = SNAPSHOT if grouped or data.get("type") == "snapshot" else DELTA
        if not grouped and data.get("type") not in ("snapshot", "change"):
            raise Rejected(Reason.MISTYPED_FIELD, f"Deribit book type {data.get('type')!r}")
        change = c.an_id(data.get("change_id"), "change_id")
        prev = None if kind == SNAPSHOT else c.an_id(data.get("prev_change_id"), "prev_change_id")
        return Event(exchange, mkt, instrument, kind, change, change, prev,
                     c.time_ms(data.get("timestamp"), "timestamp"), recv_time,
                     _levels(data.get("bids", []), grouped), _levels(data.get("asks", []), grouped),
                     PREVIOUS_LINK, source)
    except Rejected as rejected:
        raise rejected.known(symbol=c.stream_of(exchange, mkt, instrument), event_time=recv_time) from None


def _levels(rows, grouped: bool) -> bytes:
    if grouped:
        return c.levels(rows)
    if not isinstance(rows, list):
        raise Rejected(Reason.BAD_PRICE_LEVEL, "Deribit levels must be a list")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 3 or row[0] not in ("new", "change", "delete"):
            raise Rejected(Reason.BAD_PRICE_LEVEL, f"Deribit level {row!r} is not [action, price, amount]")
        price = c.decimal_text(row[1], "price")
        out.append((price, "0" if row[0] == "delete" else c.decimal_text(row[2], "amount")))
    return encode_levels(out)
