"""Epochs and the canonical order: a key's events replayed in time order across id resets.

An exchange engine restart (Binance futures plan about one a day; Bybit sends u == 1) starts the
update ids again much lower while time moves on. Each stretch of ids between two resets is an
**epoch**. Sorting a key's events by update id (Event.sort_key) would replay the newest epoch first,
so the canonical order the state machine consumes is:

1. sort by Event.sort_key (update ids ascending);
2. cut between two neighbours a, b (in that order) where the ids jump up by more than `max_jump`
   (the policy's reset_min_jump_ids) **and** time goes backwards: b.first_id - a.last_id > max_jump and
   b.time < a.time. Higher ids that are older: b begins an earlier epoch. A large gap (ids jump,
   time moves forward) is no cut;
3. replay the epochs by their earliest event time (ties: lower ids first), ids ascending within
   each.

Without a cut (no reset: almost every key) the order is exactly Event.sort_key's. Limits: epochs
must be separated by more than `max_jump` ids (a new epoch that climbs back to within `max_jump` of
the old one's ids is not told apart), and the cut needs time to go backwards across it.

`canonical_order` orders one list (the reference, the streaming reorder buffer, a held bag);
`replay_in_epoch_order` gives the same order for a key cut into runs by id (the batch sequencer),
reading one run at a time. Both are pure, no Beam.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from beam_pipeline.core.columns import EventColumns
from beam_pipeline.core.model import UNVERIFIED_RULES, Event, sort_canonically

_INF = float("inf")
_time = Event.time.fget


def cut_points(events: Sequence[Event], max_jump: int, before: Optional[Event] = None) -> list:
    """Indexes i of `events` (sorted by Event.sort_key) where an epoch begins: an epoch cut lies
    between events[i - 1] (or `before`, the event just before the list, for i == 0) and events[i].
    EventColumns: the same with numpy."""
    if isinstance(events, EventColumns):
        return _column_cut_points(events, max_jump, before)
    cuts = []
    prev = before
    for index, event in enumerate(events):
        if (prev is not None and event.first_id - prev.last_id > max_jump
                and _time(event) < _time(prev) and event.rule not in UNVERIFIED_RULES):
            cuts.append(index)
        prev = event
    return cuts


def _column_cut_points(columns: EventColumns, max_jump: int, before: Optional[Event]) -> list:
    if not len(columns):
        return []
    first, last, times = columns.array("first_id"), columns.array("last_id"), columns.times()
    # ids are non-negative int64s: first - last cannot overflow
    cut = (first[1:] - last[:-1] > max_jump) & (times[1:] < times[:-1])
    cuts = (np.flatnonzero(cut) + 1).tolist()
    if before is not None and cut_points(columns[0:1].events(), max_jump, before) == [0]:
        cuts.insert(0, 0)
    return cuts


def _min_time(events: Sequence[Event], start: int, stop: int) -> int:
    if isinstance(events, EventColumns):
        return int(events.times()[start:stop].min())
    return min(map(_time, events[start:stop]))


def canonical_order(events: Iterable[Event], max_jump: int) -> list:
    """`events` of one key in canonical order: epochs by time, ids ascending within each."""
    ordered = sort_canonically(list(events))
    cuts = cut_points(ordered, max_jump)
    if not cuts:
        return ordered
    bounds = [0] + cuts + [len(ordered)]
    epochs = sorted((_min_time(ordered, start, stop), position, start, stop)
                    for position, (start, stop) in enumerate(zip(bounds, bounds[1:])))
    return [event for _, _, start, stop in epochs for event in ordered[start:stop]]


class _Epoch:
    __slots__ = ("position", "min_time", "pieces", "fed")

    def __init__(self, position: int, min_time):
        self.pieces: list = []
        self.position, self.min_time, self.fed = position, min_time, 0

    def add(self, piece: tuple, min_time) -> None:
        self.pieces.append(piece)
        self.min_time = min(self.min_time, min_time)

    def key(self) -> tuple:
        return (self.min_time, self.position)


def replay_in_epoch_order(runs: Sequence, read: Callable[[object], list], max_jump: int,
                          min_time_of: Callable[[object], Optional[int]] = lambda run: None
                          ) -> Iterator[list]:
    """A key's runs -> lists of events whose concatenation is canonical_order(all events).

    `runs` are in id order (each holds the events whose ids fall in its span: every event of a
    lower run sorts before every event of a higher one); read(run) gives a run's events sorted by
    Event.sort_key; min_time_of(run) is the earliest Event.time in it (None: unknown).

    Runs are read in id order and fed at once unless an epoch read later could come first: an epoch
    is fed when no unfed epoch, and no unread run (by min_time_of), can hold an earlier time. So
    without a reset every run is read once and fed as it is read (provided the lowest run holds the
    key's earliest time: a clock that jumps back past the start, or an unknown min_time, makes runs
    wait and be read again; the order stays exact); after a reset the newer epoch's runs (low ids,
    read first) wait and are read again once the older epochs are fed. At most two runs are in
    memory: the current one and one being read again.
    """
    suffix = [_INF] * (len(runs) + 1)     # a lower bound of the times in runs[i:]
    for index in range(len(runs) - 1, -1, -1):
        known = min_time_of(runs[index])
        suffix[index] = min(suffix[index + 1], -_INF if known is None else known)
    done: list = []                       # complete epochs not fed yet
    state: dict[str, Any] = {"open": None, "current": (None, None), "again": (None, None)}
    last: Optional[Event] = None
    position = 0

    def events_of(run_index):
        for index, events in (state["current"], state["again"]):
            if index == run_index:
                return events
        events = read(runs[run_index])
        state["again"] = (run_index, events)
        return events

    def feed(epoch: _Epoch):
        while epoch.fed < len(epoch.pieces):
            run_index, start, stop = epoch.pieces[epoch.fed]
            events = events_of(run_index)
            yield events if start == 0 and stop == len(events) else events[start:stop]
            epoch.fed += 1

    def flush(unread_min):
        opened = state["open"]
        while True:
            best = min(done, key=_Epoch.key) if done else None
            bound = unread_min if opened is None else min(unread_min, opened.min_time)
            if best is not None and best.min_time <= bound:
                done.remove(best)
                yield from feed(best)
                continue
            if opened is not None and opened.min_time <= unread_min and (
                    best is None or opened.min_time < best.min_time):
                yield from feed(opened)
            return

    for run_index, run in enumerate(runs):
        events = read(run)
        if not events:
            continue
        state["current"] = (run_index, events)
        cuts = cut_points(events, max_jump, last)
        last = events[-1]
        bounds = [0] + [cut for cut in cuts if cut > 0] + [len(events)]
        whole = min_time_of(run) if len(bounds) == 2 else None
        for start, stop in zip(bounds, bounds[1:]):
            low = whole if whole is not None else _min_time(events, start, stop)
            if state["open"] is None or start > 0 or (cuts and cuts[0] == 0):
                if state["open"] is not None:
                    done.append(state["open"])
                state["open"] = _Epoch(position, low)
                position += 1
            state["open"].add((run_index, start, stop), low)
        yield from flush(suffix[run_index + 1])
    if state["open"] is not None:
        done.append(state["open"])
        state["open"] = None
    yield from flush(_INF)


def chunks_min_time(chunks) -> Optional[int]:
    """The earliest time of a run written as chunks (each with a `min_time`; None: unknown)."""
    times = [chunk.min_time for chunk in chunks]
    return None if not times or None in times else min(times)
