"""Entry points of the input formats: a file's record or a Pub/Sub message -> Event.

The formats themselves are the framings in beam_pipeline/core/framings/ (one module each, found by
its registry); the exchanges are the adapters in beam_pipeline/core/adapters/. A record decodes to
an Event, None for another stream's message (counted as ignored), or raises Rejected with a reason.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from beam_pipeline.core import framings
from beam_pipeline.core.adapters import adapter_for
from beam_pipeline.core.decoding import LAST_MS, rejecting_the_unparseable
from beam_pipeline.core.framings import UNKNOWN, FileContext, envelope
from beam_pipeline.core.framings._stamps import seconds_ms as parse_seconds_ms  # noqa: F401
from beam_pipeline.core.model import Event, Ignored
from beam_pipeline.core.reasons import Reason, Rejected

__all__ = ["FileContext", "UNKNOWN", "context_from_header", "decode_envelope", "decode_message",
           "decode_record", "detect_format", "is_header", "parse_seconds_ms"]


def detect_format(head: Union[bytes, Sequence[bytes]]) -> str:
    """The format of a file from its first records (or one line): a framing's name, or UNKNOWN."""
    lines = [head] if isinstance(head, bytes) else list(head)
    found = framings.detect([line.lstrip() for line in lines if line.strip()])
    return found.NAME if found else UNKNOWN


def is_header(line: bytes) -> bool:
    """A line some format writes that is not a record (a capture header or connect line)."""
    return any(framing.control(line, FileContext(framing.NAME)) is not None
               for framing in framings.framings())


def context_from_header(fmt: str, header: bytes) -> FileContext:
    """The context a format's header line sets (a connect line names exchange and market)."""
    framing = framings.framing_for(fmt)
    control = framing.control(header, FileContext(fmt))
    return control.context if control is not None else FileContext(fmt)


@rejecting_the_unparseable
def decode_record(line: bytes, ctx: FileContext, source: str) -> Optional[Union[Event, Ignored]]:
    """One record of a file in the format ctx.fmt -> Event, None (ignored), or raises Rejected."""
    framing = framings.framing_for(ctx.fmt)
    return framings.decode(framing.split(line, ctx), source)


def decode_envelope(line: bytes, source: str) -> Optional[Union[Event, Ignored]]:
    return framings.decode(envelope.split(line, FileContext(envelope.NAME)), source)


@rejecting_the_unparseable
def decode_message(data: bytes, attributes: dict, source: str) -> Union[Event, Ignored, None]:
    """A Pub/Sub message: one envelope, or one raw exchange message described by its attributes
    (any exchange: `exchange` names its adapter, binance when absent)."""
    if envelope.looks_like(data):
        return decode_envelope(data, source)
    recv = attributes.get("recv_ts_ms")
    try:
        recv_time = int(recv) if recv is not None else None
    except ValueError:
        raise Rejected(Reason.MISTYPED_FIELD, f"attribute recv_ts_ms={recv!r} is not an integer") from None
    if recv_time is not None and not 0 <= recv_time <= LAST_MS:
        raise Rejected(Reason.MISTYPED_FIELD, f"attribute recv_ts_ms={recv!r} is out of range")
    exchange = attributes.get("exchange", "binance")
    event = adapter_for(exchange).decode_message(data, recv_time, source, attributes.get("market"),
                                                 exchange)
    if isinstance(event, Event) and attributes.get("symbol") not in (None, event.symbol):
        raise Rejected(Reason.SYMBOL_MISMATCH,
                       f"attribute symbol {attributes['symbol']!r} but payload symbol {event.symbol!r}")
    return event
