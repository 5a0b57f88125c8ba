"""What every decoder shares: the ranges a time or an id may take, and how msgspec's errors and the
parser's own failures map onto reason codes (adapters and framings alike)."""
from __future__ import annotations

import functools
import re
from typing import Annotated

import msgspec

from beam_pipeline.core.reasons import Reason, Rejected

INT64_MAX = 2**63 - 1
LAST_MS = 253402300799999          # 9999-12-31T23:59:59.999Z: later times overflow timestamps
TimeMs = Annotated[int, msgspec.Meta(ge=0, le=LAST_MS)]
UpdateId = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]

_PATH = re.compile(r" - at `\$(\.\w+)?")
LEVEL_FIELDS = (".b", ".a", ".bids", ".asks")
ID_FIELDS = (".U", ".u", ".pu", ".lastUpdateId")


def rejection(error: msgspec.DecodeError) -> Rejected:
    """Map a msgspec error onto a stable reason code."""
    text = str(error)
    if not isinstance(error, msgspec.ValidationError):
        return Rejected(Reason.BAD_JSON, text)
    if text.startswith("Object missing required field"):
        return Rejected(Reason.MISSING_FIELD, text)
    match = _PATH.search(text)
    field = match.group(1) if match and match.group(1) else ""
    if field in LEVEL_FIELDS:
        return Rejected(Reason.BAD_PRICE_LEVEL, text)
    if (">=" in text or "<=" in text) and field in ID_FIELDS:
        return Rejected(Reason.INVALID_IDS, text)
    return Rejected(Reason.MISTYPED_FIELD, text)


def rejecting_the_unparseable(decode):
    """Inputs that break a parser in ways msgspec does not report as DecodeError."""
    @functools.wraps(decode)
    def guarded(*args, **kwargs):
        try:
            return decode(*args, **kwargs)
        except RecursionError:
            raise Rejected(Reason.BAD_JSON, "JSON nested too deeply to parse") from None
        except UnicodeDecodeError as error:
            raise Rejected(Reason.INVALID_UTF8, str(error)) from None
    return guarded


def checked_ms(ms: int, what: str) -> int:
    """A time in ms since the epoch, or Rejected past the year 9999."""
    if not 0 <= ms <= LAST_MS:
        raise Rejected(Reason.MISTYPED_FIELD, f"{what} is outside 1970..9999")
    return ms
