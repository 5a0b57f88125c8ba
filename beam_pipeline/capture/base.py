"""The contract of a capture venue: what the collector (beam_pipeline/collector.py) needs to know
of one exchange's live websocket feed. One module per venue in this package (see __init__.py).

A module satisfies `CaptureVenue` by its module-level names; the registry checks each module
against it when it is loaded. The decoding of what the collector writes is the adapters' business
(beam_pipeline/core/adapters/): a venue here only splits a frame far enough to route it (its
symbol, whether it is book data, a snapshot, its ids for the overlap of a planned reconnect and
for the disconnect marker) and writes it as it came.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

import msgspec

DELTA, SNAPSHOT, OTHER = "delta", "snapshot", "other"   # Frame.kind: the envelope's type
REST, RESUBSCRIBE = "rest", "resubscribe"               # how a venue is asked for a fresh snapshot


class Frame(msgspec.Struct):
    """One websocket frame, split: its symbol, envelope type (delta, snapshot: an in-stream one;
    other: another channel of the venue, written as it came) and ids (None: not book data)."""

    symbol: str
    kind: str
    payload: bytes
    first_id: Optional[int]
    last_id: Optional[int]
    prev_id: Optional[int]
    event_time: Optional[int]


class Refusal(msgspec.Struct):
    """A frame in which the venue refuses something the collector asked (an unknown symbol...):
    logged, never written."""

    message: str


@runtime_checkable
class CaptureVenue(Protocol):
    """One exchange's live order-book feed, as the collector captures it.

    NAME: the exchange name the collector writes (the envelopes' `exchange`, the adapter's).
    RESYNC: how a fresh snapshot of one symbol is had: REST (a REST depth snapshot written
    in-stream by the collector: Binance) or RESUBSCRIBE (unsubscribe and subscribe the symbol's
    book channel: the venue sends a snapshot in-stream, OKX, Bybit v5).
    """

    NAME: str
    RESYNC: str

    def check_symbols(self, market: str, symbols: Sequence[str]) -> Optional[str]:
        """Why `symbols` (as the venue writes them) cannot be captured on `market`; None if they
        can."""

    def connect_url(self, ws_base: str, market: str, symbols: Sequence[str]) -> str:
        """The websocket URL to connect to for `symbols` of `market`."""

    def subscribe_messages(self, market: str, symbols: Sequence[str]) -> list[str]:
        """What to send once connected for the symbols' book channels (none when the URL says)."""

    def resubscribe_messages(self, market: str, symbol: str) -> list[str]:
        """What to send to have a fresh snapshot of `symbol` in-stream (RESUBSCRIBE venues)."""

    def keepalive_message(self) -> Optional[str]:
        """The venue's application-level ping, sent every keepalive interval (None: websocket pings
        are enough)."""

    def parse_frame(self, raw: bytes) -> Optional[Frame | Refusal]:
        """A frame -> Frame; Refusal for an error the venue answered; None for what is not
        written (a subscription reply, a pong)."""
