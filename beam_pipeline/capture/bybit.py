"""Bybit v5: the public websocket `<ws_base>/v5/public/<category>` (the market: spot, linear,
inverse, option), topics `orderbook.50.<SYMBOL>` (25 levels for options) subscribed with
`{"op":"subscribe","args":[...]}`, ten topics per request. The venue answers a subscription with a
snapshot in-stream (`type: snapshot`), then deltas whose `u` advances by one; a fresh snapshot is
had by unsubscribing and subscribing again. Bybit drops a connection without a ping for 10 min;
`{"op":"ping"}` every keepalive interval (answered with a pong, not written). Every message is
written as it came; the adapter (core/adapters/bybit.py) reads it with the envelope's market.
"""
from __future__ import annotations

import json
import re
from typing import Optional, Sequence, Union

import msgspec

from beam_pipeline.capture.base import DELTA, OTHER, RESUBSCRIBE, SNAPSHOT, Frame, Refusal

NAME = "bybit"
RESYNC = RESUBSCRIBE
TOPICS_PER_REQUEST = 10                     # Bybit's limit of args per subscribe request (spot)
_SYMBOL = re.compile(r"^[A-Z0-9]+(-[A-Z0-9]+)*$")


class _Data(msgspec.Struct):
    s: str = ""
    u: Optional[int] = None


class _Message(msgspec.Struct):
    topic: Optional[str] = None
    type: Optional[str] = None
    ts: Optional[int] = None
    data: Optional[_Data] = None
    op: Optional[str] = None
    success: Optional[bool] = None
    ret_msg: Optional[str] = None


_message = msgspec.json.Decoder(_Message)


def depth(market: str) -> int:
    return 25 if market == "option" else 50


def topic(market: str, symbol: str) -> str:
    return f"orderbook.{depth(market)}.{symbol}"


def check_symbols(market: str, symbols: Sequence[str]) -> Optional[str]:
    bad = [symbol for symbol in symbols if not _SYMBOL.match(symbol)]
    if bad:
        return f"Bybit symbols are like BTCUSDT, not {','.join(bad)}"
    return None


def connect_url(ws_base: str, market: str, symbols: Sequence[str]) -> str:
    return f"{ws_base.rstrip('/')}/v5/public/{market}"


def _op(op: str, topics: Sequence[str]) -> str:
    return json.dumps({"op": op, "args": list(topics)}, separators=(",", ":"))


def subscribe_messages(market: str, symbols: Sequence[str]) -> list[str]:
    topics = [topic(market, symbol) for symbol in symbols]
    return [_op("subscribe", topics[at:at + TOPICS_PER_REQUEST])
            for at in range(0, len(topics), TOPICS_PER_REQUEST)]


def resubscribe_messages(market: str, symbol: str) -> list[str]:
    return [_op("unsubscribe", [topic(market, symbol)]), _op("subscribe", [topic(market, symbol)])]


def keepalive_message() -> Optional[str]:
    return '{"op":"ping"}'


def parse_frame(raw: bytes) -> Optional[Union[Frame, Refusal]]:
    try:
        message = _message.decode(raw)
    except msgspec.DecodeError:
        return None
    if message.topic is None:
        if message.success is False:
            return Refusal(message.ret_msg or raw.decode("utf-8", "replace"))
        return None                         # a subscribe answer, a pong
    name, _, rest = message.topic.partition(".")
    symbol = (message.data.s if message.data is not None else "") or rest.rpartition(".")[2]
    if name != "orderbook":
        return Frame(symbol, OTHER, raw, None, None, None, None)
    kind = SNAPSHOT if message.type == "snapshot" else DELTA
    u = message.data.u if message.data is not None else None
    return Frame(symbol, kind, raw, u, u, None, message.ts)
