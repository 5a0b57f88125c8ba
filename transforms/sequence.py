"""Sequencing per (exchange, market, symbol) with Beam's State API and timers.

Two sibling DoFns over one Beam-free state machine (beam_pipeline/core/sequencer.py): batch replays
spilled runs in canonical order (transforms/sequence_batch.py); streaming reorders events as they
come (transforms/sequence_live.py). Only ReadModifyWrite and Bag state are used: both work on
Dataflow Runner v2, Flink and Direct.
"""
from __future__ import annotations

import typing
from collections import defaultdict

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp

from beam_pipeline.core.columns import events_of
from beam_pipeline.core.model import EventBatch
from beam_pipeline.core.sequencer import Policy
from transforms.sequence_batch import BatchSequencerDoFn, SpillRuns
from transforms.sequence_live import LiveSequencerDoFn
from transforms.tags import (BOOKS, CLEAN, CORRUPT_PERIODS, DEAD_LETTER, ERRORS, GAPS,
                             RECOVERY_REQUESTS, STATUS, TALLY)

_KEYED = typing.Tuple[typing.Tuple[str, str, str], typing.Any]


def _per_key(batch):
    """A decoded message -> one (key, EventBatch) per symbol in it, stamped with the message's
    publish time (the live sequencer's timers follow the watermark of publish times); input
    without one (files, tests) is stamped with its earliest event time (the exchange's time where
    the message has one, else the receive time)."""
    by_key = defaultdict(list)
    for event in events_of(batch):
        by_key[event.key].append(event)
    publish_time = getattr(batch, "publish_time", 0)
    for key, events in by_key.items():
        stamp = publish_time or min(event.time for event in events)
        yield beam.window.TimestampedValue((key, EventBatch(events, publish_time)), stamp / 1000)


class SequenceFeeds(beam.PTransform):
    """EventBatches -> outputs clean, gaps, corrupt_periods, recovery_requests, errors,
    dead_letter, tally, books, status (transforms/tags.py; books: --book_snapshots only; status:
    one KeyStatus per key when its replay ends in batch; in streaming, one per changed key every
    `status_seconds`, and one per key when the input ends or the job stops).

    `clean` has one type per mode, fixed when the graph is built: batch, CleanParts (the rows
    written to the work folder, moved into clean/ by sinks.CommitCleanParts); streaming, Arrow
    tables in tables.CLEAN_SCHEMA (written by sinks.clean_sink). tables.part_row_times /
    table_row_times turn either into the RowTimes the error counts use."""

    def __init__(self, policy: Policy, streaming: bool, work_dir: str = None,
                 run_span_ids: int = None, reorder_timeout_s: float = None,
                 stall_timeout_s: float = None, clock=Timestamp.now, resume=None,
                 cursor_folder: str = None, book_checks: bool = False, book_snapshots=None,
                 status_seconds: float = None):
        """Streaming: `resume` and `cursor_folder` as LiveSequencerDoFn takes them. `book_checks`:
        rebuild and check each key's book (core/books/watch.py; streaming keeps it in
        transforms/book_cache.py); `book_snapshots`: (levels, interval ms) of the `books` output,
        or None; `status_seconds`: streaming's status period (LiveSequencerDoFn)."""
        super().__init__()
        self.status_seconds = status_seconds
        self.book_checks, self.book_snapshots = book_checks, book_snapshots
        self.resume, self.cursor_folder = resume, cursor_folder
        self.clock = clock
        self.policy = policy
        self.streaming = streaming
        self.work_dir = work_dir
        self.run_span_ids = run_span_ids
        self.reorder_timeout_s = reorder_timeout_s
        self.stall_timeout_s = stall_timeout_s

    def expand(self, event_lists):
        if self.streaming:
            # Event time is the exchange's time where the message has one, else the receive time.
            keyed = event_lists | "KeyBySymbol" >> beam.FlatMap(_per_key)
            sequencer = LiveSequencerDoFn(self.policy, self.reorder_timeout_s,
                                          self.stall_timeout_s, self.clock, self.resume,
                                          self.cursor_folder, self.book_checks,
                                          status_seconds=self.status_seconds,
                                          book_snapshots=self.book_snapshots)
        else:
            keyed = event_lists | "SpillRuns" >> beam.ParDo(
                SpillRuns(self.work_dir, self.run_span_ids))
            sequencer = BatchSequencerDoFn(self.policy, self.work_dir, self.book_checks,
                                           self.book_snapshots)
        keyed = keyed | "TypedKeys" >> beam.Map(lambda kv: kv).with_output_types(_KEYED)
        return keyed | "Sequence" >> beam.ParDo(sequencer).with_outputs(
            CLEAN, GAPS, CORRUPT_PERIODS, RECOVERY_REQUESTS, ERRORS, DEAD_LETTER, TALLY, BOOKS,
            STATUS)
