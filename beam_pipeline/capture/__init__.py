"""Capture venues: one module per exchange the collector captures live, each satisfying
base.CaptureVenue (connect URL, subscription, how a book frame is recognised, how a resync is
asked for). Adding a venue to the collector is one module here (its decoding is its adapter's, in
core/adapters/), its endpoints in options.COLLECTOR_VENUES, and its fake in the tests' exchange.
"""
from __future__ import annotations

import sys
from types import ModuleType

from beam_pipeline.capture.base import CaptureVenue
from beam_pipeline.core.contracts import plugin_modules

__all__ = ["CaptureVenue", "venue_for", "venue_names"]

_BY_NAME: dict[str, ModuleType] = {module.NAME: module
                                   for module in plugin_modules(sys.modules[__name__], CaptureVenue)}


def venue_names() -> list[str]:
    return sorted(_BY_NAME)


def venue_for(name: str) -> ModuleType:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"the collector captures {venue_names()}, not {name!r}") from None
