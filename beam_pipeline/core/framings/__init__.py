"""Framings: one module per recorder's file format, behind base.Framing, and the registry.

Every module of this package (but `base` and private ones) is a framing; the registry is built from
them, so adding a format is one new module and its tests. A file's format is detected from its
first records (HEAD_RECORDS non-blank lines): each line votes for the most specific framing (lowest
PRIORITY) that recognises it, the most votes win, ties going to the lower PRIORITY.
--input_format forces one.

decode() turns one record into an Event via the exchange adapter the record names, an Ignored
(model.Ignored: not book data, with its reason) or None (another stream's message), both counted as
ignored, or raises Rejected with a reason code.
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Optional, Sequence, Union

from beam_pipeline.core.adapters import adapter_for
from beam_pipeline.core.contracts import plugin_modules
from beam_pipeline.core.framings.base import (CONTROL, DELTA, MESSAGE, OTHER, SNAPSHOT, Control,
                                              FileContext, Framing, Record)
from beam_pipeline.core.markers import decode_marker
from beam_pipeline.core.model import Event, Ignored
from beam_pipeline.core.reasons import Reason, Rejected

__all__ = ["Control", "FileContext", "Framing", "Record", "HEAD_RECORDS", "UNKNOWN", "decode",
           "detect", "framing_for", "framings", "names"]

HEAD_RECORDS = 32          # non-blank lines detection looks at: enough to outvote a few bad ones
UNKNOWN = "unknown"        # the format of a file no framing recognises (its records: unknown_format)

_FRAMINGS = sorted(plugin_modules(sys.modules[__name__], Framing),
                   key=lambda module: (module.PRIORITY, module.NAME))
_BY_NAME = {module.NAME: module for module in _FRAMINGS}


def framings() -> list[ModuleType]:
    """Every framing, in detection priority order."""
    return list(_FRAMINGS)


def names() -> tuple[str, ...]:
    return tuple(module.NAME for module in _FRAMINGS)


def framing_for(name: str) -> ModuleType:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise Rejected(Reason.UNKNOWN_FORMAT, unknown_format_message(name)) from None


def unknown_format_message(name: str) -> str:
    if name == UNKNOWN:
        return ("no input format recognises this file's first records; if it is one, say which "
                f"with --input_format ({', '.join(names())})")
    return f"unknown input format {name!r} (known: {', '.join(names())})"


def detect(head: Sequence[bytes]) -> Optional[ModuleType]:
    """The framing of most of a file's first records; None when no framing recognises any.

    Each line counts for the most specific framing (lowest PRIORITY) whose shape it has: an
    envelope line also looks like bare JSON, but it is an envelope."""
    votes: dict = {}
    for line in head:
        owner = next((framing for framing in _FRAMINGS if framing.looks_like(line)), None)
        if owner is not None:
            votes[owner] = votes.get(owner, 0) + 1
    if not votes:
        return None
    return min(votes, key=lambda framing: (-votes[framing], framing.PRIORITY))


def decode(record: Record, source: str) -> Union[Event, Ignored, None]:
    """A split record -> Event via the adapter of its exchange, None for another stream's message.
    A rejection carries what the line said (its stream, its receive time) where the payload did not."""
    try:
        return _decode(record, source)
    except Rejected as rejected:
        stream = (f"{record.exchange}:{record.market}:{record.symbol}"
                  if record.exchange and record.market and record.symbol else None)
        raise rejected.known(symbol=stream, event_time=record.recv_time) from None


def _decode(record: Record, source: str) -> Union[Event, Ignored, None]:
    adapter = adapter_for(record.exchange) if record.exchange else None
    if record.kind == MESSAGE:
        if adapter is None:
            raise Rejected(Reason.BAD_FRAMING, "a websocket frame whose exchange is not known (no connect "
                           "line naming the stream URL before it)")
        return adapter.decode_message(
            record.payload, record.recv_time, source, record.market, record.exchange,
            file_symbol=(record.symbol or "") if record.file_snapshots else None,
            channels=record.channels)
    if record.kind == OTHER:
        return None
    if adapter is None:
        raise Rejected(Reason.UNSUPPORTED_EXCHANGE, "a record whose exchange is not known")
    if record.kind == DELTA:
        return adapter.decode_delta(record.payload, record.market, record.recv_time, source,
                                    record.symbol, record.exchange)
    if record.kind == SNAPSHOT:
        if record.symbol is None:
            raise Rejected(Reason.MISSING_FIELD, "a depth snapshot whose symbol is not known")
        return adapter.decode_snapshot(record.payload, record.market, record.symbol,
                                       record.recv_time, source, record.exchange)
    if record.kind == CONTROL:
        if record.symbol is None or record.market not in adapter.RULES:
            raise Rejected(Reason.MISSING_FIELD, "a disconnect marker needs its symbol and a market "
                           f"of {record.exchange} (known: {sorted(adapter.RULES)})")
        return decode_marker(record.payload, record.exchange, record.market, record.symbol,
                             record.recv_time, source, adapter.RULES[record.market])
    raise ValueError(f"a framing returned a record of kind {record.kind!r}")
