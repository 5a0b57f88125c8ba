"""One regex over a whole envelope line: the common shape of a Binance depth update delta, its fields
taken from the match's groups (no JSON decoding at all).

The shapes are the ones our writers produce, compact JSON with a fixed key order:
envelope `exchange, market, symbol, recv_ts_ms, type, payload` (tests/tooling/synthetic.py and
beam_pipeline/collector.py), payload either
- `e, E, s, U, u, b, a` then optionally `pu`, then `T` (Binance spot; the generator's usdm), or
- `e, E, T, s, U, u, pu, b, a` (Binance futures, as the collector embeds them).

It only *accepts*: a line of any other shape (spacing, key order, escapes, nulls, a symbol outside
[A-Z0-9_-]) is handed back (None) to the batch path (core/batch_decode.py), and that one's
reference path decides. What it accepts is what those paths accept, with the same values (property
tests: tests/unit/test_envelope_lines.py): numbers are JSON integers (no leading zeros, digit
counts bounded, ranges checked on the ints below), the level arrays are exactly the language of
adapters.binance._COMPACT_LEVELS, the payload's symbol is the envelope's (a backreference) and a
fixed key order cannot repeat a key. The caller still applies its record size limit.
"""
from __future__ import annotations

import re
from typing import Optional

import msgspec

from beam_pipeline.core.adapters.binance import _LEVEL, PREVIOUS_LINK, RULES
from beam_pipeline.core.decoding import INT64_MAX, LAST_MS

# JSON integers without leading zeros, no longer than the largest accepted value (possessive: an
# integer always ends at "," or "}", nothing is ever given back).
_ID = rb'(0|[1-9][0-9]{0,18}+)'            # UpdateId 0..INT64_MAX (19 digits)
_PREV = rb'(-1|0|[1-9][0-9]{0,18}+)'       # pu -1..INT64_MAX
_MS = rb'(0|[1-9][0-9]{0,14}+)'            # TimeMs 0..LAST_MS (15 digits)
# adapters.binance._COMPACT_LEVELS without its \Z: the array ends at its first "]" not inside a level
_LEVELS = rb'(\[(?:' + _LEVEL + rb'(?:,' + _LEVEL + rb')*+)?+\])'

_HEAD = (rb'\{"exchange":"(binance(?:_us)?+)","market":"(spot|usdm|coinm)",'
         rb'"symbol":"(?P<symbol>[A-Z0-9_-]{1,32}+)","recv_ts_ms":' + _MS + rb','
         rb'"type":"delta","payload":\{"e":"depthUpdate","E":' + _MS + rb',')
_SPOT_ORDER = (rb'"s":"(?P=symbol)","U":' + _ID + rb',"u":' + _ID + rb',"b":' + _LEVELS
               + rb',"a":' + _LEVELS + rb'(?:,"pu":' + _PREV + rb')?+(?:,"T":' + _MS + rb')?+')
_FUTURES_ORDER = (rb'"T":' + _MS + rb',"s":"(?P=symbol)","U":' + _ID + rb',"u":' + _ID
                  + rb',"pu":' + _PREV + rb',"b":' + _LEVELS + rb',"a":' + _LEVELS)
DELTA_LINE = re.compile(_HEAD + rb'(?:' + _SPOT_ORDER + rb'|' + _FUTURES_ORDER + rb')\}\}')
# groups: 1 exchange, 2 market, 3 symbol, 4 recv_ts_ms, 5 E,
#   spot order 6 U, 7 u, 8 b, 9 a, 10 pu, 11 T; futures order 12 T, 13 U, 14 u, 15 pu, 16 b, 17 a

_EXCHANGES = {b"binance": "binance", b"binance_us": "binance_us"}
_MARKETS = {b"spot": "spot", b"usdm": "usdm", b"coinm": "coinm"}
# The regex has checked the digits: msgspec's integer parser is 2-3x faster than int(bytes) (100
# against 260 ns for 13 digits, measured), and 19 digits always fit its uint64.
_int = msgspec.json.Decoder(int).decode
_LINKED = frozenset(market.encode() for market, rule in RULES.items() if rule == PREVIOUS_LINK)


def match_delta_line(line: bytes) -> Optional[tuple]:
    """(exchange, market, symbol, recv_ts_ms, E, U, u, pu, bids, asks) of a depth update delta line
    in one of the common shapes, bids and asks as their raw (canonical) bytes; None for any other
    line, or one whose values the decoders would reject."""
    match = DELTA_LINE.fullmatch(line)
    if match is None:
        return None
    (exchange, market, symbol, recv, event, first, last, bids, asks, prev, trade,
     trade2, first2, last2, prev2, bids2, asks2) = match.groups()
    if first is None:
        first, last, prev, bids, asks, trade = first2, last2, prev2, bids2, asks2, trade2
    recv, event, first, last = _int(recv), _int(event), _int(first), _int(last)
    if prev is not None:
        prev = _int(prev)
        if prev > INT64_MAX:
            return None
    elif market in _LINKED:
        return None                       # a futures delta must carry pu: the decoder says why
    if (first > last or last > INT64_MAX or recv > LAST_MS or event > LAST_MS
            or (trade is not None and _int(trade) > LAST_MS)):
        return None
    return (_EXCHANGES[exchange], _MARKETS[market], symbol.decode(), recv, event, first, last, prev,
            bids, asks)

