"""What the batch and the live sequencing DoFns share: the key's stored state, the state machine
built over it, and the mapping of the machine's outputs onto tagged outputs.

The two DoFns (transforms/sequence_batch.py, transforms/sequence_live.py) are siblings over this
module, as Beam Java's ordered-processing extension keeps its per-key processors apart from the
shared state machine: neither inherits the other's state specs or timers.
"""
from __future__ import annotations

import logging
import traceback
from collections import Counter
from typing import Optional

import apache_beam as beam
import msgspec

from beam_pipeline.core import tallies
from beam_pipeline.core.columns import CleanStretch
from beam_pipeline.core.model import (CorruptPeriod, ErrorEvent, Event, KeyStatus, dead_letter,
                                      event_dead_letter, stream_name)
from beam_pipeline.core.reasons import CorruptReason, ErrorType, Outcome, Reason
from beam_pipeline.core.runtime import now_ms
from beam_pipeline.core.sequencer import STATE_VERSION, Policy, SequencerState, StreamSequencer
from transforms.tags import BOOKS, CLEAN, CORRUPT_PERIODS, DEAD_LETTER, ERRORS, STATUS, TALLY

event_codec = msgspec.msgpack.Decoder(Event)
encode = msgspec.msgpack.Encoder().encode


class StreamState(msgspec.Struct):
    """What the streaming wrapper keeps beside the machine's own state."""

    waiting: int = 0               # events in the reorder buffer
    stalled: bool = False
    recovery_timer: int = -1       # deadline the recovery timer is set for
    processing_floor: int = 0      # µs: processing time is at least when our last such timer fired
    book_version: Optional[list] = None  # --book_checks: the version of the key's book in this
                                         # process's cache (transforms/book_cache.py)
    book_counts: Optional[list] = None   # --book_checks: [checked, checksum verified, failed]
                                         # messages so far (status/); in state, so a restore
                                         # rolls them back with the rest
    status_due: int = 0            # µs the status snapshot timer is set for (0: not set)


class StoredState(msgspec.Struct):
    machine: SequencerState
    stream: StreamState
    version: int = STATE_VERSION


_stored_codec = msgspec.msgpack.Decoder(StoredState)


class BagStore:
    """The machine's held-delta store over a BagState."""

    def __init__(self, bag):
        self.bag = bag

    def add(self, event):
        self.bag.add(encode(event))

    def read(self):
        return [event_codec.decode(blob) for blob in self.bag.read()]

    def clear(self):
        self.bag.clear()


def load(key, policy: Policy, state_cell, held_bag, waiting_bag=None, initial=None):
    """The key's (stored state, machine, outputs). State from another schema version restarts the
    key (state_reset): the events its bags hold are in that version's encoding, so each becomes a
    state_reset dead letter with its stored bytes (accounted for, and replayable by that version).
    A key with no stored state starts from `initial` (a SequencerState) when given: a restarted
    job's cursor."""
    blob, outputs = state_cell.read(), []
    stored = None
    if blob is not None:
        try:
            stored = _stored_codec.decode(blob)
            if stored.version != STATE_VERSION:
                raise ValueError(f"state version {stored.version}, expected {STATE_VERSION}")
        except (msgspec.DecodeError, ValueError) as error:
            stored = None
            outputs.append(_state_reset(key, str(error)))
            outputs.extend(_unreadable_events(key, [held_bag, waiting_bag], str(error)))
    if stored is None:
        stored = StoredState(initial if blob is None and initial is not None else SequencerState(),
                             StreamState())
    machine = StreamSequencer(key, policy, stored.machine, BagStore(held_bag))
    return stored, machine, outputs


def save(state_cell, stored: StoredState) -> None:
    state_cell.write(encode(stored))


def tagged_outputs(machine, first_seen: bool, clean_output, books=None):
    """Machine outputs -> tagged outputs; the clean rows of one call go to `clean_output(machine,
    rows)`, which returns the one element that carries them (a table, or a written part), or None
    when they are buffered for a later element. `books`: the key's core.books.BookWatch, or None
    (book checks off); it sees every clean output, in the machine's order."""
    clean, counts = [], Counter()
    for outcome, value in machine.take_output():
        if outcome == Outcome.CLEAN:
            clean.append(value)
            if books is not None:
                yield from book_outputs(books.observe(value))
        elif outcome in (Outcome.DUPLICATE, Outcome.SUPERSEDED):
            name = tallies.DUPLICATES if outcome == Outcome.DUPLICATE else tallies.SUPERSEDED
            counts[tallies.key(name, tallies.file_of_source(value.source))] += 1
        elif outcome == Outcome.CONTROL:
            counts[tallies.key(tallies.CONTROL, tallies.file_of_source(value.source))] += 1
        elif outcome == Outcome.LATE:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, late_letter(value))
        elif outcome == Outcome.POISON:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, poison_letter(*value))
        else:                      # a report: the outcome is the name of its output tag
            yield beam.pvalue.TaggedOutput(outcome.value, value)
    if clean:
        counts.update(_clean_counts(clean))
        carrier = clean_output(machine, clean)
        if carrier is not None:          # None: the rows wait in a part writer (batch)
            yield beam.pvalue.TaggedOutput(CLEAN, carrier)
    if first_seen and machine.state.seen:    # the key's first event reached the machine
        counts["symbols"] += 1
    if books is not None:
        counts.update(books.tallies())
    for name, count in counts.items():
        yield beam.pvalue.TaggedOutput(TALLY, (name, count))


# The book checks' tallies a key's status counts (BookWatch.tallies), by their place in
# StreamState.book_counts.
_STATUS_COUNTS = {tallies.BOOK_CHECKS + "messages_checked": 0,
                  tallies.BOOK_CHECKS + "checksums_verified": 1, tallies.BOOK_CHECKS + "failed": 2}
REORDER = "reorder"                # status hold_reason: events wait in the reorder buffer only


def count_book_checks(stream: StreamState, outputs: list) -> None:
    """Streaming: add the book checks' tallies among `outputs` to the key's stored counts."""
    for output in outputs:
        if getattr(output, "tag", None) != TALLY:
            continue
        index = _STATUS_COUNTS.get(output.value[0])
        if index is not None:
            stream.book_counts = stream.book_counts or [0, 0, 0]
            stream.book_counts[index] += output.value[1]


def status_output(machine, books=None, book_counts=None, waiting: int = 0):
    """The key's status (status/) as a tagged output, taken now: the machine's, with the events
    waiting in a streaming reorder buffer (`waiting`) among the held ones, and with --book_checks
    the counts ([checked, checksum verified, failed]: `book_counts`, else the watch's own) and the
    corrupt period the book (`books`, a BookWatch) is in, if any."""
    status: KeyStatus = machine.status(now_ms())
    changes: dict = {}
    if waiting:
        changes.update(held_events=status.held_events + waiting,
                       hold_reason=status.hold_reason or REORDER)
    if book_counts is None and books is not None:
        counts = books.counts
        book_counts = [counts.checked, counts.checksum_verified, counts.failed]
    if book_counts is not None:
        changes.update(book_checked_messages=book_counts[0],
                       checksum_verified_messages=book_counts[1], book_checks_failed=book_counts[2])
    if books is not None and books.book.open is not None:
        reason, start_id, start_time, _ = books.book.open
        changes.update(open_corrupt_reason=str(reason), open_corrupt_start_id=start_id,
                       open_corrupt_start_time=start_time)
    return beam.pvalue.TaggedOutput(STATUS, msgspec.structs.replace(status, **changes))


def book_outputs(rows):
    """The book checks' rows (core/books/watch.py) -> tagged outputs."""
    for row in rows:
        tag = (ERRORS if isinstance(row, ErrorEvent) else CORRUPT_PERIODS
               if isinstance(row, CorruptPeriod) else BOOKS)
        yield beam.pvalue.TaggedOutput(tag, row)


def _clean_counts(clean: list) -> Counter:
    """Clean rows per file: (Event, segment, anchored) rows by their sources, CleanStretches by
    their path column (a row's source is path:line)."""
    stretches = [value for value in clean if isinstance(value, CleanStretch)]
    counts = tallies.counts_by_file(tallies.CLEAN_RECORDS, [
        value[0].source for value in clean if not isinstance(value, CleanStretch)])
    for stretch in stretches:
        for path, n in stretch.columns.file_counts().items():
            counts[tallies.key(tallies.CLEAN_RECORDS, tallies.file_of_source(f"{path}:1"))] += n
    return counts


def poison(stage: str, key, payload: bytes, source: str):
    """The element being processed raised: a processing_error dead letter with the trace."""
    return beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
        Reason.PROCESSING_ERROR, traceback.format_exc()[-8000:], stage, payload, source,
        symbol=stream_name(key)))


def poison_letter(event: Event, trace: str, stage: str = "sequence"):
    return event_dead_letter(Reason.PROCESSING_ERROR, trace[-8000:], stage, event)


def late_letter(event: Event):
    return event_dead_letter(Reason.LATE_EVENT,
                             "arrived after the gap it would have filled was declared", "sequence",
                             event)


def timer_error(key):
    return beam.pvalue.TaggedOutput(ERRORS, ErrorEvent(ErrorType.TIMER_ERROR, stream_name(key),
                                                       now_ms()))


def _state_reset(key, why):
    """The key's earlier state cannot be read (`why`): what came before is in doubt."""
    logging.getLogger(__name__).warning("%s: state reset: %s", stream_name(key), why)
    return beam.pvalue.TaggedOutput(CORRUPT_PERIODS, CorruptPeriod(
        *key, start_id=0, end_id=0, start_time=None, end_time=now_ms(),
        reason=CorruptReason.STATE_RESET))


def _unreadable_events(key, bags, why: str):
    """Dead letters for the stored events of a key whose state is being reset; the bags emptied."""
    for bag in filter(None, bags):
        for blob in bag.read():
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                Reason.STATE_RESET, f"held in state that cannot be read: {why}", "sequence", blob,
                stream_name(key), symbol=stream_name(key)))
        bag.clear()
