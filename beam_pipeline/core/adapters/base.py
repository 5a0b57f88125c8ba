"""The contract of an exchange adapter: one module per exchange family (see adapters/__init__.py).

A module satisfies `ExchangeAdapter` by its module-level names; the registry checks each module
against it when it is loaded, so a missing function fails at once, not on the first record.
"""
from __future__ import annotations

from typing import Mapping, Optional, Protocol, runtime_checkable

from beam_pipeline.core.model import Event


@runtime_checkable
class ExchangeAdapter(Protocol):
    """Turns one exchange family's messages into Events.

    EXCHANGES: the exchange names it decodes (the `exchange` of its Events and of envelopes);
    two names are two sets of books: never the same key.
    RULES: market -> the continuity rule the sequencer applies (model.RANGE_PLUS_ONE, PREVIOUS_LINK).
    Every decode function returns an Event, None for another stream's message (counted as ignored),
    or raises reasons.Rejected.
    """

    EXCHANGES: tuple[str, ...]
    RULES: Mapping[str, str]

    def decode_message(self, raw: bytes, recv_time: Optional[int], source: str,
                       market: Optional[str] = None, exchange: Optional[str] = None, *,
                       file_symbol: Optional[str] = None) -> Optional[Event]:
        """A raw websocket frame, bare or wrapped as the exchange wraps it. `file_symbol`: the one
        symbol of a file that carries REST snapshot bodies in its stream (hftbacktest)."""

    def decode_delta(self, payload: bytes, market: Optional[str], recv_time: Optional[int],
                     source: str, symbol: Optional[str] = None,
                     exchange: Optional[str] = None) -> Optional[Event]:
        """A payload known to be an order-book delta (an envelope of type delta)."""

    def decode_snapshot(self, payload: bytes, market: Optional[str], symbol: str,
                        recv_time: Optional[int], source: str,
                        exchange: Optional[str] = None) -> Event:
        """A full-book snapshot whose symbol the caller knows (from a URL, an envelope, a file)."""

    def stream_of_url(self, url: str) -> Optional[tuple[str, str]]:
        """(exchange, market) of one of the family's websocket or REST URLs; None if not its URL."""

    def is_depth_snapshot_url(self, url: str) -> bool:
        """True for the REST endpoint that returns a depth snapshot."""

    def symbol_from_url(self, url: str) -> Optional[str]:
        """The symbol a REST request names, None when it names none."""
