"""Book checks on the sequencer's output (core/books/watch.py) over the real Binance captures.

The captures (../shared/data/cryptofeed, cryptofeed-current) are decoded by the project's framing
and sequenced by the state machine in canonical order, as the batch replay does; the BookWatch sees
every clean output. Unchanged, they report nothing. Faults are injected into them: a crossed
book, a bad level, and drift found by a REST snapshot inside the continuous stream (built here by
an independent plain-dict rebuild) are each reported once, at the right message."""
import os
from collections import defaultdict
from decimal import Decimal

import msgspec
import pytest

from beam_pipeline.core import framing
from beam_pipeline.core.books.watch import BookWatch
from beam_pipeline.core.columns import CleanStretch
from beam_pipeline.core.model import (DELTA, SNAPSHOT, CorruptPeriod, decode_levels,
                                      encode_levels, sort_canonically)
from beam_pipeline.core.reasons import Outcome
from beam_pipeline.core.sequencer import StreamSequencer
from beam_pipeline.options import default_policy
from tests.conftest import CAPTURES, REPO

CURRENT = os.path.join(os.path.dirname(REPO), "shared", "data", "cryptofeed-current",
                       "BINANCE-b38f7c.0")


def decode(path):
    with open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    fmt = framing.detect_format([line for line in lines[:50] if line.strip()])
    ctx, events = framing.FileContext(fmt), []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if framing.is_header(line):
            ctx = framing.context_from_header(fmt, line)
            continue
        event = framing.decode_record(line, ctx, f"{path}:{number}")
        if event is not None:
            events.append(event)
    return events


@pytest.fixture(scope="module")
def by_key():
    keys = defaultdict(list)
    for path in [os.path.join(CAPTURES, name) for name in (
            "BINANCE.ws.1.0", "BINANCE.http.0.0", "BINANCE_FUTURES.ws.1.0",
            "BINANCE_FUTURES.http.0.0")] + [CURRENT]:
        for event in decode(path):
            keys[event.key].append(event)
    return {key: sort_canonically(events) for key, events in keys.items()}


def sequence_and_watch(key, events):
    """The batch replay's loop, Beam-free: (corrupt periods, watch, clean events applied)."""
    machine, watch = StreamSequencer(key, default_policy()), BookWatch(key)
    periods, applied = [], 0
    machine.feed_all(events)
    machine.finish()
    for outcome, value in machine.take_output():
        if outcome == Outcome.CLEAN:
            applied += len(value.columns) if isinstance(value, CleanStretch) else 1
            periods += [r for r in watch.observe(value) if isinstance(r, CorruptPeriod)]
        elif outcome == Outcome.CORRUPT_PERIODS:
            periods.append(value)
    periods += [r for r in watch.finish() if isinstance(r, CorruptPeriod)]
    return periods, watch, applied


def test_unchanged_captures_report_nothing_and_every_message_is_checked(by_key):
    assert len(by_key) == 18
    checked = 0
    for key, events in by_key.items():
        periods, watch, applied = sequence_and_watch(key, events)
        assert periods == [], key
        # every applied message was checked against an anchored book (each stream is bridged)
        assert watch.counts.checked == applied and watch.counts.unchecked == 0, key
        checked += applied
    # the clean records: 929 of the cryptofeed captures (test_end_to_end), and of cryptofeed-current
    # its 4,709 deltas and 10 snapshots less the 67 deltas its snapshots supersede
    assert checked == 929 + 4709 + 10 - 67


def _replace(event, **levels):
    return msgspec.structs.replace(
        event, **{side: encode_levels(value) for side, value in levels.items()})


NKN = ("binance", "spot", "NKNUSDT")


def reference_book(events, upto):
    """A plain-dict rebuild (independent of core/books): the snapshot, then every delta whose
    last id is above it, up to and including the event at index `upto`."""
    bids, asks, anchor = {}, {}, None
    for event in events[:upto + 1]:
        if event.kind == SNAPSHOT:
            bids = {Decimal(p): (p, s) for p, s in decode_levels(event.bids)}
            asks = {Decimal(p): (p, s) for p, s in decode_levels(event.asks)}
            anchor = event.last_id
            continue
        if anchor is None or event.last_id <= anchor:
            continue
        for side, levels in ((bids, decode_levels(event.bids)), (asks, decode_levels(event.asks))):
            for p, s in levels:
                if Decimal(s) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = (p, s)
    return bids, asks


def _delta_index(events, n):
    """Index of the n-th delta after the key's snapshot."""
    start = next(i for i, e in enumerate(events) if e.kind == SNAPSHOT)
    deltas = [i for i, e in enumerate(events) if i > start and e.kind == DELTA]
    return deltas[n]


def test_a_crossed_book_is_reported_once_from_that_message(by_key):
    events = list(by_key[NKN])
    i = _delta_index(events, 40)
    bids, asks = reference_book(events, i)
    best_ask = min(asks)
    events[i] = _replace(events[i], bids=decode_levels(events[i].bids) + [(str(best_ask), "5")])
    periods, _, _ = sequence_and_watch(NKN, events)
    assert [(p.reason, p.start_id, p.start_time, p.end_id) for p in periods] == [
        ("crossed_book", events[i].first_id, events[i].time, events[-1].last_id)]
    assert "best bid" in periods[0].detail


def test_a_bad_level_is_reported_once(by_key):
    events = list(by_key[NKN])
    i = _delta_index(events, 10)
    levels = decode_levels(events[i].asks) or decode_levels(events[i].bids)
    side = "asks" if decode_levels(events[i].asks) else "bids"
    events[i] = _replace(events[i], **{side: [(levels[0][0], "-" + levels[0][1])] + levels[1:]})
    periods, _, _ = sequence_and_watch(NKN, events)
    assert [(p.reason, p.start_id) for p in periods] == [("bad_level", events[i].first_id)]


def _rest_snapshot(events, i, last_id, depth=100):
    """A REST snapshot of the book after events[i] (from the reference rebuild), its best `depth`
    levels a side, lastUpdateId `last_id`, received just after events[i]."""
    bids, asks = reference_book(events, i)
    top_bids = [bids[p] for p in sorted(bids, reverse=True)[:depth]]
    top_asks = [asks[p] for p in sorted(asks)[:depth]]
    return msgspec.structs.replace(
        events[i], kind=SNAPSHOT, first_id=last_id, last_id=last_id, prev_id=None,
        bids=encode_levels(top_bids), asks=encode_levels(top_asks), source="injected")


@pytest.mark.parametrize("straddling", [False, True])
def test_a_snapshot_inside_the_stream_agrees_with_the_rebuilt_book(by_key, straddling):
    events = list(by_key[NKN])
    i = _delta_index(events, 100)
    wide = next(j for j in range(i, len(events)) if events[j].last_id > events[j].first_id)
    i = wide if straddling else i
    # at a boundary the snapshot is the book after events[i]; inside the next delta, it is the
    # book part way through it: the levels that delta touches may be either, so they are left out
    last_id = events[i].last_id if not straddling else events[i].first_id
    snapshot = _rest_snapshot(events, i if not straddling else i - 1, last_id)
    events.insert(i + 1 if not straddling else i, snapshot)
    events = sort_canonically(events)
    periods, watch, applied = sequence_and_watch(NKN, events)
    assert periods == []
    assert watch.counts.checked == applied and watch.counts.unchecked == 0


@pytest.mark.parametrize("straddling", [False, True])
def test_drift_before_a_snapshot_inside_the_stream_is_one_snapshot_mismatch(by_key, straddling):
    events = list(by_key[NKN])
    anchor = next(e for e in events if e.kind == SNAPSHOT)
    i = _delta_index(events, 100)
    if straddling:
        i = next(j for j in range(i, len(events)) if events[j].last_id > events[j].first_id)
    last_id = events[i].last_id if not straddling else events[i].first_id
    snapshot = _rest_snapshot(events, i if not straddling else i - 1, last_id)
    # drift: one delta well before the snapshot changed a level among the snapshot's best 100
    # that no delta touches again before the snapshot
    k = _delta_index(events, 50)
    bids, _ = reference_book(events, k)
    later = {Decimal(p) for e in events[k + 1:i + 1] for p, _ in decode_levels(e.bids)}
    near = next(p for p in sorted(bids, reverse=True)[5:90] if p not in later)
    events[k] = _replace(events[k], bids=decode_levels(events[k].bids) + [
        (bids[near][0], str(Decimal(bids[near][1]) + 7))])
    events = sort_canonically(events + [snapshot])
    periods, _, _ = sequence_and_watch(NKN, events)
    assert [(p.reason, p.start_id, p.start_time, p.end_id, p.end_time, p.detail)
            for p in periods] == [
        ("snapshot_mismatch", anchor.last_id + 1, anchor.time, last_id, snapshot.time,
         f"1 levels differ from the book rebuilt since snapshot {anchor.last_id}")]


# ---- book snapshots waiting for the drift check: bounded memory ------------------------------

def _synthetic(count, time_step=1):
    key = ("binance", "spot", "BTCUSDT")
    snapshot = _event(key, SNAPSHOT, 100, 100, 0, [("99.0", "1")], [("101.0", "1")])
    deltas = [_event(key, DELTA, 100 + i, 100 + i, i * time_step, [("98.5", str(i))], [])
              for i in range(1, count + 1)]
    return key, snapshot, deltas


def _event(key, kind, first, last, at, bids, asks):
    from beam_pipeline.core.model import RANGE_PLUS_ONE, Event
    return Event(*key, kind, first, last, None, 1_700_000_000_000 + at, None,
                 encode_levels(bids), encode_levels(asks), RANGE_PLUS_ONE, f"f:{first}")


def test_held_book_snapshots_spill_to_disk_and_come_back_in_order():
    """Binance rows wait for the drift check; past HELD_IN_MEMORY they wait on disk, and the end
    of the data gives every one of them, oldest first, as if none had been spilled."""
    from beam_pipeline.core.books.watch import HELD_IN_MEMORY
    key, snapshot, deltas = _synthetic(3 * HELD_IN_MEMORY + 10)
    watch = BookWatch(key, snapshots=(1, 1))
    assert watch.observe((snapshot, 100, True)) == []
    for delta in deltas:
        assert watch.observe((delta, 100, True)) == []     # held: no snapshot inside the stream
    held = watch.unconfirmed
    assert held.file is not None and len(held.rows) < HELD_IN_MEMORY
    rows = watch.finish()
    # each message ends the 1 ms interval of the one before it: the book as that one left it
    assert [row.last_id for row in rows] == [100] + [d.last_id for d in deltas[:-1]]
    assert [row.time for row in rows] == sorted(row.time for row in rows)
    assert all(row.bids[0][0] == "99.0" and len(row.bids) == 1 for row in rows)
    assert not watch.unconfirmed


def test_held_book_snapshots_on_disk_are_dropped_by_a_mismatch():
    from beam_pipeline.core.books.watch import HELD_IN_MEMORY
    key, snapshot, deltas = _synthetic(2 * HELD_IN_MEMORY)
    watch = BookWatch(key, snapshots=(1, 1))
    watch.observe((snapshot, 100, True))
    for delta in deltas:
        watch.observe((delta, 100, True))
    # a REST snapshot at the last delta's id that disagrees with the book: the rows are dropped
    last = deltas[-1].last_id
    drifted = _event(key, SNAPSHOT, last, last, 10 * HELD_IN_MEMORY, [("99.0", "7")],
                     [("101.0", "1")])
    out = watch.observe((drifted, 100, True)) + watch.finish()
    assert [type(row).__name__ for row in out].count("BookSnapshot") == 0
    assert [row.reason for row in out if isinstance(row, CorruptPeriod)] == ["snapshot_mismatch"]
