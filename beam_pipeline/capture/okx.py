"""OKX v5: the public websocket `<ws_base>/ws/v5/public`, one `books` subscription per instId
(`{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}`). The venue answers a
subscription with the book in-stream (`action: snapshot`, `prevSeqId: -1`), then updates linked by
`prevSeqId`; a fresh snapshot is had by unsubscribing and subscribing again. OKX closes a connection
that is silent for 30 s: the text "ping" keeps it open (answered "pong", not written). Every push is
written as it came, the adapter (core/adapters/okx.py) reads it; the market is the instruments'
type (`spot`, `swap`, `futures`, `option`), one process per type, as the adapter derives it.
"""
from __future__ import annotations

import json
import re
from typing import Optional, Sequence, Union

import msgspec

from beam_pipeline.capture.base import DELTA, OTHER, RESUBSCRIBE, SNAPSHOT, Frame, Refusal
from beam_pipeline.core.adapters.okx import DEFAULT_CHANNEL, inst_type

NAME = "okx"
RESYNC = RESUBSCRIBE
PATH = "/ws/v5/public"
_INST_ID = re.compile(r"^[A-Z0-9]+(-[A-Z0-9.]+)+$")


class _Arg(msgspec.Struct):
    channel: str = ""
    instId: str = ""


class _Book(msgspec.Struct):
    seqId: Optional[int] = None
    prevSeqId: Optional[int] = None
    ts: Optional[Union[int, str]] = None


class _Push(msgspec.Struct):
    event: Optional[str] = None
    msg: Optional[str] = None
    arg: Optional[_Arg] = None
    action: Optional[str] = None
    data: Optional[list[_Book]] = None


_push = msgspec.json.Decoder(_Push)


def check_symbols(market: str, symbols: Sequence[str]) -> Optional[str]:
    bad = [symbol for symbol in symbols if not _INST_ID.match(symbol)]
    if bad:
        return f"OKX instIds are like BTC-USDT or BTC-USDT-SWAP, not {','.join(bad)}"
    other = [symbol for symbol in symbols if inst_type(symbol) != market]
    if other:
        return (f"{','.join(other)} {'is' if len(other) == 1 else 'are'} not of OKX instrument "
                f"type {market} (one process per type)")
    return None


def connect_url(ws_base: str, market: str, symbols: Sequence[str]) -> str:
    return ws_base.rstrip("/") + PATH


def _op(op: str, symbols: Sequence[str]) -> str:
    return json.dumps({"op": op, "args": [{"channel": DEFAULT_CHANNEL, "instId": symbol}
                                          for symbol in symbols]}, separators=(",", ":"))


def subscribe_messages(market: str, symbols: Sequence[str]) -> list[str]:
    return [_op("subscribe", symbols)]


def resubscribe_messages(market: str, symbol: str) -> list[str]:
    return [_op("unsubscribe", [symbol]), _op("subscribe", [symbol])]


def keepalive_message() -> Optional[str]:
    return "ping"


def parse_frame(raw: bytes) -> Optional[Union[Frame, Refusal]]:
    if raw.strip() == b"pong":
        return None
    try:
        push = _push.decode(raw)
    except msgspec.DecodeError:
        return None                         # written by no one: the adapter would reject it
    if push.event is not None:
        return Refusal(push.msg or raw.decode("utf-8", "replace")) if push.event == "error" else None
    if push.arg is None or not push.arg.instId:
        return None
    if push.arg.channel != DEFAULT_CHANNEL:
        return Frame(push.arg.instId, OTHER, raw, None, None, None, None)
    book = push.data[0] if push.data else _Book()
    kind = SNAPSHOT if push.action == "snapshot" else DELTA
    prev = None if kind == SNAPSHOT or book.prevSeqId == -1 else book.prevSeqId
    ts = int(book.ts) if isinstance(book.ts, int) or (book.ts or "").isdigit() else None
    return Frame(push.arg.instId, kind, raw, book.seqId, book.seqId, prev, ts)
