"""Decode and validate: raw record batches -> normalized events, with a dead letter for every reject."""
from __future__ import annotations

import logging
import time
import traceback
from collections import Counter

import apache_beam as beam

from beam_pipeline.core import progress, tallies
from beam_pipeline.core.batch_decode import decode_envelope_columns, fast_decoder_for
from beam_pipeline.core.framing import FileContext, decode_message, decode_record
import transforms.coders  # noqa: F401  (registers the batch coders)
from beam_pipeline.core.model import (UNVERIFIED_RULES, EventBatch, Ignored, RawBatch, dead_letter,
                                      ignored_reason, rejected_dead_letter)
from beam_pipeline.core.reasons import Reason, Rejected
from beam_pipeline.core.runtime import now_ms, tune_gc_for_bulk_work
from transforms.tags import DEAD_LETTER, TALLY


def record_source(batch: RawBatch, number: int, index: int = 0) -> str:
    """file:line, or pubsub:<message id>:<line>; a single-record message (number 0) is named by
    its message id alone; records of several single-record messages carry their own."""
    if batch.sources is not None:
        return batch.sources[index]
    return f"{batch.source}:{number}" if number else batch.source


def decode_one(batch: RawBatch, ctx: FileContext, number: int, raw: bytes, max_record_bytes: int,
               index: int = 0):
    """Event, None (another stream's message), or raises Rejected."""
    if len(raw) > max_record_bytes:
        raise Rejected(Reason.RECORD_TOO_LARGE,
                       f"record longer than --max_record_bytes={max_record_bytes}; "
                       f"the dead letter keeps its first {max_record_bytes + 1} bytes")
    if not raw.isascii():                   # ASCII is valid UTF-8; the check is 5x cheaper
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise Rejected(Reason.INVALID_UTF8, str(error)) from None
    source = record_source(batch, number, index)
    if batch.fmt == "message":
        return decode_message(raw, batch.attributes or {}, source)
    return decode_record(raw, ctx, source)


class _Progress:
    """Logs how far this worker has got, at most every `every_s` seconds (long runs show life)."""

    def __init__(self, every_s: float = 10.0):
        self.every_s, self.records, self.started, self.last = every_s, 0, None, 0.0

    def add(self, count: int) -> None:
        now = time.monotonic()
        if self.started is None:
            self.started = self.last = now
        self.records += count
        if now - self.last >= self.every_s:
            self.last = now
            rate = self.records / max(now - self.started, 1e-9)
            logging.getLogger("feedcheck").info(
                "progress: %s records decoded (%s/s)", f"{self.records:,}", f"{rate:,.0f}")


def published(batch: RawBatch, events) -> int:
    """The time the live sequencer takes `events` as published (its event-time reorder wait): a
    Pub/Sub message's publish time; for a followed file (recv_slack_ms set) the latest receive time
    of its events plus the slack (by then a writer that flushes within --quiet_seconds has them on
    disk), a receive time after the read counted as the read (another clock's: a record cannot be
    received after it was read), and the read's time for events without one; 0 for other files."""
    if not batch.recv_slack_ms:
        return batch.publish_time
    received = [event.recv_time for event in events if event.recv_time is not None]
    if not received:
        return batch.publish_time
    return min(max(received), batch.publish_time) + batch.recv_slack_ms


def _markers_by_source(markers) -> dict:
    """A batch's connection-break markers (not records: no tally) by the record that revealed
    them: the live sequencer takes a key's events in the order they come, so a marker must come
    before the key's events after the break."""
    by_source: dict = {}
    for marker in markers or ():
        by_source.setdefault(marker.source, []).append(marker)
    return by_source


class DecodeBatch(beam.DoFn):
    """RawBatch -> one EventBatch (main), DeadLetters, and tallies (per file: tallies.key).

    Events stay in batches: one element per input batch keeps Beam's per-element cost off the hot
    path. `columnar`: a file's plain envelope deltas travel as columns (EventBatch.columns, the batch
    sequencer's fast path); otherwise every event is an Event (the streaming sequencer's form).
    """

    def __init__(self, max_record_bytes: int, columnar: bool = False):
        self.max_record_bytes = max_record_bytes
        self.columnar = columnar

    def setup(self):
        tune_gc_for_bulk_work()
        self.progress = _Progress()

    def process(self, batch: RawBatch):
        ctx = FileContext(batch.fmt, batch.exchange, batch.market, batch.symbol, batch.channels,
                          self.max_record_bytes)
        file = None if batch.fmt == "message" else batch.source
        events, ignored, ingest = [], Counter(), batch.ingest_time or now_ms()
        unverified = 0
        columns, fast = self._columns(batch) if self._columnar(batch) else (None, self._fast(batch))
        breaks = _markers_by_source(batch.markers)
        for index, (number, raw) in enumerate(batch.records):
            if breaks:      # a connection break's markers go before the record that revealed it
                events.extend(breaks.pop(record_source(batch, number, index), ()))
            if fast is not None and fast[index] is not None:
                if fast[index] is not True:       # True: the line is a row of `columns`
                    events.append(fast[index])
                continue
            try:
                event = decode_one(batch, ctx, number, raw, self.max_record_bytes, index)
            except Rejected as rejected:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, rejected_dead_letter(
                    rejected, "decode", raw, record_source(batch, number, index), ingest))
                continue
            except Exception as error:  # a bug or an input we did not foresee: never fail the bundle
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter(
                    Reason.PROCESSING_ERROR, f"{type(error).__name__}: {error}\n{traceback.format_exc()}",
                    "decode", raw, record_source(batch, number, index), ingest))
                continue
            if event is None or type(event) is Ignored:
                ignored[ignored_reason(event)] += 1
            else:
                unverified += event.rule in UNVERIFIED_RULES
                events.append(event)
        self.progress.add(len(batch.records))
        progress.add(progress.READ, len(batch.records))
        yield beam.pvalue.TaggedOutput(TALLY, (tallies.key(tallies.INPUT_RECORDS, file),
                                               len(batch.records)))
        if ignored:
            yield beam.pvalue.TaggedOutput(TALLY, (tallies.key(tallies.IGNORED, file),
                                                   sum(ignored.values())))
            for reason, n in ignored.items():
                yield beam.pvalue.TaggedOutput(TALLY, (tallies.key(tallies.IGNORED_BY + reason, file), n))
        if unverified:
            yield beam.pvalue.TaggedOutput(TALLY, (tallies.key(tallies.UNVERIFIED, file), unverified))
        if events or columns:
            yield EventBatch(events, published(batch, events), columns)

    def _fast(self, batch: RawBatch):
        """The batch fast path's Events (None where a record takes decode_one), or None."""
        decode = fast_decoder_for(batch.fmt)
        if decode is None:
            return None
        sources = [record_source(batch, number, index)
                   for index, (number, _) in enumerate(batch.records)]
        return decode([raw for _, raw in batch.records], sources, self.max_record_bytes)


    def _columnar(self, batch: RawBatch) -> bool:
        """A file's envelope records (numbered lines: a row's source is path:line)."""
        return (self.columnar and batch.fmt == "envelope" and batch.sources is None
                and bool(batch.records) and batch.records[0][0] >= 1)

    def _columns(self, batch: RawBatch):
        """(EventColumns bytes or None, per record True where it is a row of them, else None)."""
        columns, taken = decode_envelope_columns([raw for _, raw in batch.records],
                                                 [number for number, _ in batch.records],
                                                 batch.source, self.max_record_bytes)
        marks = [None] * len(batch.records)
        for index in taken:
            marks[index] = True
        return (columns.to_bytes() if columns is not None else None), marks


class DecodeRecords(beam.PTransform):
    """RawBatch -> EventBatches (main `events`), `dead_letter`, `tally`. `columnar`: see
    DecodeBatch (the batch graph sets it)."""

    def __init__(self, max_record_bytes: int, columnar: bool = False):
        super().__init__()
        self.max_record_bytes = max_record_bytes
        self.columnar = columnar

    def expand(self, batches):
        return batches | "Decode" >> beam.ParDo(
            DecodeBatch(self.max_record_bytes, self.columnar)).with_output_types(
            EventBatch).with_outputs(
            DEAD_LETTER, TALLY, main="events")
