"""The contract of an exchange adapter: one module per exchange family (see adapters/__init__.py).

A module satisfies `ExchangeAdapter` by its module-level names; the registry checks each module
against it when it is loaded, so a missing function fails at once, not on the first record.
Venue-neutral helpers an adapter may use (JSON probing, decimal checks, the envelope's delta and
snapshot entry points for venues whose snapshots come in-stream): adapters/_common.py.
"""
from __future__ import annotations

from typing import Mapping, Optional, Protocol, Union, runtime_checkable

from beam_pipeline.core.model import Event, Ignored

Decoded = Union[Event, Ignored, None]   # None: Ignored(OTHER_STREAM)


@runtime_checkable
class ExchangeAdapter(Protocol):
    """Turns one exchange family's messages into Events.

    EXCHANGES: the exchange names it decodes (the `exchange` of its Events and of envelopes);
    two names are two sets of books: never the same key.
    RULES: market -> the continuity rule of that market's usual book feed (one of model's rules:
    RANGE_PLUS_ONE, PREVIOUS_LINK, CONNECTION_SEQUENCE, NO_IDS); a collector's disconnect marker of
    that market takes it. The rule of each Event is the adapter's to pick per message (a venue's
    older captures may carry no ids).
    Every decode function returns an Event, an Ignored (not book data: a subscription reply, a
    heartbeat, another channel, with that reason) or None (Ignored(OTHER_STREAM)), or raises
    reasons.Rejected. A message of a book channel the adapter cannot read is Rejected, never
    ignored. A venue without ids gives each message model.arrival_ordinal(recv_time, source) as its
    ids (the recorder's receive order) and the rule NO_IDS.
    """

    EXCHANGES: tuple[str, ...]
    RULES: Mapping[str, str]

    def decode_message(self, raw: bytes, recv_time: Optional[int], source: str,
                       market: Optional[str] = None, exchange: Optional[str] = None, *,
                       file_symbol: Optional[str] = None,
                       channels: Optional[Mapping[int, str]] = None) -> Decoded:
        """A raw websocket frame (text; a framing has already decoded a binary one), bare or
        wrapped as the exchange wraps it. `market`: what the stream URL said, None when it does not
        say (the adapter then takes it from the message). `file_symbol`: the one symbol of a file
        that carries REST snapshot bodies in its stream (hftbacktest). `channels`: the
        connection's channel ids, for a venue whose messages name only those (Bitfinex:
        framings' FileContext.channels)."""

    def decode_delta(self, payload: bytes, market: Optional[str], recv_time: Optional[int],
                     source: str, symbol: Optional[str] = None,
                     exchange: Optional[str] = None) -> Decoded:
        """A payload an envelope says is an order-book delta (type delta) of `symbol`: the
        venue's message as it came (Binance: the depthUpdate object)."""

    def decode_snapshot(self, payload: bytes, market: Optional[str], symbol: str,
                        recv_time: Optional[int], source: str,
                        exchange: Optional[str] = None) -> Event:
        """A full-book snapshot whose symbol the caller knows (from a REST URL, an envelope, a
        file): a REST body, or an in-stream snapshot message of the venue."""

    def stream_of_url(self, url: str) -> Optional[tuple[str, Optional[str]]]:
        """(exchange, market) of one of the family's websocket or REST URLs, the venue's former
        names and hosts included; market None when the URL does not say (one connection carries
        several instrument types); None if not the family's URL."""

    def is_depth_snapshot_url(self, url: str) -> bool:
        """True for a REST endpoint that returns a depth snapshot (other REST bodies: ignored)."""

    def symbol_from_url(self, url: str) -> Optional[str]:
        """The symbol a REST snapshot request names, as the venue writes it in its messages;
        None when it names none."""
