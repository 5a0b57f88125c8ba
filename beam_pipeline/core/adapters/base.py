"""The contract of an exchange adapter: one module per exchange family (see adapters/__init__.py).

A module satisfies `ExchangeAdapter` by its module-level names; the registry checks each module
against it when it is loaded, so a missing function fails at once, not on the first record.
Before that check the registry completes each module with `complete`: the functions most venues
write alike come from what the module declares, so a venue module states only what differs:

  decode_delta / decode_snapshot   the venue's websocket message as it came, through its
                                   decode_message (snapshots in-stream): _common.enveloped_delta
                                   and enveloped_snapshot
  stream_of_url                    DOMAINS (the venue's hosts, former names included: a host on
                                   one of them or below it) -> (EXCHANGES[0], URL_MARKET)
  is_depth_snapshot_url            SNAPSHOT_PATHS: a REST URL holding one of them
  symbol_from_url                  SYMBOL_PARAM: the REST URL's query parameter naming the symbol
  connection_number                none (the venue numbers no connection)

A module that defines one of these functions itself keeps its own.
Venue-neutral helpers an adapter may use (JSON probing, decimal checks): adapters/_common.py.
"""
from __future__ import annotations

from types import ModuleType
from typing import Mapping, Optional, Protocol, Union, runtime_checkable

from beam_pipeline.core.adapters._common import (enveloped_delta, enveloped_snapshot, host_of,
                                                 on_domain, query_value)
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

    def connection_number(self, raw: bytes, channels: Optional[Mapping[int, str]] = None
                          ) -> Optional[tuple[int, Optional[tuple[str, str]]]]:
        """For a venue that numbers every message of a connection (rule connection_sequence):
        (the message's number, (market, symbol) of the book it belongs to or None) for any frame
        of the connection that carries a number, heartbeats and other channels included; None for
        a frame without one. core/connections.py checks the numbers of each connection."""


def complete(module: ModuleType) -> None:
    """Give `module` the contract functions it does not define, from what it declares (see the
    module docstring)."""
    decode_message = getattr(module, "decode_message", None)
    defaults: dict = {"connection_number": numbers_no_connection}
    if decode_message is not None:
        defaults["decode_delta"] = _enveloped_delta(decode_message)
        defaults["decode_snapshot"] = _enveloped_snapshot(decode_message)
    if hasattr(module, "DOMAINS") and hasattr(module, "EXCHANGES"):
        defaults["stream_of_url"] = _stream_on_domains(module.EXCHANGES[0], tuple(module.DOMAINS),
                                                       getattr(module, "URL_MARKET", None))
    if hasattr(module, "SNAPSHOT_PATHS"):
        defaults["is_depth_snapshot_url"] = _url_holding(tuple(module.SNAPSHOT_PATHS))
    if hasattr(module, "SYMBOL_PARAM"):
        defaults["symbol_from_url"] = _query_value_of(module.SYMBOL_PARAM)
    for name, function in defaults.items():
        if not hasattr(module, name):
            setattr(module, name, function)


def _enveloped_delta(decode_message):
    def decode_delta(payload: bytes, market: Optional[str], recv_time: Optional[int], source: str,
                     symbol: Optional[str] = None, exchange: Optional[str] = None) -> Decoded:
        return enveloped_delta(decode_message, payload, market, recv_time, source, symbol,
                                 exchange)
    return decode_delta


def _enveloped_snapshot(decode_message):
    def decode_snapshot(payload: bytes, market: Optional[str], symbol: str,
                        recv_time: Optional[int], source: str,
                        exchange: Optional[str] = None) -> Event:
        return enveloped_snapshot(decode_message, payload, market, symbol, recv_time, source,
                                    exchange)
    return decode_snapshot


def _stream_on_domains(exchange: str, domains: tuple, market: Optional[str]):
    def stream_of_url(url: str) -> Optional[tuple[str, Optional[str]]]:
        return (exchange, market) if on_domain(host_of(url), *domains) else None
    return stream_of_url


def _url_holding(paths: tuple):
    def is_depth_snapshot_url(url: str) -> bool:
        return any(path in url for path in paths)
    return is_depth_snapshot_url


def _query_value_of(name: str):
    def symbol_from_url(url: str) -> Optional[str]:
        return query_value(url, name)
    return symbol_from_url


def numbers_no_connection(raw: bytes, channels=None) -> None:
    """connection_number of a venue that numbers no connection."""
    return None
