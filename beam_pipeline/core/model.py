"""The records that flow between stages: one normalized order-book event and the report rows.

msgspec Structs: compact, fast to build, picklable for Beam's default coder, and encodable to
MessagePack for the sorted runs the batch sequencer writes to its work folder.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Optional

import msgspec

from beam_pipeline.core.reasons import Reason
from beam_pipeline.core.runtime import now_ms

# A price level exactly as the exchange sent it: (price, quantity) decimal strings, never floats.
Level = tuple[str, str]

# An event's levels travel as one canonical JSON text, compact, [["price","qty"],...]: what Binance
# sends and what msgspec encodes. A validated array is kept as the bytes it arrived in, so no level
# becomes a Python object on the way through decode, spill files and replay; the clean table's
# level columns are built from these bytes in bulk (tables.levels_array).
_levels_decoder = msgspec.json.Decoder(list[Level])
_json_encode = msgspec.json.Encoder().encode


def encode_levels(levels) -> bytes:
    """A list of (price, qty) -> the canonical levels text."""
    return _json_encode(levels)


def decode_levels(text: bytes) -> list:
    """The canonical levels text -> [(price, qty), ...]."""
    return _levels_decoder.decode(text)

DELTA = "delta"
SNAPSHOT = "snapshot"
DISCONNECT = "disconnect"          # a collector's disconnect marker (core/markers.py): ids, no levels
CONNECTION_BREAK = "connection_break"  # a break in a connection's numbers (core/connections.py),
                                   # one marker per key the connection carried: its ids are the
                                   # connection's last number before the break; not an input record
CHECKSUM = "checksum"              # a venue's checksum sent as a message of its own (Bitfinex `cs`):
                                   # no levels, Event.checksum set; sequenced (ordered, deduplicated)
                                   # like a delta that changes nothing, so the book checks see it
                                   # after the deltas before it (core/books/watch.py)

# Continuity rules the sequencer knows (see ../shared/docs/exchange-sequencing.md), each named once.
# An adapter picks one per event (a venue's captures may differ: OKX before seqId has none).
RANGE_PLUS_ONE = "range_plus_one"  # a delta (first, last) continues cursor c when first <= c+1 <= last
                                   # (Binance spot, Gate.io, KuCoin; one id, first == last: Bybit v5
                                   # `u`, Kraken Futures `seq`)
PREVIOUS_LINK = "previous_link"    # a delta continues cursor c when its prev_id == c (Binance
                                   # usdm/coinm `pu`, OKX `prevSeqId`, Deribit `prev_change_id`, HTX
                                   # `prevSeqNum`)
CONNECTION_SEQUENCE = "connection_sequence"  # the venue numbers every message of a connection
                                   # (Bitfinex SEQ_ALL, Coinbase Advanced Trade `sequence_num`): the
                                   # ids order and deduplicate one key's events, but a key's ids are
                                   # not contiguous, so its continuity is not checked per key
NO_IDS = "none"                    # no ids at all (Kraken spot, Coinbase Pro level2, OKX before
                                   # seqId): ids are arrival ordinals (arrival_ordinal), nothing
                                   # is checked but order and duplicates
# Rules whose continuity the sequencer cannot check per key: such data is "unverified" (summary's
# unverified_records), never clean and green, until the book checks (checksums) exist.
UNVERIFIED_RULES = frozenset((CONNECTION_SEQUENCE, NO_IDS))
ORDINAL_LINES = 1_000_000          # arrival_ordinal: line numbers per receive millisecond
_TRAILING_DIGITS = re.compile(r"[0-9]+\Z")


def arrival_ordinal(recv_time: Optional[int], source: str) -> int:
    """The id of a message of a venue (or capture) without ids: the recorder's receive order.

    recv_time (ms) * ORDINAL_LINES + the record's line number (the digits that end its source,
    file:line; a Pub/Sub message id's) modulo ORDINAL_LINES: increasing in a file
    (its lines are in receive order), comparable across files of one recording by receive time, and
    the same for the same record read twice (a duplicate is a duplicate). Fits int64 until the year
    2262 (recv_time < 9.2e12 ms)."""
    digits = _TRAILING_DIGITS.search(source)
    number = int(digits.group()[-6:]) if digits else 0          # modulo ORDINAL_LINES (10**6)
    return (recv_time or 0) * ORDINAL_LINES + number


class Ignored(NamedTuple):
    """What a decoder returns for a record that is not order-book data, and why (the summary counts
    ignored records by reason per file). None means Ignored(OTHER_STREAM)."""

    reason: str                    # SUBSCRIPTION, HEARTBEAT, STATUS, OTHER_STREAM or a channel name


SUBSCRIPTION = "subscription"      # a subscription confirmation or error reply
HEARTBEAT = "heartbeat"            # a keep-alive (Bitfinex "hb", Kraken heartbeat, OKX idle update)
STATUS = "status"                  # a connection or system status / info event
OTHER_STREAM = "other_stream"      # another stream's message, the venue's channel not named


_REASON = re.compile(r"[A-Za-z0-9_.@:/-]{1,40}\Z")


def ignored_reason(result) -> str:
    """The reason of a decoder's ignored result (None or an Ignored); a channel name a message
    made up (not 1-40 plain characters) counts as OTHER_STREAM."""
    if result is None or not _REASON.match(result.reason):
        return OTHER_STREAM
    return result.reason


class Event(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One normalized order-book message: a delta or a snapshot of one (exchange, market, symbol)."""

    exchange: str
    market: str
    symbol: str
    kind: str                      # DELTA, SNAPSHOT, CHECKSUM, DISCONNECT (a marker: counted as
                                   # control) or CONNECTION_BREAK (a marker the reader made)
    first_id: int                  # deltas: first update id; snapshots: the id the book is at
    last_id: int                   # deltas: last update id; snapshots: the id the book is at
                                   # (one-id venues: first == last; NO_IDS: the arrival ordinal)
    prev_id: Optional[int]         # previous message's last id, where the exchange sends it
    event_time: Optional[int]      # exchange time, ms since epoch
    recv_time: Optional[int]       # collector receive time, ms since epoch
    bids: bytes                    # canonical levels text (encode_levels / decode_levels)
    asks: bytes
    rule: str                      # RANGE_PLUS_ONE, PREVIOUS_LINK, CONNECTION_SEQUENCE or NO_IDS
    source: str = ""               # where it came from (file:line or Pub/Sub message id)
    checksum: Optional[int] = None  # the venue's checksum of the book after this message (OKX,
                                   # Bitget v1, Kraken, Bitfinex `cs`), as the venue's int; None: not
                                   # sent (core/books/checksums.py)
    depth: Optional[int] = None    # the levels a side the venue keeps the book to, where the
                                   # message says (Kraken v1 `book-N`); None: every level

    @property
    def unverified(self) -> bool:
        """Continuity not checkable per key (UNVERIFIED_RULES): never reported clean and green."""
        return self.rule in UNVERIFIED_RULES

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.exchange, self.market, self.symbol)

    @property
    def time(self) -> int:
        """The event's own time: the exchange's where it has one, else the receive time."""
        return self.event_time if self.event_time is not None else (self.recv_time or 0)

    def sort_key(self):
        """The canonical order the sequencer processes a key's events in.

        By last id, a snapshot after the deltas it covers (u <= lastUpdateId) and before those it
        does not: exactly Binance's bridge. For venues without ids the ids are arrival ordinals
        (arrival_ordinal), so this is the recorder's receive order. Ties are broken by the content so that identical input
        in any order gives identical output.
        """
        return (self.last_id, 1 if self.kind == SNAPSHOT else 0, self.first_id,
                -1 if self.prev_id is None else self.prev_id, self.time, self.recv_time or 0,
                decode_levels(self.bids), decode_levels(self.asks))

    def to_json(self) -> bytes:
        """The event as a JSON object, its levels as JSON arrays (dead letters carry it)."""
        return _json_encode(msgspec.structs.replace(
            self, bids=_as_json(self.bids), asks=_as_json(self.asks)))


def _as_json(levels):
    return msgspec.Raw(levels) if isinstance(levels, bytes) else levels  # a poison event may hold anything


def _rank(event: Event) -> int:
    return event.last_id * 2 + (event.kind == SNAPSHOT)


def sort_canonically(events: list) -> list:
    """Sorts `events` by Event.sort_key, in place; the same order, at a fraction of the cost.

    Event.sort_key builds an 8-field tuple per event. Its first two fields (last id, snapshot
    last) decide almost every comparison, so sort by those as one int, then sort each run of equal
    ranks (duplicates, overlaps) by the full key. Both sorts are stable, so the result is exactly
    that of sorting by Event.sort_key (property test: tests/test_fast_paths.py)."""
    events.sort(key=_rank)
    ranks = list(map(_rank, events))
    start = 0
    for end in range(1, len(events) + 1):
        if end == len(events) or ranks[end] != ranks[start]:
            if end - start > 1:                                        # a tie: rare
                events[start:end] = sorted(events[start:end], key=Event.sort_key)
            start = end
    return events


class DeadLetter(msgspec.Struct, frozen=True):
    """A record that could not be used, with why and where it came from. Written as Avro."""

    reason: str                    # a Reason (core/reasons.py); build with dead_letter()
    message: str
    stage: str
    payload: bytes
    source: str
    ingest_time: int               # ms since epoch, when the pipeline saw it
    symbol: Optional[str] = None
    first_id: Optional[int] = None
    last_id: Optional[int] = None
    event_time: Optional[int] = None   # the record's own time (exchange's, else receive), when known

    @property
    def time(self) -> int:
        """The one time base of error counts: event time when known, else the ingest time."""
        return self.event_time if self.event_time is not None else self.ingest_time


def dead_letter(reason: Reason, message: str, stage: str, payload: bytes, source: str,
                ingest_time: Optional[int] = None, symbol: Optional[str] = None,
                first_id: Optional[int] = None, last_id: Optional[int] = None,
                event_time: Optional[int] = None) -> DeadLetter:
    """The one way a stage builds a dead letter: `reason` must be a Reason (stored as its plain
    string: Beam's coders pickle an enum); the ingest time is now unless the record brought its
    own."""
    return DeadLetter(Reason(reason).value, message, stage, payload, source,
                      now_ms() if ingest_time is None else ingest_time, symbol, first_id, last_id,
                      event_time)


def rejected_dead_letter(rejected, stage: str, payload: bytes, source: str,
                         ingest_time: Optional[int] = None) -> DeadLetter:
    """A dead letter for a Rejected record, with whatever the record yielded (symbol, ids, time)."""
    return dead_letter(rejected.reason, rejected.message, stage, payload, source, ingest_time,
                       rejected.symbol, _int_or_none(rejected.first_id),
                       _int_or_none(rejected.last_id), _time_or_none(rejected.event_time))


def event_dead_letter(reason: Reason, message: str, stage: str, event: "Event") -> DeadLetter:
    """A dead letter for a decoded event: it carries the event as JSON, its key and its ids (a
    poison event's ids may be anything: only ints are kept)."""
    return dead_letter(reason, message, stage, event.to_json(), event.source,
                       symbol=stream_name(event.key), first_id=_int_or_none(event.first_id),
                       last_id=_int_or_none(event.last_id), event_time=_event_time(event))


def _event_time(event) -> Optional[int]:
    """A (possibly poison) event's own time, exchange's else receive's; None when it has none."""
    for value in (event.event_time, event.recv_time):
        if _time_or_none(value) is not None:
            return value
    return None


_LONG_MIN, _LONG_MAX = -2**63, 2**63 - 1      # Avro long
_LAST_MS = 253402300799999                  # 9999-12-31T23:59:59.999Z: later times overflow


def _int_or_none(value):
    """An id a dead letter can carry: an int that fits Avro's long (a poison or rejected record's
    may be anything)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and _LONG_MIN <= value <= _LONG_MAX
    return value if ok else None


def _time_or_none(value):
    """A time (ms) a dead letter can carry and error counts can window: 0 .. year 9999."""
    value = _int_or_none(value)
    return value if value is not None and 0 <= value <= _LAST_MS else None


class Gap(msgspec.Struct, frozen=True):
    exchange: str
    market: str
    symbol: str
    last_good_id: Optional[int]
    next_first_id: int
    gap_size: Optional[int]        # None where the rule cannot measure it (previous_link)
    gap_class: str                 # GapClass: small | medium | large | reset (an id reset: engine restart)
    action: str                    # GapAction: continue_with_warning | hold_for_snapshot | mark_corrupt
    resolution: str                # Resolution: continued | resynced | corrupt_period
    event_time: int                # time of the event that revealed the gap
    cause: Optional[str] = None    # GapCause: restart (the job resumed at last_good_id),
                                   # connection_break (the connection's numbers broke), or None


class CorruptPeriod(msgspec.Struct, frozen=True):
    exchange: str
    market: str
    symbol: str
    start_id: int
    end_id: int
    start_time: Optional[int]
    end_time: int
    reason: str                    # a CorruptReason (core/reasons.py)
    detail: Optional[str] = None   # what the book checks found (core/books), e.g. the number of
                                   # differing levels of a snapshot_mismatch; None for the others


class RecoveryRequest(msgspec.Struct, frozen=True):
    exchange: str
    market: str
    symbol: str
    from_id: int
    reason: str
    event_time: int


class KeyStatus(msgspec.Struct, frozen=True):
    """Where one (exchange, market, symbol) stands (status/): its last accepted id and time, its
    current segment and whether it is anchored, the events it holds and why, and the gap it
    waits on (a hold: the ids it misses), as of a moment."""

    exchange: str
    market: str
    symbol: str
    as_of: int                     # ms: when this status was taken
    last_id: Optional[int]         # the cursor: the book is complete up to this update id
    last_event_time: Optional[int] # time of the last accepted event
    segment_id: Optional[int]      # the current continuous segment (its first id)
    anchored: bool                 # did it begin at a snapshot?
    held_events: int               # events held back, waiting (streaming: with the reorder buffer's)
    hold_reason: Optional[str]     # why: start (no snapshot yet), gap, reset, disconnect; reorder
                                   # (streaming: only events waiting for earlier ids)
    open_gap_last_good_id: Optional[int]
    open_gap_next_first_id: Optional[int]
    open_gap_size: Optional[int]
    disconnected: bool             # a disconnect marker came and nothing has continued since
    # --book_checks (core/books): cumulative counts of the key's checks (None: checks off) and
    # the corrupt period its book is in now, if any (opened, not yet ended by a snapshot)
    book_checked_messages: Optional[int] = None
    checksum_verified_messages: Optional[int] = None
    book_checks_failed: Optional[int] = None
    open_corrupt_reason: Optional[str] = None
    open_corrupt_start_id: Optional[int] = None
    open_corrupt_start_time: Optional[int] = None


class ErrorEvent(msgspec.Struct, frozen=True):
    """One error occurrence, counted per window by type and symbol."""

    error_type: str                # an ErrorType (core/reasons.py), or dead_letter:<Reason>
    symbol: str                    # exchange:market:symbol, or "-" when unknown
    event_time: int


def stream_name(key: tuple[str, str, str]) -> str:
    return ":".join(key)


UNKNOWN_PART = ("", "-", "?")        # how a stream name (or an adapter's) marks a part it lacks


def stream_key(name: Optional[str]) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """A stream name (exchange:market:symbol, as dead letters and error events carry it inside the
    pipeline) -> the (exchange, market, symbol) columns every output writes, spelled as in clean/;
    a part the record did not yield is None (so is all of it for None or "-")."""
    if not name or name in UNKNOWN_PART:
        return None, None, None
    parts: list[Optional[str]] = list(name.split(":", 2))
    parts += [None] * (3 - len(parts))
    if len(parts) == 3 and parts[1] is None:
        parts = [None, None, parts[0]]       # a bare symbol
    exchange, market, symbol = (None if part in UNKNOWN_PART else part for part in parts)
    return exchange, market, symbol


class EventBatch(msgspec.Struct):
    """The events decoded from one RawBatch: one element per batch keeps Beam's per-element costs
    off the hot path (its coder: transforms/coders.py)."""

    events: list[Event]
    publish_time: int = 0          # ms: the Pub/Sub publish time of the message they came in (0: files)
    columns: Optional[bytes] = None  # more events, as columns.EventColumns.to_bytes() (batch fast path)


class RawBatch(msgspec.Struct):
    """Consecutive records of one file (or one Pub/Sub message), before decoding."""

    source: str                    # file path, or pubsub:<message id>
    fmt: str                       # a framing's name (framings.names()), unknown, or message (Pub/Sub)
    exchange: Optional[str]        # from the file's context (a connect line), when known
    market: Optional[str]
    records: list[tuple[int, bytes]]   # (line number, or 0 for a single-record message; raw bytes)
    attributes: Optional[dict] = None  # Pub/Sub message attributes
    ingest_time: int = 0
    publish_time: int = 0          # ms: the Pub/Sub message's publish time (0: from a file)
    sources: Optional[list] = None # per record, when records of several messages share a batch
    symbol: Optional[str] = None   # the one symbol of a single-symbol file (hftbacktest)
    channels: Optional[dict[int, str]] = None  # channel id -> what the venue's subscribe reply
                                   # said it carries (FileContext.channels: Bitfinex)
    markers: Optional[list[Event]] = None  # CONNECTION_BREAK markers the reader made for breaks
                                   # its records revealed (core/connections.py): not records
    recv_slack_ms: int = 0         # a followed file (transforms/follow.py): the batch's records
                                   # count as published at their latest receive time plus this
                                   # (--quiet_seconds), publish_time (the read) when they have none


class RunRef(msgspec.Struct, frozen=True):
    """A chunk of one run of one key's events (ids run_index * run_span_ids and up), written to the
    work folder in arrival order (batch sequencing)."""

    run_index: int
    path: str
    count: int
    min_time: Optional[int] = None  # earliest Event.time in the chunk (epoch replay order; None: unknown)
    columnar: bool = False         # the chunk is columns.EventColumns.to_bytes(), else msgpack Events


