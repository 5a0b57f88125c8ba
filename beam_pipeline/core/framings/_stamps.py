"""Receive times as recorders write them -> ms since the epoch, exactly (no float rounding).

A recorder's clock may run behind the exchange's (hftbacktest's ran ~1.3 s behind `E`): the time is
kept as recorded, never compared with the exchange's.
"""
from __future__ import annotations

import calendar
import re

from beam_pipeline.core.decoding import LAST_MS
from beam_pipeline.core.reasons import Reason, Rejected

_ISO = re.compile(rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]00:?00)?\Z")


def seconds_ms(text: bytes) -> int:
    """'1633998512.0633569' -> 1633998512063."""
    whole, _, frac = text.partition(b".")
    ms = int(whole) * 1000 + int((frac[:3] or b"0").ljust(3, b"0"))
    return _in_range(ms, text)


def epoch_integer_ms(text: bytes) -> int:
    """An integer stamp in ns (19 digits), µs (16) or ms (13) since the epoch -> ms, by its size."""
    value = int(text)
    if value >= 10**17:
        ms = value // 1_000_000
    elif value >= 10**14:
        ms = value // 1_000
    else:
        ms = value
    return _in_range(ms, text)


def iso_ms(text: bytes) -> int:
    """'2019-10-01T00:00:07.0123456Z' (UTC) -> ms since the epoch."""
    match = _ISO.match(text)
    if not match:
        raise Rejected(Reason.MISTYPED_FIELD, f"time {text[:40]!r} is not ISO-8601 UTC")
    year, month, day, hour, minute, second = map(int, match.groups()[:6])
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, second))
        if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
            raise ValueError("out of range")
    except (ValueError, OverflowError):
        raise Rejected(Reason.MISTYPED_FIELD, f"time {text[:40]!r} is not a valid date") from None
    frac = match.group(7) or b"0"
    return _in_range(seconds * 1000 + int(frac[:3].ljust(3, b"0")), text)


def _in_range(ms: int, text: bytes) -> int:
    if ms > LAST_MS:
        raise Rejected(Reason.MISTYPED_FIELD, f"capture time {text[:20]!r} is past the year 9999")
    return ms
