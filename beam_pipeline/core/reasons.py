"""Every reason, class and kind the pipeline reports, named once.

StrEnums: each member is its string value (a member == "bad_json", f"{member}" == "bad_json"),
so the values written to dead_letter/, gaps/, corrupt_periods/, error_counts/ and summary.json are
the plain strings they always were.
"""
from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a record became a dead letter (DeadLetter.reason, summary.json's dead_letters)."""

    # read
    READ_ERROR = "read_error"                  # the file could not be read on (truncated gzip, ...)
    # decode: the record itself
    RECORD_TOO_LARGE = "record_too_large"
    INVALID_UTF8 = "invalid_utf8"
    BAD_JSON = "bad_json"
    BAD_FRAMING = "bad_framing"
    UNKNOWN_FORMAT = "unknown_format"
    MISSING_FIELD = "missing_field"
    MISTYPED_FIELD = "mistyped_field"
    BAD_PRICE_LEVEL = "bad_price_level"
    INVALID_IDS = "invalid_ids"
    MISSING_PREV_ID = "missing_prev_id"
    SYMBOL_MISMATCH = "symbol_mismatch"
    UNKNOWN_MARKET = "unknown_market"
    UNSUPPORTED_EXCHANGE = "unsupported_exchange"
    # sequence
    LATE_EVENT = "late_event"                  # would have filled a gap already declared
    STATE_RESET = "state_reset"                # held in stored state that cannot be read
    # any stage
    PROCESSING_ERROR = "processing_error"      # a bug or an unforeseen input: the trace is kept


class GapClass(StrEnum):
    """Gap.gap_class: how big a hole in the update ids is (summary.json's gaps)."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"
    RESET = "reset"                            # an id reset: the exchange's engine restarted


class GapAction(StrEnum):
    """Gap.action: what the sequencer does about a gap."""

    CONTINUE_WITH_WARNING = "continue_with_warning"
    HOLD_FOR_SNAPSHOT = "hold_for_snapshot"
    MARK_CORRUPT = "mark_corrupt"


class GapCause(StrEnum):
    """Gap.cause: what the gap is known to come from, where the pipeline knows (null otherwise)."""

    RESTART = "restart"            # the first break after a streaming job resumed from its cursor
    CONNECTION_BREAK = "connection_break"  # the connection that carried the key lost messages
                                   # (its own numbers broke: Bitfinex SEQ_ALL, Coinbase Advanced
                                   # Trade sequence_num): every key it carried gets this gap, from
                                   # its last message before the break to its first after it


class Resolution(StrEnum):
    """Gap.resolution: how the gap ended."""

    CONTINUED = "continued"
    RESYNCED = "resynced"
    CORRUPT_PERIOD = "corrupt_period"


class CorruptReason(StrEnum):
    """CorruptPeriod.reason: why a stretch of the book is in doubt."""

    LARGE_GAP = "large_gap"
    RECOVERY_TIMEOUT = "recovery_timeout"      # no snapshot within --recovery_timeout
    BUFFER_OVERFLOW = "buffer_overflow"        # more than --max_buffered_events held
    ID_RESET = "id_reset"                      # the wait belonged to an epoch that ended
    STATE_RESET = "state_reset"                # the key's stored state could not be read
    DISCONNECT = "disconnect"                  # the collector lost its connection and no snapshot
                                               # after it resynced the stream in time
    CONNECTION_BREAK = "connection_break"      # the connection's numbers broke and no snapshot
                                               # resynced the key in time
    # book integrity (core/books/): the rebuilt book is wrong from the failing message until the
    # next snapshot that resyncs it, or the end of the data
    CHECKSUM_MISMATCH = "checksum_mismatch"    # the venue's checksum disagrees with the rebuilt book
    CROSSED_BOOK = "crossed_book"              # best bid >= best ask after a complete message
    BAD_LEVEL = "bad_level"                    # a negative or non-numeric price or size
    UNKNOWN_LEVEL = "unknown_level"            # a delete of an absent level, where the venue says
                                               # it cannot happen
    SNAPSHOT_MISMATCH = "snapshot_mismatch"    # a snapshot inside a continuous segment disagrees
                                               # with the book rebuilt up to it (Binance drift)


class RecoveryReason(StrEnum):
    """RecoveryRequest.reason: why a snapshot is wanted."""

    MEDIUM_GAP = "medium_gap"
    ID_RESET = "id_reset"
    DISCONNECT = "disconnect"                  # the ids jumped across a collector's disconnection
    CONNECTION_BREAK = "connection_break"      # the connection that carries the key lost messages


class ErrorType(StrEnum):
    """ErrorEvent.error_type: what error_counts/ counts (besides dead_letter:<Reason>)."""

    GAP_SMALL = "gap_small"
    GAP_MEDIUM = "gap_medium"
    GAP_LARGE = "gap_large"
    GAP_RESET = "gap_reset"
    CORRUPT_PERIOD = "corrupt_period"
    STALL = "stall"
    STALL_RESOLVED = "stall_resolved"
    REORDER_OVERFLOW = "reorder_overflow"
    TIMER_ERROR = "timer_error"

    @classmethod
    def of_gap(cls, gap_class: GapClass) -> "ErrorType":
        return cls(f"gap_{gap_class}")

    @staticmethod
    def of_dead_letter(reason: str) -> str:
        return f"dead_letter:{reason}"


GAP_ERROR_TYPES = tuple(ErrorType.of_gap(c) for c in GapClass)


class Outcome(StrEnum):
    """What the state machine (core/sequencer.py) emits. The report outputs carry the names of the
    output tags they end up on (transforms/tags.py), so no mapping stands between the two."""

    CLEAN = "clean"
    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"
    LATE = "late"
    POISON = "poison"
    GAPS = "gaps"
    CORRUPT_PERIODS = "corrupt_periods"
    RECOVERY_REQUESTS = "recovery_requests"
    ERRORS = "errors"
    CONTROL = "control"                        # a control record (disconnect marker): counted only


class HoldReason(StrEnum):
    """Hold.reason: what a held stream waits for a snapshot after."""

    START = "start"                            # no snapshot seen yet
    GAP = "gap"                                # a medium gap
    RESET = "reset"                            # an id reset
    DISCONNECT = "disconnect"                  # a gap right after a collector's disconnection
    CONNECTION_BREAK = "connection_break"      # a break in the numbers of the key's connection


class Rejected(Exception):
    """A record that cannot be used: `reason` is a stable code, the message says what was wrong.

    What the record yielded before it was rejected travels along, so its dead letter carries it:
    `symbol` (exchange:market:symbol), `first_id` / `last_id` (its update ids) and `event_time`
    (ms: the exchange's time, else the receive time), each None when unknown."""

    def __init__(self, reason: Reason, message: str, *, symbol: str | None = None,
                 first_id: int | None = None, last_id: int | None = None,
                 event_time: int | None = None):
        super().__init__(message)
        self.reason = Reason(reason)
        self.message = message
        self.symbol, self.first_id, self.last_id = symbol, first_id, last_id
        self.event_time = event_time

    def known(self, **fields) -> "Rejected":
        """Fills in what is still unknown (None) from `fields`; returns self (for `raise`)."""
        for name, value in fields.items():
            if getattr(self, name) is None and value is not None:
                setattr(self, name, value)
        return self
