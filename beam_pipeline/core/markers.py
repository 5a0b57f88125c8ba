"""A collector's in-stream control records: the disconnect marker, its one encoding and decoding.

The collector (beam_pipeline/collector.py) writes one marker per symbol per outage, when a
connection delivers data again (before its first frame), as an envelope line of type "disconnect"
(framings/envelope.py):

  {"exchange": "binance", "market": "spot", "symbol": "BTCUSDT", "recv_ts_ms": <to>,
   "type": "disconnect", "payload": {"from": <ms>, "to": <ms>, "attempts": 3,
   "symbols": ["BTCUSDT", "ETHUSDT"], "last_id": 123, "last_event_time": <ms>}}

`from`/`to`: the collector's clock when the connection that delivered was lost and when data came
again; `attempts`: the connection attempts of the outage (refused, or accepted and closed before
delivering); `symbols`: every symbol of the connection; `last_id` and
`last_event_time`: the last update id (and its exchange time) the collector had received for this
symbol before the loss, null when none (then the marker's ids and time are 0). The marker decodes to an Event of kind DISCONNECT whose ids
are `last_id` and whose time is `last_event_time`, so the canonical order (by ids) places it right
after the last delta before the loss; the sequencer counts it as a `control` record and treats the
next gap as one the disconnection explains (core/sequencer.py).
"""
from __future__ import annotations

from typing import Optional

import msgspec

from beam_pipeline.core.decoding import TimeMs, UpdateId, rejection
from beam_pipeline.core.model import DISCONNECT, Event, RANGE_PLUS_ONE

MARKER_TYPE = "disconnect"      # the envelope type of a disconnect marker


class Disconnect(msgspec.Struct):
    """The payload of a disconnect marker."""

    symbols: list[str]
    attempts: int
    last_id: Optional[UpdateId] = None
    last_event_time: Optional[TimeMs] = None
    from_ms: TimeMs = msgspec.field(name="from", default=0)
    to_ms: TimeMs = msgspec.field(name="to", default=0)


_decoder = msgspec.json.Decoder(Disconnect)
_encode = msgspec.json.Encoder().encode


def encode_marker(exchange: str, market: str, symbol: str, marker: Disconnect) -> bytes:
    """The envelope line of `marker` for `symbol` (without a newline)."""
    return _encode({"exchange": exchange, "market": market, "symbol": symbol,
                    "recv_ts_ms": marker.to_ms, "type": MARKER_TYPE,
                    "payload": msgspec.Raw(_encode(marker))})


def decode_marker(payload: bytes, exchange: str, market: str, symbol: str,
                  recv_time: Optional[int], source: str, rule: Optional[str]) -> Event:
    """A marker's payload -> its Event (kind DISCONNECT), or raises Rejected."""
    try:
        marker = _decoder.decode(payload)
    except msgspec.DecodeError as error:
        raise rejection(error) from None
    last_id = marker.last_id if marker.last_id is not None else 0
    if marker.last_event_time is None:
        # no time at all: a marker at id 0 with a late time would look like an earlier epoch
        return Event(exchange, market, symbol, DISCONNECT, last_id, last_id, None, None, None,
                     b"[]", b"[]", rule or RANGE_PLUS_ONE, source)
    # the reconnect time as its receive time: it sorts after a delta of the same ids and time
    # (Event.sort_key breaks that tie by receive time), which was received before the loss; its
    # previous id is its last id, so that it also sorts after a previous-link delta of that last
    # id (OKX: first id == last id, the previous id lower), whose previous id the tie compares first
    return Event(exchange, market, symbol, DISCONNECT, last_id, last_id, marker.last_id,
                 marker.last_event_time, max(marker.to_ms, recv_time or 0), b"[]", b"[]",
                 rule or RANGE_PLUS_ONE, source)
