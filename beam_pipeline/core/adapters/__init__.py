"""Exchange adapters: one module per exchange family turns its messages into the normalized Event.

The registry is built from the modules of this package: every module (but `base` and private ones)
is an adapter satisfying base.ExchangeAdapter once base.complete has given it the defaults it does
not define itself, and serves the exchange names in its EXCHANGES.
Adding an exchange is one new module here and its tests; nothing else lists them.
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Optional

from beam_pipeline.core.adapters.base import ExchangeAdapter, complete, numbers_no_connection
from beam_pipeline.core.contracts import plugin_modules
from beam_pipeline.core.reasons import Reason, Rejected

__all__ = ["ExchangeAdapter", "Rejected", "adapter_for", "adapters", "connection_numbering",
           "exchange_names", "stream_of_url"]


def _discover() -> dict[str, ModuleType]:
    by_exchange: dict[str, ModuleType] = {}
    for module in plugin_modules(sys.modules[__name__], ExchangeAdapter, complete):
        for exchange in module.EXCHANGES:
            if exchange in by_exchange:
                raise TypeError(f"exchange {exchange!r} is claimed by {by_exchange[exchange].__name__}"
                                f" and {module.__name__}")
            by_exchange[exchange] = module
    return by_exchange


_BY_EXCHANGE = _discover()


def adapters() -> list[ModuleType]:
    """Every adapter module, once each, in name order."""
    return sorted(set(_BY_EXCHANGE.values()), key=lambda module: module.__name__)


def exchange_names() -> list[str]:
    return sorted(_BY_EXCHANGE)


def adapter_for(exchange: str):
    try:
        return _BY_EXCHANGE[exchange]
    except (KeyError, TypeError):
        raise Rejected(Reason.UNSUPPORTED_EXCHANGE, f"no adapter for exchange {exchange!r} "
                       f"(known: {exchange_names()})") from None


def connection_numbering(exchange: Optional[str]):
    """The adapter's connection_number where `exchange` numbers the messages of a connection,
    else None (nothing to check: most venues)."""
    module = _BY_EXCHANGE.get(exchange) if isinstance(exchange, str) else None
    if module is None or module.connection_number is numbers_no_connection:
        return None
    return module.connection_number


def stream_of_url(url: str) -> Optional[tuple[ModuleType, str, str]]:
    """(adapter, exchange, market) of a capture URL, or None when no adapter recognises it."""
    for adapter in adapters():
        found = adapter.stream_of_url(url)
        if found is not None:
            return (adapter, *found)
    return None
