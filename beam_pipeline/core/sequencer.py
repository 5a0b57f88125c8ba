"""The per-symbol sequencing state machine, free of Beam.

It consumes one key's events in canonical order (Event.sort_key: by last id, a snapshot after the
deltas it covers; after an id reset, epochs in time order: beam_pipeline/core/epochs.py) and decides
for each: clean (with its segment), duplicate, superseded, or held while a gap waits for a
snapshot. Beam's stateful DoFn (transforms/sequence.py) only stores its state between elements
and turns its outputs into PCollections, as Beam Java's ordered-processing extension separates
its per-key processor from the user's handler. Unlike that extension, a wait here always ends:
by a resolving snapshot, by event time passing the recovery deadline, or by the bound on held
events.

Rules (exchange-agnostic, named once in core/model.py, picked per event by its adapter):
  range_plus_one  a delta (U, u) continues cursor c when U <= c+1 <= u; gap size U - c - 1
                  (one-id venues: U == u, so u == c+1)
  previous_link   a delta continues when pu == c (right after a snapshot L also U <= L <= u);
                  the gap size is unknowable, so such gaps are medium
  connection_sequence, none
                  the ids (a connection's message numbers, or arrival ordinals) order the key's
                  events and tell duplicates; every later delta continues: no gap is declared from
                  the key's own ids, and the data is reported unverified (model.UNVERIFIED_RULES);
                  a connection's break comes as a marker (Connection breaks, below)
A delta with u <= c is a duplicate, or superseded when a snapshot covered it.

Book checks (the next issue, core/books/): the place a per-message book update goes is the CLEAN
output, per key and in this order (a CLEAN value is (event, segment_id, anchored), or a
CleanStretch of plain continuing deltas); a segment starts at each anchoring snapshot. Keys whose
rule is unverified (model.UNVERIFIED_RULES) need it most: their continuity rests on the venue's
checksum, which the Event does not carry yet (OKX and Bitget `checksum`, Kraken `c`; Bitfinex's
`cs` messages are ignored as `checksum`).

Id resets (exchange engine restarts, beam_pipeline/core/epochs.py): an event whose ids are lower than
the cursor by more than reset_min_jump_ids while its time is not older than the last accepted delta's
(or a previous_link delta with pu == -1, what Binance USD-M sends after a restart) begins a new
epoch. It is a gap of class "reset" (gap_size None): the key holds the new epoch's deltas for a
snapshot as after a medium gap (a snapshot of the new epoch resyncs; none in time gives a corrupt
period and the held deltas are released unanchored). Messages of the old epoch that arrive after
the reset (streaming) are kept apart: while the reset waits they may still extend the old epoch
(a delta that continues it, a newer snapshot); later, or when they would leave a gap, they are
late_event, or duplicate / superseded when at or below its last good id.

Disconnect markers (core/markers.py: the collector lost its connection): counted as control
records. The next gap is explained by the disconnection: whatever its size it waits for a snapshot
(the collector fetches one after every reconnect) as a gap of its own class with action
hold_for_snapshot; resolved by a snapshot it is resynced, else a corrupt period of reason
disconnect. A snapshot that jumps the cursor forward after a marker reports the ids it skipped as
such a gap, resynced. A delta that continues the stream (a connection that bridged) ends it.

Connection breaks (core/connections.py: a venue numbering every message of a connection lost one
of them): each key the connection carried gets a CONNECTION_BREAK marker whose ids are the
connection's last number L before the break. Not an input record: nothing is emitted for it. The
key's first event after the break (last id > L) is a gap of cause connection_break from the key's
cursor to that event's first id, size unknown (medium): a snapshot resyncs it at once (reported
resynced), a delta waits for one (hold, recovery request of reason connection_break), else a
corrupt period of reason connection_break. Deciding by L rather than by the marker's place among
events with the same ids makes the marker's order against them irrelevant. A key that waits for a
snapshot already, or has no cursor yet, takes nothing from a break.
"""
from __future__ import annotations

import traceback
from collections import deque
from itertools import repeat
from operator import attrgetter
from typing import Iterable, Optional

import msgspec
import numpy as np

from beam_pipeline.core.columns import (PREVIOUS_LINK_CODE, RANGE_PLUS_ONE_CODE, RULE_CODES,
                                        CleanStretch, EventColumns)
from beam_pipeline.core.epochs import canonical_order
from beam_pipeline.core.model import (CONNECTION_BREAK, DELTA, DISCONNECT, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT,
                                      UNVERIFIED_RULES, KeyStatus,
                                      CorruptPeriod, ErrorEvent, Event, Gap, RecoveryRequest,
                                      stream_name)
from beam_pipeline.core.reasons import (CorruptReason, ErrorType, GapAction, GapCause, GapClass,
                                        HoldReason, Outcome, RecoveryReason, Resolution)

STATE_VERSION = 3   # 2: Event levels stored as text (were lists); 3: the streaming reorder buffer
                    # keeps each event's publish time
NEVER = 2**62  # a watermark past every event time: the end of a bounded input

# What the machine emits (core/reasons.py): the report outputs carry their output tag's name.
CLEAN, DUPLICATE, SUPERSEDED, LATE, POISON = (Outcome.CLEAN, Outcome.DUPLICATE, Outcome.SUPERSEDED,
                                              Outcome.LATE, Outcome.POISON)
CONTROL = Outcome.CONTROL
GAP, CORRUPT, RECOVERY, ERROR = (Outcome.GAPS, Outcome.CORRUPT_PERIODS, Outcome.RECOVERY_REQUESTS,
                                 Outcome.ERRORS)
RESTART_PREV_ID = -1  # the previous-link id an exchange sends on the first message after a restart


class Policy(msgspec.Struct, frozen=True):
    """The gap policy. No defaults here: they live in beam_pipeline/options.py (tests take them from
    FeedCheckOptions.defaults())."""

    small_gap_max: int
    medium_gap_max: int
    recovery_timeout_ms: int
    max_buffered_events: int
    reset_min_jump_ids: int        # ids this far below the cursor (or more) may be an id reset

    @classmethod
    def from_options(cls, options) -> "Policy":
        return cls(options.small_gap_max, options.medium_gap_max,
                   int(round(options.recovery_timeout * 1000)), options.max_buffered_events,
                   options.reset_min_jump_ids)

    def classify(self, gap_size: Optional[int]) -> GapClass:
        if gap_size is None or self.small_gap_max < gap_size <= self.medium_gap_max:
            return GapClass.MEDIUM
        return GapClass.SMALL if gap_size <= self.small_gap_max else GapClass.LARGE


class Hold(msgspec.Struct):
    """Deltas held back while the stream waits for a snapshot (at its start, after a medium gap, or
    after an id reset)."""

    reason: HoldReason
    last_good_id: Optional[int]
    last_good_time: Optional[int]
    next_first_id: int
    gap_size: Optional[int]
    reveal_time: int
    deadline: int
    held_count: int = 0
    held_max: tuple = (-1, -1, -1)  # rank of the latest held event, to notice out-of-order arrivals
    held_max_time: Optional[int] = None  # its time (a later reset is told from a stale event by time)


class SequencerState(msgspec.Struct):
    """Everything the machine keeps between elements; small, versioned, stored in one ValueState."""

    version: int = STATE_VERSION
    cursor: Optional[int] = None           # last update id the book is known to be complete up to
    segment_id: Optional[int] = None       # id where the current continuous segment begins
    anchored: bool = False                 # did the segment begin at a snapshot?
    bridging: bool = False                 # the last accepted event was a snapshot
    snapshot_floor: Optional[int] = None   # lastUpdateId of the newest accepted snapshot
    last_time: Optional[int] = None        # time of the last accepted event
    last_snapshot_id: Optional[int] = None # lastUpdateId when the last accepted event was a snapshot
    hold: Optional[Hold] = None
    declared_gaps: list = []               # recent (from_id, to_id) holes, to tell late fills from duplicates
    announced_from: Optional[int] = None   # from_id of the last medium gap announced (no repeats on replay)
    seen: bool = False                     # has this key produced anything yet?
    # Id resets (added without a version bump: state written before them decodes with these defaults)
    last_delta_time: Optional[int] = None  # time of the last accepted delta
    announced_reset: Optional[int] = None  # cursor a reset was announced from (no repeats on replay)
    prior_epoch_id: Optional[int] = None   # last good id of the epoch before the latest reset
    epoch_time: Optional[int] = None       # time the latest reset was revealed
    # Disconnect markers (also without a version bump: the default is what older state meant)
    disconnected: bool = False             # a marker came and nothing has continued the stream since
    # Restarts (likewise): the cursor a restarted streaming job resumed this key at, until it moves
    resumed_at: Optional[int] = None
    # Connection breaks (likewise): the connection's last number before a break this key has not
    # passed yet (the earliest, when several came before the key's next event)
    connection_break: Optional[int] = None


def resumed(saved: "SequencerState") -> "SequencerState":
    """The state a restarted streaming job gives a key from the cursor its last stop saved: the same
    cursor, segment and anchoring, so events that continue it are clean in that segment and only a
    real break is a gap (marked GapCause.RESTART). Nothing is held at a stop (its end closed every
    wait), and the key counts as new in this run's summary."""
    return msgspec.structs.replace(saved, hold=None, seen=False, disconnected=False,
                                   connection_break=None,
                                   declared_gaps=[], announced_from=None, announced_reset=None,
                                   resumed_at=saved.cursor)


_AFTER_CURSOR = (HoldReason.GAP, HoldReason.DISCONNECT,    # holds that wait after an accepted cursor
                 HoldReason.CONNECTION_BREAK)


def _gap_class_of(hold: Hold, policy: Policy) -> GapClass:
    if hold.reason == HoldReason.DISCONNECT:
        return policy.classify(hold.gap_size)
    return GapClass.RESET if hold.reason == HoldReason.RESET else GapClass.MEDIUM


def _cause_of(hold: Hold) -> Optional[GapCause]:
    return GapCause.CONNECTION_BREAK if hold.reason == HoldReason.CONNECTION_BREAK else None


def _rank(event: Event) -> tuple:
    return (event.last_id, 1 if event.kind == SNAPSHOT else 0, event.first_id)


_FIRST_ID, _LAST_ID, _PREV_ID, _KIND, _RULE = map(attrgetter, ("first_id", "last_id", "prev_id",
                                                            "kind", "rule"))


def continuing_stretches(events: list) -> list:
    """Per index i: the end of the stretch of events from i on that each continue the event before
    them (a delta, last id above the previous event's, linked by its rule without a snapshot's
    bridge); i itself when events[i] does not. Index 0 continues nothing (no event before it)."""
    n = len(events)
    if n < 2:
        return list(range(n))
    try:
        first = np.fromiter(map(_FIRST_ID, events), np.int64, n)
        last = np.fromiter(map(_LAST_ID, events), np.int64, n)
        prev = np.fromiter((-2 if p is None else p for p in map(_PREV_ID, events)), np.int64, n)
        delta = np.fromiter((kind == DELTA for kind in map(_KIND, events)), np.bool_, n)
        rule = np.fromiter(map(RULE_CODES.get, map(_RULE, events), repeat(0)), np.int8, n)
    except (TypeError, ValueError, OverflowError):     # a poison event: the machine handles it
        return list(range(n))
    return _stretch_ends(first, last, prev, delta, rule).tolist()


def column_stretches(columns: EventColumns) -> np.ndarray:
    """continuing_stretches of the rows of `columns` (all deltas)."""
    n = len(columns)
    if n < 2:
        return np.arange(n)
    return _stretch_ends(columns.array("first_id"), columns.array("last_id"),
                         columns.filled("prev_id", -2), np.ones(n, np.bool_),
                         columns.array("rule"))


def _stretch_ends(first, last, prev, delta, rule) -> np.ndarray:
    n = len(first)
    cursor = last[:-1]              # the cursor each event meets if all before it were accepted
    # range_plus_one U <= c+1 <= u written as U - 1 <= c < u (no int64 overflow at c = 2**63-1)
    linked = np.where(rule[1:] == PREVIOUS_LINK_CODE, (prev[1:] == cursor) & (prev[1:] != -2),
                      (rule[1:] == RANGE_PLUS_ONE_CODE) & (first[1:] - 1 <= cursor))
    ok = delta[1:] & (last[1:] > cursor) & linked
    ok = np.concatenate(([False], ok))
    # end of the stretch starting at i: the first index >= i that does not continue
    breaks = np.flatnonzero(~ok)
    return np.append(breaks, n)[np.searchsorted(breaks, np.arange(n), side="left")]


class StreamSequencer:
    """Sequences one key. `held` stores held deltas: a list, or a Beam BagState adapter."""

    RECENT_GAPS = 16

    def __init__(self, key: tuple, policy: Policy, state: Optional[SequencerState] = None,
                 held=None):
        self.key = key
        self.symbol = stream_name(key)
        self.policy = policy
        self.state = state or SequencerState()
        self.held = held if held is not None else ListStore()
        self.out: list = []
        self._queue: deque = deque()
        self._jump = policy.reset_min_jump_ids   # ids further below the cursor may be an id reset

    # ---- public API -------------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        self._queue.append(event)
        self._drain()

    def _drain(self) -> None:
        """Step through the queue. An event that raises is set aside as poison (with its stack
        trace) and the rest of the queue goes on: one bad event never takes others with it."""
        while self._queue:
            event = self._queue.popleft()
            try:
                self._step(event)
            except Exception:
                self._emit(POISON, (event, traceback.format_exc()))

    def feed_all(self, events: Iterable[Event]) -> None:
        """feed() each event, in order; stretches of plain continuing deltas are accepted in bulk.

        `continuing_stretches` finds, for the whole list at once, which events are deltas that
        continue the event before them by their rule (numpy over the ids). Where the machine's
        state is plain (no hold, no older epoch, cursor = the previous event's last id), such a
        stretch is exactly a run of _accept_delta calls, and is taken as one; every other event
        goes through the machine, which stays the reference (property test:
        tests/unit/test_sequencer_fast.py)."""
        if isinstance(events, EventColumns):
            self._feed_columns(events)
            return
        events = events if isinstance(events, list) else list(events)
        ends = continuing_stretches(events)
        i, n = 0, len(events)
        while i < n:
            end = ends[i]
            if end > i and self._continues_plainly(events[i - 1].last_id):
                self._accept_stretch(events, i, end)
                i = end
            else:
                self.feed(events[i])
                i += 1

    def _feed_columns(self, columns: EventColumns) -> None:
        """feed_all over columns: a plain stretch is accepted as one CleanStretch output (no Event
        built); the rows between stretches are built as Events, a block at a time, and fed."""
        ends = column_stretches(columns)
        n = len(columns)
        starts = np.flatnonzero(ends > np.arange(n))        # rows that continue the row before
        last = columns.array("last_id")
        i = 0
        while i < n:
            end = int(ends[i])
            if end > i and self._continues_plainly(int(last[i - 1])):
                self._accept_column_stretch(columns, i, end)
                i = end
                continue
            later = starts[np.searchsorted(starts, i, side="right"):][:1]   # the next stretch
            stop = int(later[0]) if len(later) else n
            for event in columns.events(i, stop):
                self.feed(event)
            i = stop

    def _continues_plainly(self, previous_last_id: int) -> bool:
        st = self.state
        return (st.hold is None and st.prior_epoch_id is None and st.seen and not self._queue
                and st.connection_break is None
                and self._jump >= 0 and st.cursor is not None and st.cursor == previous_last_id)

    def _accept_column_stretch(self, columns: EventColumns, start: int, end: int) -> None:
        """_accept_stretch for rows start..end of columns: one output for all of them."""
        st = self.state
        st.cursor, st.bridging, st.last_snapshot_id = int(columns.array("last_id")[end - 1]), False, None
        st.last_time = st.last_delta_time = int(columns.times()[end - 1])
        st.disconnected = False
        self.out.append((CLEAN, CleanStretch(columns[start:end], st.segment_id, st.anchored)))

    def _accept_stretch(self, events: list, start: int, end: int) -> None:
        """_accept_delta for events[start:end], each continuing the one before (checked)."""
        st = self.state
        last = events[end - 1]
        st.cursor, st.bridging, st.last_snapshot_id = last.last_id, False, None
        st.last_time = st.last_delta_time = last.time
        st.disconnected = False
        segment, anchored = st.segment_id, st.anchored
        self.out.extend([(CLEAN, (event, segment, anchored)) for event in events[start:end]])

    def advance_watermark(self, time_ms: int) -> None:
        """Event time has passed `time_ms`: a hold whose deadline is earlier gives up."""
        while self.state.hold is not None and time_ms > self.state.hold.deadline:
            self._give_up(CorruptReason.RECOVERY_TIMEOUT)
            self._drain()

    def finish(self) -> None:
        """A bounded input has ended: no snapshot can come any more."""
        self.advance_watermark(NEVER)

    def is_next(self, event: Event) -> bool:
        """Would `event` be processed without revealing a gap? (The streaming reorder buffer asks.)"""
        st = self.state
        if event.kind in (DISCONNECT, CONNECTION_BREAK):
            return True
        if st.hold is not None or st.cursor is None or self._from_older_epoch(event):
            return True
        if self._after_break(event):
            return False    # revealed like a gap
        if self._is_reset(event, st.cursor, self._reference_time()):
            return False    # revealed like a gap: stragglers of the old epoch may still come first
        if event.kind == SNAPSHOT:
            return event.last_id <= st.cursor
        return event.last_id <= st.cursor or self._continues(event)

    def deadline(self) -> Optional[int]:
        return self.state.hold.deadline if self.state.hold is not None else None

    def status(self, as_of: int) -> "KeyStatus":
        """Where the key stands now (status/), from its state."""
        st, hold = self.state, self.state.hold
        exchange, market, symbol = self.key
        return KeyStatus(exchange, market, symbol, as_of, st.cursor, st.last_time, st.segment_id,
                         bool(st.anchored and st.segment_id is not None),
                         hold.held_count if hold else 0, str(hold.reason) if hold else None,
                         hold.last_good_id if hold else None, hold.next_first_id if hold else None,
                         hold.gap_size if hold else None, bool(st.disconnected))

    def take_output(self) -> list:
        out, self.out = self.out, []
        return out

    # ---- one event --------------------------------------------------------------------------

    def _step(self, event: Event) -> None:
        st = self.state
        if event.kind == CONNECTION_BREAK:
            self._on_connection_break(event)
            return
        if st.connection_break is not None and event.last_id > st.connection_break:
            if self._after_break(event):
                st.seen = True
                self._gap_after_break(event)
                return
            st.connection_break = None
        if not st.seen:
            st.seen = True
        if event.kind == DISCONNECT:
            self._on_disconnect(event)
        elif st.hold is not None:
            self._step_holding(event)
        elif st.cursor is None:
            self._step_start(event)
        elif st.prior_epoch_id is not None and self._from_older_epoch(event):
            self._step_older_epoch(event)
        elif (event.last_id + self._jump < st.cursor
              and self._is_reset(event, st.cursor, self._reference_time())):
            self._on_reset(event)
        elif event.kind == SNAPSHOT:
            self._step_snapshot(event)
        else:
            self._step_delta(event)

    def _step_start(self, event: Event) -> None:
        if event.kind == SNAPSHOT:
            self._accept_snapshot(event)
            return
        # Binance's procedure: buffer deltas until a snapshot, drop those it covers, bridge.
        self._start_hold(HoldReason.START, event, gap_size=None)

    def _on_disconnect(self, marker: Event) -> None:
        """A collector's disconnect marker: counted; the next gap is the disconnection's."""
        self._emit(CONTROL, marker)
        if self.state.cursor is not None:
            self.state.disconnected = True

    def _on_connection_break(self, marker: Event) -> None:
        """The key's connection lost messages after its number marker.last_id: the key's first
        event past it reveals the gap (not an input record: no output of its own)."""
        st = self.state
        if st.cursor is not None and marker.last_id < st.cursor:
            return          # the key is past it already (a marker later than the reorder buffer)
        if st.connection_break is None or marker.last_id < st.connection_break:
            st.connection_break = marker.last_id

    def _after_break(self, event: Event) -> bool:
        """Is `event` the key's first past a connection break, with a cursor the break cut off?"""
        st = self.state
        return (st.connection_break is not None and event.last_id > st.connection_break
                and st.cursor is not None and st.hold is None and st.prior_epoch_id is None
                and event.last_id > st.cursor)

    def _gap_after_break(self, event: Event) -> None:
        """The gap a connection break left before `event`: size unknown (medium). A snapshot
        resyncs at once; a delta waits for one."""
        st = self.state
        st.connection_break = None
        self._error(ErrorType.GAP_MEDIUM, event.time)
        if event.kind == SNAPSHOT:
            self._remember_gap(st.cursor + 1, event.last_id)
            self._emit_gap(st.cursor, event.first_id, None, GapClass.MEDIUM,
                           GapAction.HOLD_FOR_SNAPSHOT, Resolution.RESYNCED, event.time,
                           GapCause.CONNECTION_BREAK)
            self._accept_snapshot(event)
            return
        self._remember_gap(st.cursor + 1, event.first_id - 1)
        self._emit(RECOVERY, RecoveryRequest(*self.key, from_id=st.cursor + 1,
                                             reason=RecoveryReason.CONNECTION_BREAK,
                                             event_time=event.time))
        st.announced_from = st.cursor + 1
        self._start_hold(HoldReason.CONNECTION_BREAK, event, None)

    def _step_snapshot(self, event: Event) -> None:
        st = self.state
        if event.last_id < st.cursor:
            self._emit(SUPERSEDED, event)        # older than what the deltas already gave us
        elif event.last_id == st.cursor and st.last_snapshot_id == event.last_id:
            self._emit(DUPLICATE, event)
        else:
            if st.disconnected and event.last_id > st.cursor:
                self._report_skipped_by_snapshot(event)
            self._accept_snapshot(event)

    def _report_skipped_by_snapshot(self, snapshot: Event) -> None:
        """After a disconnection the snapshot jumps over ids no delta brought: a gap, resynced."""
        st = self.state
        size = snapshot.last_id - st.cursor if snapshot.rule == RANGE_PLUS_ONE else None
        gap_class = self.policy.classify(size)
        self._error(ErrorType.of_gap(gap_class), snapshot.time)
        self._remember_gap(st.cursor + 1, snapshot.last_id)
        # the next id: range-plus-one the first the snapshot did not cover; previous-link ids are
        # not consecutive, so the venue's own id the stream resumed at, the snapshot's
        next_id = snapshot.last_id + 1 if snapshot.rule == RANGE_PLUS_ONE else snapshot.last_id
        self._emit_gap(st.cursor, next_id, size, gap_class,
                       GapAction.HOLD_FOR_SNAPSHOT, Resolution.RESYNCED, snapshot.time)

    def _step_delta(self, event: Event) -> None:
        st = self.state
        if event.last_id <= st.cursor:
            self._emit(self._stale_outcome(event), event)
        elif self._continues(event):
            self._accept_delta(event)
        else:
            self._on_gap(event)

    def _step_holding(self, event: Event) -> None:
        st, hold = self.state, self.state.hold
        if event.time > hold.deadline:
            self._queue.appendleft(event)        # it follows the released deltas
            self._give_up(CorruptReason.RECOVERY_TIMEOUT)
        elif hold.reason == HoldReason.RESET and self._older_than_hold(event):
            self._step_older_in_hold(event)
        elif hold.reason != HoldReason.RESET and self._from_older_epoch(event):
            self._step_older_epoch(event)
        elif self._is_reset(event, st.cursor if hold.reason in _AFTER_CURSOR else hold.held_max[0],
                            hold.held_max_time):
            self._queue.appendleft(event)        # the wait belongs to an epoch that has ended
            self._give_up(CorruptReason.ID_RESET)
        elif _rank(event) < tuple(hold.held_max):
            self._rewind(event)              # arrived after later ones: replay the hold in order
        elif event.kind == SNAPSHOT:
            self._resolve(event)
        elif hold.reason != HoldReason.RESET and st.cursor is not None and event.last_id <= st.cursor:
            self._emit(self._stale_outcome(event), event)
        elif event.last_id == hold.held_max[0]:
            self._emit(DUPLICATE, event)
        elif hold.held_count >= self.policy.max_buffered_events:
            self._queue.appendleft(event)
            self._give_up(CorruptReason.BUFFER_OVERFLOW)
        else:
            self._hold(event)

    # ---- rules ------------------------------------------------------------------------------

    def _continues(self, event: Event) -> bool:
        c = self.state.cursor
        if event.rule == PREVIOUS_LINK:
            bridged = self.state.bridging and event.first_id <= c <= event.last_id
            return event.prev_id == c or bridged
        if event.rule == RANGE_PLUS_ONE:
            return event.first_id <= c + 1 <= event.last_id
        if event.rule in UNVERIFIED_RULES:
            return True                      # ordered and deduplicated, continuity unknown
        raise ValueError(f"the sequencer has no continuity rule {event.rule!r}")

    def _gap_size(self, event: Event) -> Optional[int]:
        if event.rule != RANGE_PLUS_ONE:
            return None
        return event.first_id - self.state.cursor - 1

    # ---- id resets (epochs) ---------------------------------------------------------------------

    def _reference_time(self) -> Optional[int]:
        """The time a reset must not be older than: the last accepted delta's (a snapshot's time is
        often a receive time, later than the deltas after it), else the last accepted event's."""
        st = self.state
        return st.last_delta_time if st.last_delta_time is not None else st.last_time

    def _is_reset(self, event: Event, ref_id: Optional[int], ref_time: Optional[int]) -> bool:
        """Do `event`'s ids restart far below `ref_id` (an engine restart, not a stale message)?"""
        if ref_id is None or event.last_id + self.policy.reset_min_jump_ids >= ref_id:
            return False
        if (event.kind != SNAPSHOT and event.rule == PREVIOUS_LINK
                and event.prev_id == RESTART_PREV_ID):
            return True
        return ref_time is not None and event.time >= ref_time

    def _from_older_epoch(self, event: Event) -> bool:
        """After a reset: is `event` a late message of an epoch before the current one (ids far
        above the cursor, and sent before the reset or near the old epoch's ids)?"""
        st, jump = self.state, self.policy.reset_min_jump_ids
        return (st.prior_epoch_id is not None and st.cursor is not None
                and event.first_id - st.cursor > jump
                and (event.time < st.epoch_time or event.last_id + jump >= st.prior_epoch_id))

    def _older_than_hold(self, event: Event) -> bool:
        """While a reset waits: is `event` of the old epoch rather than of the held new one?"""
        hold, jump = self.state.hold, self.policy.reset_min_jump_ids
        return (event.first_id - hold.held_max[0] > jump
                and (event.time < hold.reveal_time or event.last_id + jump >= hold.last_good_id))

    def _on_reset(self, event: Event) -> None:
        """The ids restarted: report the reset and wait for a snapshot of the new epoch (the
        event is that snapshot: the new epoch is anchored at once)."""
        st = self.state
        old = st.cursor
        replayed = st.announced_reset == old     # a hold replayed in order (see _rewind)
        if not replayed:
            self._error(ErrorType.GAP_RESET, event.time)
        st.announced_reset, st.prior_epoch_id, st.epoch_time = old, old, event.time
        if event.kind == SNAPSHOT:
            self._emit_gap(old, event.first_id, None, GapClass.RESET, GapAction.HOLD_FOR_SNAPSHOT,
                           Resolution.RESYNCED, event.time)
            self._leave_old_epoch()
            self._accept_snapshot(event)
            return
        if not replayed:
            self._emit(RECOVERY, RecoveryRequest(*self.key, from_id=event.first_id,
                                                 reason=RecoveryReason.ID_RESET,
                                                 event_time=event.time))
        self._start_hold(HoldReason.RESET, event, None, last_good_time=self._reference_time())

    def _leave_old_epoch(self) -> None:
        """The new epoch begins: the old one's snapshot and holes say nothing about its ids."""
        self.state.snapshot_floor, self.state.declared_gaps = None, []

    def _step_older_in_hold(self, event: Event) -> None:
        """A message of the old epoch while the reset waits. Canonical order would have given it
        before the reset, so it may still extend the old epoch (the reset then leaves from there);
        one that would leave a gap in an epoch already over is late."""
        st, hold = self.state, self.state.hold
        if event.last_id <= st.cursor:
            self._emit(self._stale_outcome(event), event)
            return
        if event.kind == SNAPSHOT:
            self._accept_snapshot(event)
        elif self._continues(event):
            self._accept_delta(event)
        else:
            self._emit(LATE, event)
            return
        hold.last_good_id, hold.last_good_time = st.cursor, self._reference_time()
        st.announced_reset = st.prior_epoch_id = st.cursor

    def _step_older_epoch(self, event: Event) -> None:
        """A message of an earlier epoch after the reset's wait ended (streaming, past the reorder
        buffer): at or below that epoch's last good id it is stale, above it late."""
        if event.last_id > self.state.prior_epoch_id:
            self._emit(LATE, event)
        elif event.kind == SNAPSHOT:
            self._emit(SUPERSEDED, event)
        else:
            self._emit(self._stale_outcome(event), event)

    def _stale_outcome(self, event: Event) -> str:
        st = self.state
        for low, high in st.declared_gaps:
            if low <= event.first_id and event.last_id <= high:
                return LATE                   # it would have filled a hole already declared
        if st.snapshot_floor is not None and event.last_id <= st.snapshot_floor:
            return SUPERSEDED
        return DUPLICATE

    # ---- accepting --------------------------------------------------------------------------

    def _accept_delta(self, event: Event) -> None:
        st = self.state
        if st.resumed_at is not None and st.hold is None:
            st.resumed_at = None                 # the stream moved on from where the job resumed
        st.cursor, st.bridging, st.last_snapshot_id = event.last_id, False, None
        st.last_time = st.last_delta_time = event.time
        st.disconnected = False
        self._emit(CLEAN, (event, st.segment_id, st.anchored))

    def _accept_snapshot(self, event: Event) -> None:
        st = self.state
        if st.resumed_at is not None and st.hold is None and event.last_id != st.resumed_at:
            st.resumed_at = None
        if not (st.anchored and st.cursor == event.last_id):
            st.segment_id, st.anchored = event.last_id, True    # a resync starts a new segment
        st.cursor, st.bridging, st.snapshot_floor = event.last_id, True, event.last_id
        st.last_snapshot_id, st.last_time = event.last_id, event.time
        st.disconnected = False
        self._emit(CLEAN, (event, st.segment_id, st.anchored))

    def _start_unanchored_segment(self, event: Event) -> None:
        st = self.state
        st.segment_id, st.anchored = event.first_id, False
        self._accept_delta(event)

    # ---- gaps -------------------------------------------------------------------------------

    def _on_gap(self, event: Event) -> None:
        st = self.state
        size = self._gap_size(event)
        gap_class = self.policy.classify(size)
        held = gap_class == GapClass.MEDIUM or st.disconnected
        replayed = held and st.announced_from == st.cursor + 1
        if not replayed:
            self._error(ErrorType.of_gap(gap_class), event.time)
        self._remember_gap(st.cursor + 1, event.first_id - 1)
        if st.disconnected:      # the collector fetches a snapshot after every reconnect: wait for it
            if not replayed:
                self._emit(RECOVERY, RecoveryRequest(*self.key, from_id=st.cursor + 1,
                                                     reason=RecoveryReason.DISCONNECT,
                                                     event_time=event.time))
                st.announced_from = st.cursor + 1
            self._start_hold(HoldReason.DISCONNECT, event, size)
        elif gap_class == GapClass.SMALL:
            self._emit_gap(st.cursor, event.first_id, size, gap_class, GapAction.CONTINUE_WITH_WARNING,
                           Resolution.CONTINUED, event.time)
            self._start_unanchored_segment(event)
        elif gap_class == GapClass.LARGE:
            self._emit_gap(st.cursor, event.first_id, size, gap_class, GapAction.MARK_CORRUPT,
                           Resolution.CORRUPT_PERIOD, event.time)
            self._emit_corrupt(st.cursor + 1, event.first_id - 1, st.last_time, event.time,
                               CorruptReason.LARGE_GAP)
            self._start_unanchored_segment(event)
        else:
            if not replayed:     # a hold replayed in order (see _rewind) asks only once
                self._emit(RECOVERY, RecoveryRequest(*self.key, from_id=st.cursor + 1,
                                                     reason=RecoveryReason.MEDIUM_GAP,
                                                     event_time=event.time))
                st.announced_from = st.cursor + 1
            self._start_hold(HoldReason.GAP, event, size)

    def _start_hold(self, reason: HoldReason, event: Event, gap_size: Optional[int],
                    last_good_time: Optional[int] = None) -> None:
        st = self.state
        st.hold = Hold(reason, st.cursor, st.last_time if last_good_time is None else last_good_time,
                       event.first_id, gap_size, event.time,
                       event.time + self.policy.recovery_timeout_ms)
        self._hold(event)

    def _hold(self, event: Event) -> None:
        hold = self.state.hold
        self.held.add(event)
        hold.held_count += 1
        hold.held_max = _rank(event)
        hold.held_max_time = event.time

    def _take_held(self) -> list:
        held = canonical_order(self.held.read(), self.policy.reset_min_jump_ids)
        self.held.clear()
        return held

    def _resolve(self, snapshot: Event) -> None:
        """A snapshot arrived in time: held deltas it covers are superseded, the rest follow it."""
        hold = self.state.hold
        held = self._take_held()
        self.state.hold = None
        if hold.reason != HoldReason.START:
            self._emit_gap(hold.last_good_id, hold.next_first_id, hold.gap_size,
                           _gap_class_of(hold, self.policy), GapAction.HOLD_FOR_SNAPSHOT, Resolution.RESYNCED,
                           hold.reveal_time, _cause_of(hold))
        if hold.reason == HoldReason.RESET:
            self._leave_old_epoch()
        covered = [e for e in held if e.last_id <= snapshot.last_id]
        for event in covered:
            self._emit(SUPERSEDED, event)
        self._accept_snapshot(snapshot)
        self._queue.extendleft(reversed(held[len(covered):]))

    def _give_up(self, reason: CorruptReason) -> None:
        """No snapshot in time (or too much held): mark the hole corrupt and release the deltas."""
        st, hold = self.state, self.state.hold
        held = self._take_held()
        st.hold = None
        if hold.reason == HoldReason.DISCONNECT and reason == CorruptReason.RECOVERY_TIMEOUT:
            reason = CorruptReason.DISCONNECT    # the snapshot after the reconnect never came
        if hold.reason == HoldReason.CONNECTION_BREAK and reason == CorruptReason.RECOVERY_TIMEOUT:
            reason = CorruptReason.CONNECTION_BREAK
        if hold.reason != HoldReason.START:
            # for a reset the two ids are in different numberings: start_id (the old epoch's first
            # id not seen) > end_id (the new epoch's last id not seen); the times order the period
            self._emit_gap(hold.last_good_id, hold.next_first_id, hold.gap_size,
                           _gap_class_of(hold, self.policy), GapAction.HOLD_FOR_SNAPSHOT,
                           Resolution.CORRUPT_PERIOD, hold.reveal_time, _cause_of(hold))
            self._emit_corrupt(hold.last_good_id + 1, hold.next_first_id - 1, hold.last_good_time,
                               hold.reveal_time, reason)
        if hold.reason == HoldReason.RESET:
            self._leave_old_epoch()
        self._start_unanchored_segment(held[0])
        self._queue.extendleft(reversed(held[1:]))

    def _rewind(self, event: Event) -> None:
        """An event older than held ones: forget the hold and replay everything in order."""
        held = self._take_held()
        self.state.hold = None
        self._queue.extendleft(reversed(canonical_order(held + [event],
                                                        self.policy.reset_min_jump_ids)))

    # ---- outputs ----------------------------------------------------------------------------

    def _remember_gap(self, low: int, high: int) -> None:
        gaps = self.state.declared_gaps
        if (low, high) in gaps or [low, high] in gaps:
            return
        gaps.append((low, high))
        del gaps[:-self.RECENT_GAPS]

    def _emit(self, tag: Outcome, value) -> None:
        self.out.append((tag, value))

    def _error(self, error_type: ErrorType, time_ms: int) -> None:
        self._emit(ERROR, ErrorEvent(error_type, self.symbol, time_ms))

    def _emit_gap(self, last_good, next_first_id, size, gap_class, action, resolution,
                  time_ms, cause: Optional[GapCause] = None) -> None:
        resumed_at = self.state.resumed_at
        if cause is None and resumed_at is not None and last_good == resumed_at:
            cause = GapCause.RESTART
        self._emit(GAP, Gap(*self.key, last_good_id=last_good, next_first_id=next_first_id,
                            gap_size=size, gap_class=gap_class, action=action,
                            resolution=resolution, event_time=time_ms, cause=cause))

    def _emit_corrupt(self, start_id, end_id, start_time, end_time, reason) -> None:
        self._error(ErrorType.CORRUPT_PERIOD, end_time)
        self._emit(CORRUPT, CorruptPeriod(*self.key, start_id=start_id, end_id=end_id,
                                          start_time=start_time, end_time=end_time, reason=reason))


class ListStore:
    """Held deltas in memory (batch, tests); the streaming DoFn uses BagState instead."""

    def __init__(self, items=None):
        self.items = list(items or [])

    def add(self, event: Event) -> None:
        self.items.append(event)

    def read(self) -> list:
        return list(self.items)

    def clear(self) -> None:
        self.items = []
