"""Binance (spot, USD-M and COIN-M futures): one combined-stream connection whose URL names every
symbol's `<symbol>@depth@100ms` stream; snapshots are REST depth bodies the collector fetches."""
from __future__ import annotations

from typing import Optional, Sequence

import msgspec

from beam_pipeline.capture.base import DELTA, OTHER, REST, Frame

NAME = "binance"
RESYNC = REST


class _Combined(msgspec.Struct):
    stream: str
    data: msgspec.Raw


class _Ids(msgspec.Struct):
    U: Optional[int] = None
    u: Optional[int] = None
    pu: Optional[int] = None
    E: Optional[int] = None


_combined = msgspec.json.Decoder(_Combined)
_ids = msgspec.json.Decoder(_Ids)


def check_symbols(market: str, symbols: Sequence[str]) -> Optional[str]:
    if any(not symbol.isalnum() for symbol in symbols):
        return "Binance symbols are letters and digits, like BTCUSDT,ETHUSDT"
    return None


def connect_url(ws_base: str, market: str, symbols: Sequence[str]) -> str:
    streams = "/".join(f"{symbol.lower()}@depth@100ms" for symbol in symbols)
    return f"{ws_base.rstrip('/')}/stream?streams={streams}"


def subscribe_messages(market: str, symbols: Sequence[str]) -> list[str]:
    return []                               # the URL names the streams


def resubscribe_messages(market: str, symbol: str) -> list[str]:
    return []                               # REST: the collector fetches a snapshot


def keepalive_message() -> Optional[str]:
    return None                             # Binance pings; websockets answers


def parse_frame(raw: bytes) -> Optional[Frame]:
    """A combined-stream frame -> Frame; None for what is not one (a SUBSCRIBE answer, ...)."""
    try:
        combined = _combined.decode(raw)
    except msgspec.DecodeError:
        return None
    symbol = combined.stream.partition("@")[0].upper()
    data = bytes(combined.data)
    if "@depth" not in combined.stream:
        return Frame(symbol, OTHER, data, None, None, None, None)
    try:
        ids = _ids.decode(data)
    except msgspec.DecodeError:
        ids = _Ids()
    return Frame(symbol, DELTA, data, ids.U, ids.u, ids.pu, ids.E)
