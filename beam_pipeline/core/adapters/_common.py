"""What the adapters of venues other than Binance share (a private module: not an adapter).

Messages are decoded as plain JSON with every JSON number that has a fraction kept as an exact
Decimal (prices and sizes are never floats); levels become the canonical levels text
(model.encode_levels) of decimal strings exactly as the venue wrote them.
"""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlparse

import msgspec

from beam_pipeline.core.decoding import INT64_MAX, LAST_MS
from beam_pipeline.core.model import Event, encode_levels
from beam_pipeline.core.reasons import Reason, Rejected

_json = msgspec.json.Decoder(float_hook=Decimal)
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\Z")


def loads(raw: bytes) -> Any:
    """The message as Python values (numbers with a fraction as Decimal), or Rejected(BAD_JSON)."""
    try:
        return _json.decode(raw)
    except msgspec.DecodeError as error:
        raise Rejected(Reason.BAD_JSON, str(error)) from None


def text(value) -> Optional[str]:
    """`value` when it is a string, else None (a safe key for a lookup: JSON lists are unhashable)."""
    return value if isinstance(value, str) else None


def stream_of(exchange: str, market: Optional[str], symbol) -> Optional[str]:
    """exchange:market:symbol of a rejected record, as far as it is known."""
    if not isinstance(symbol, str):
        return None
    return f"{exchange}:{market or '?'}:{symbol}"


def decimal_text(value, what: str = "price level") -> str:
    """A price or size as exact decimal text: a decimal string as sent, an int, or a JSON number
    with a fraction (Decimal) written without exponent. Anything else: Rejected(BAD_PRICE_LEVEL)."""
    if isinstance(value, str) and _DECIMAL.match(value):
        return value if "e" not in value and "E" not in value else format(Decimal(value), "f")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite():
        return format(value, "f")
    raise Rejected(Reason.BAD_PRICE_LEVEL, f"{what} {value!r} is not a decimal number")


def levels(rows, price: int = 0, size: int = 1, *, absolute: bool = False) -> bytes:
    """A venue's level rows (lists) -> the canonical levels text [[price, size], ...].
    `absolute`: sizes are signed by side (Bitfinex: asks negative); the text keeps the magnitude."""
    if not isinstance(rows, list):
        raise Rejected(Reason.BAD_PRICE_LEVEL, f"levels must be a list, not {type(rows).__name__}")
    out = []
    for row in rows:
        if not isinstance(row, (list, tuple)) or len(row) <= max(price, size):
            raise Rejected(Reason.BAD_PRICE_LEVEL, f"level {row!r} is not [price, size, ...]")
        qty = decimal_text(row[size], "size")
        if absolute and qty.startswith("-"):
            qty = qty[1:]
        out.append((decimal_text(row[price], "price"), qty))
    return encode_levels(out)


def object_levels(rows, price: str, size: str) -> bytes:
    """Level objects ({"p": ..., "s": ...}) -> the canonical levels text."""
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise Rejected(Reason.BAD_PRICE_LEVEL, "levels must be a list of objects")
    try:
        return encode_levels([(decimal_text(row[price], "price"), decimal_text(row[size], "size"))
                              for row in rows])
    except KeyError as missing:
        raise Rejected(Reason.BAD_PRICE_LEVEL, f"a level lacks {missing}") from None


def an_id(value, what: str, *, allow_negative: bool = False) -> int:
    """A venue's sequence id: an int (or a decimal string of one) in int64; else Rejected."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    low = -1 if allow_negative else 0
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= INT64_MAX:
        return value
    if value is None:
        raise Rejected(Reason.MISSING_FIELD, f"{what} is missing")
    if isinstance(value, int) and not isinstance(value, bool):
        raise Rejected(Reason.INVALID_IDS, f"{what}={value} is out of range")
    raise Rejected(Reason.MISTYPED_FIELD, f"{what} {value!r} is not an integer id")


def checksum(value, what: str = "checksum") -> Optional[int]:
    """A venue's book checksum: an int (or a decimal string of one, signed) in int64; None when
    absent; Rejected when mistyped."""
    if value is None:
        return None
    if isinstance(value, str) and value.lstrip("-").isdigit() and len(value) <= 20:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and -INT64_MAX - 1 <= value <= INT64_MAX:
        return value
    raise Rejected(Reason.MISTYPED_FIELD, f"{what} {value!r} is not an integer checksum")


def time_ms(value, what: str = "time", scale: int = 1) -> Optional[int]:
    """An exchange time -> ms (`scale`: ms per unit of `value`, 1000 for seconds), None when
    absent; Rejected when mistyped or outside 1970..9999."""
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, Decimal):
        value = int(value * scale) if value.is_finite() else None
        scale = 1
    if not isinstance(value, int) or isinstance(value, bool):
        raise Rejected(Reason.MISTYPED_FIELD, f"{what} {value!r} is not a time")
    ms = value * scale
    if not 0 <= ms <= LAST_MS:
        raise Rejected(Reason.MISTYPED_FIELD, f"{what} is outside 1970..9999")
    return ms


def host_of(url: str) -> str:
    try:
        return (urlparse(url).hostname or "").lower()
    except ValueError:
        return ""


def on_domain(host: str, *domains: str) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def query_value(url: str, name: str) -> Optional[str]:
    try:
        values = parse_qs(urlparse(url).query).get(name)
    except ValueError:
        return None
    return values[0] if values else None


def enveloped_delta(decode_message: Callable, payload: bytes, market: Optional[str],
                    recv_time: Optional[int], source: str, symbol: Optional[str],
                    exchange: Optional[str]):
    """decode_delta for a venue whose envelope payload is its websocket message as it came:
    the message's own Event (or Ignored), its symbol checked against the envelope's."""
    result = decode_message(payload, recv_time, source, market, exchange)
    if isinstance(result, Event) and symbol is not None and result.symbol != symbol:
        raise Rejected(Reason.SYMBOL_MISMATCH, f"envelope symbol {symbol!r} but payload symbol "
                       f"{result.symbol!r}", symbol=stream_of(result.exchange, result.market, symbol),
                       first_id=result.first_id, last_id=result.last_id)
    return result


def enveloped_snapshot(decode_message: Callable, payload: bytes, market: Optional[str], symbol: str,
                       recv_time: Optional[int], source: str, exchange: Optional[str]) -> Event:
    """decode_snapshot for a venue whose snapshots come in-stream: the message must decode to a
    snapshot of `symbol`."""
    result = enveloped_delta(decode_message, payload, market, recv_time, source, symbol, exchange)
    if not isinstance(result, Event) or result.kind != "snapshot":
        raise Rejected(Reason.MISSING_FIELD, "an envelope of type snapshot whose payload is not "
                       "the venue's snapshot message", symbol=stream_of(exchange or "?", market, symbol))
    return result


def exchange_of(exchange: Optional[str], exchanges: tuple) -> str:
    if exchange is None:
        return exchanges[0]
    if exchange not in exchanges:
        raise Rejected(Reason.UNSUPPORTED_EXCHANGE, f"this adapter decodes {exchanges}, not {exchange!r}")
    return exchange
