"""Batch sequencing: runs spilled to the work folder, replayed per key in canonical order.

Batch runners hand a key's elements to a stateful DoFn in no particular order, and a whole month of
one symbol does not fit in memory. So each decoded batch is cut into runs by update id and written
to the work folder as chunks (SpillRuns); the stateful DoFn collects only the small chunk references
in a BagState and, when the end-of-window timer fires, replays the runs in id order, each run read
back and sorted in memory on its own: memory per key is one run, and no shuffle carries events.
"""
from __future__ import annotations

import logging
import re
import traceback
import uuid
from collections import defaultdict

import apache_beam as beam
import msgspec
import numpy as np
from apache_beam.coders import BytesCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec, TimerSpec,
                                              on_timer)

from beam_pipeline.core.books.watch import BookWatch
from beam_pipeline.core.columns import EventColumns, columns_of, sort_order
from beam_pipeline.core.epochs import chunks_min_time, replay_in_epoch_order
from beam_pipeline.core.model import Event, RunRef, sort_canonically, stream_name
from beam_pipeline.core.runtime import tune_gc_for_bulk_work
from beam_pipeline.core.sequencer import Policy
from transforms import sequence_state as keyed
from transforms.tables import BookPartWriter, CleanPartWriter, clean_table
from transforms.tags import BOOKS, CLEAN as CLEAN_ROWS, DEAD_LETTER

_events_codec = msgspec.msgpack.Decoder(list[Event])
_run_codec = msgspec.msgpack.Decoder(RunRef)


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", part)


class SpillRuns(beam.DoFn):
    """A decoded batch -> its events written to the work folder, one chunk file per (key, run) it
    touches (run = last id // run_span_ids) -> (key, RunRef) per chunk.

    Only these small references travel to the stateful DoFn, so no runner ever holds the events
    themselves in a shuffle: memory stays one batch here and one run in the sequencer, however
    long the input. Chunk names are unique per attempt: a retried bundle writes new chunks and
    only the references of the bundle that committed are sequenced (the work folder, with any
    orphans, is deleted at the end of the run)."""

    def __init__(self, work_dir: str, run_span_ids: int):
        self.work_dir = work_dir.rstrip("/")
        self.run_span_ids = run_span_ids

    def setup(self):
        tune_gc_for_bulk_work()

    def process(self, batch):
        span, runs = self.run_span_ids, defaultdict(list)
        for event in getattr(batch, "events", batch):   # an EventBatch, or a list of Events (tests)
            # a flat tuple: Event.key would build one more per event
            runs[(event.exchange, event.market, event.symbol, event.last_id // span)].append(event)
        for (exchange, market, symbol, run_index), run_events in runs.items():
            key = (exchange, market, symbol)
            path = self._chunk_path(key, run_index, "msgpack")
            with FileSystems.create(path) as handle:
                handle.write(keyed.encode(run_events))
            yield key, RunRef(run_index, path, len(run_events),
                              min(map(Event.time.fget, run_events)))
        columns = columns_of(batch)
        if columns is not None:
            yield from self._spill_columns(columns)

    def _chunk_path(self, key, run_index: int, extension: str) -> str:
        return "/".join([self.work_dir, "runs", *map(_safe, key), f"{run_index:012d}",
                         f"{uuid.uuid4().hex}.{extension}"])

    def _spill_columns(self, columns: EventColumns):
        """The columnar rows cut by (key, run) with numpy; one chunk file each, rows in arrival
        order (a stable sort)."""
        key_index = columns.array("key")
        run_index = columns.array("last_id") // self.run_span_ids
        order = np.lexsort((run_index, key_index))
        keys, runs = key_index[order], run_index[order]
        bounds = np.flatnonzero((keys[1:] != keys[:-1]) | (runs[1:] != runs[:-1])) + 1
        times = columns.times()
        for start, stop in zip([0, *bounds.tolist()], [*bounds.tolist(), len(order)]):
            rows = order[start:stop]
            key, run = columns.keys[int(keys[start])], int(runs[start])
            chunk = columns.take(rows)
            path = self._chunk_path(key, run, "arrow")
            with FileSystems.create(path) as handle:
                handle.write(chunk.to_bytes())
            yield key, RunRef(run, path, len(rows), int(times[rows].min()), columnar=True)


# A run of fewer rows is replayed as Events: below this, Arrow's per-call costs exceed what columns
# save (bench/README.md).
COLUMNAR_MIN_ROWS = 256


def read_run(refs):
    """All chunks of one run, in canonical order: EventColumns when every chunk is columnar and
    the run is large enough, else a list of Events (chunks are in arrival order, so mostly sorted
    already: Python's sort merges such runs in close to linear time)."""
    if all(ref.columnar for ref in refs) and sum(ref.count for ref in refs) >= COLUMNAR_MIN_ROWS:
        columns = EventColumns.concat([_read_columns(ref) for ref in refs])
        return columns.take(sort_order(columns))
    events = []
    for ref in refs:
        if ref.columnar:
            events.extend(_read_columns(ref).events())
        else:
            with FileSystems.open(ref.path) as handle:
                events.extend(_events_codec.decode(handle.read()))
    return sort_canonically(events)


def _read_columns(ref) -> EventColumns:
    with FileSystems.open(ref.path) as handle:
        return EventColumns.from_bytes(handle.read())


def runs_in_order(refs) -> list:
    """Chunk references -> one list of references per run, runs in id order."""
    by_run = defaultdict(list)
    for ref in refs:
        by_run[ref.run_index].append(ref)
    return [by_run[index] for index in sorted(by_run)]


def _books_to(parts, outputs):
    """Tagged outputs, the books/ rows among them written to `parts` (a BookPartWriter) instead."""
    for output in outputs:
        if parts is not None and getattr(output, "tag", None) == BOOKS:
            parts.add(output.value)
        else:
            yield output


class BatchSequencerDoFn(beam.DoFn):
    """Batch: (key, RunRef) -> clean parts, gaps, corrupt periods, recovery requests, error events,
    dead letters and tallies. Only event-time timers: a processing-time timer would push the whole
    batch job off Beam's fast FnApiRunner onto the slow bundle-based DirectRunner."""

    STATE = ReadModifyWriteStateSpec("state", BytesCoder())
    HELD = BagStateSpec("held", BytesCoder())
    RUNS = BagStateSpec("runs", BytesCoder())
    END_OF_INPUT = TimerSpec("end_of_input", TimeDomain.WATERMARK)

    def __init__(self, policy: Policy, work_dir: str, book_checks: bool = False,
                 book_snapshots=None):
        """`work_dir`: where the clean parts are written (the sink moves them into clean/);
        `book_checks`: rebuild and check each key's book during its replay (core/books/watch.py);
        `book_snapshots`: (levels, interval ms) of the books/ rows, or None."""
        self.policy = policy
        self.book_checks = book_checks or book_snapshots is not None
        self.book_snapshots = book_snapshots
        self.work_dir = work_dir.rstrip("/")
        self._parts = None

    def setup(self):
        tune_gc_for_bulk_work()

    def process(self, element,
                runs_bag=beam.DoFn.StateParam(RUNS),
                end_timer=beam.DoFn.TimerParam(END_OF_INPUT),
                window=beam.DoFn.WindowParam):
        """Remember the chunk; all runs are replayed in id order once the input has ended."""
        _, ref = element
        runs_bag.add(keyed.encode(ref))
        end_timer.set(window.max_timestamp())

    @on_timer(END_OF_INPUT)
    def end_of_input(self, key=beam.DoFn.KeyParam,
                     state_cell=beam.DoFn.StateParam(STATE),
                     held_bag=beam.DoFn.StateParam(HELD),
                     runs_bag=beam.DoFn.StateParam(RUNS)):
        """Replay the key's sorted runs in canonical order (id order; after an id reset, epochs in
        time order: beam_pipeline/core/epochs.py), then close any wait still open.

        The key's outputs are emitted only once its whole replay has succeeded (they are small:
        clean rows are Parquet parts in the work folder, emitted as references). If the replay
        raises (a bug: the machine sets a raising event aside on its own), nothing of the key has
        been emitted, so every one of its events becomes a processing_error dead letter with the
        trace and the job goes on. An OSError (the work folder) fails the bundle: the runner
        retries it, or the job stops with the error."""
        self._parts = None
        refs = [_run_codec.decode(blob) for blob in runs_bag.read()]
        try:
            outputs = list(self._replay(key, refs, state_cell, held_bag))
        except OSError:
            raise
        except Exception:
            outputs = list(self._replay_failed(key, refs, held_bag))
        runs_bag.clear()
        yield from outputs

    def _replay(self, key, refs, state_cell, held_bag):
        stored, machine, outputs = keyed.load(key, self.policy, state_cell, held_bag)
        yield from outputs
        first_seen = not stored.machine.seen
        books = (BookWatch(key, snapshots=self.book_snapshots) if self.book_checks
                 else None)                                  # in memory for the replay
        parts = (BookPartWriter(f"{self.work_dir}/books", "-".join(map(_safe, key)))
                 if self.book_snapshots is not None else None)
        for events in replay_in_epoch_order(runs_in_order(refs), read_run,
                                            self.policy.reset_min_jump_ids, chunks_min_time):
            machine.feed_all(events)
            yield from _books_to(parts, keyed.tagged_outputs(machine, first_seen,
                                                            self._clean_part, books))
            first_seen = False
        machine.finish()
        yield from _books_to(parts, keyed.tagged_outputs(machine, False, self._clean_part, books))
        yield keyed.status_output(machine, books)     # a corrupt period still open stays so
        if books is not None:
            yield from _books_to(parts, keyed.book_outputs(books.finish()))
        part = parts.finish() if parts is not None else None
        if part is not None:
            yield beam.pvalue.TaggedOutput(BOOKS, part)
        last = self._parts.finish() if self._parts is not None else None
        if last is not None:
            yield beam.pvalue.TaggedOutput(CLEAN_ROWS, last)
        keyed.save(state_cell, stored)

    def _clean_part(self, machine, clean: list):
        """Clean rows go to the key's part writer: few large Parquet parts in the work folder
        (named by key and number, so a retried replay rewrites the same files); only a closed
        part's reference is emitted."""
        if self._parts is None:
            self._parts = CleanPartWriter(f"{self.work_dir}/clean", "-".join(map(_safe, machine.key)),
                                          machine.symbol)
        return self._parts.add(clean_table(clean, machine.key))

    def _replay_failed(self, key, refs, held_bag):
        trace = traceback.format_exc()
        logging.getLogger(__name__).error("%s: replay failed, its events are dead letters:\n%s",
                                          stream_name(key), trace)
        held_bag.clear()
        for ref in refs:
            for event in read_run([ref]):
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTER, keyed.poison_letter(event, trace, "sequence.end_of_input"))
