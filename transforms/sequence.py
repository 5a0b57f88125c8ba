"""Sequencing per (exchange, market, symbol) with Beam's State API and timers.

Batch runners hand a key's elements to a stateful DoFn in no particular order, and a whole month of
one symbol does not fit in memory. So each decoded batch is cut into runs by update id and written
to the work folder as chunks (SpillRuns); the stateful DoFn collects only the small chunk references
in a BagState and, when the end-of-window timer fires, replays the runs in id order, each run read
back and sorted in memory on its own: memory per key is one run, and no shuffle carries events. In streaming, events arrive one by one: out-of-order ones wait in a BagState for at
most --reorder_timeout (processing-time timer) or --max_buffered_events; a medium gap's recovery
deadline is an event-time timer; a silent symbol trips a processing-time stall timer. Both paths feed
the same state machine (beam_pipeline/sequencer.py), so they give the same answers for the same data.

Only ReadModifyWrite and Bag state are used: both work on Dataflow Runner v2, Flink and Direct.
"""
from __future__ import annotations

import logging
import re
import typing
import traceback
import uuid
from collections import Counter, defaultdict

import apache_beam as beam
import msgspec
from apache_beam.coders import BytesCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec, TimerSpec,
                                              on_timer)
from apache_beam.utils.timestamp import Duration, Timestamp

from beam_pipeline.epochs import canonical_order, chunks_min_time, replay_in_epoch_order
from beam_pipeline.model import (CorruptPeriod, DeadLetter, ErrorEvent, Event, RunRef, events_of,
                                 sort_canonically, stream_name)
from beam_pipeline.sequencer import (CLEAN, CORRUPT, DUPLICATE, ERROR, GAP, LATE, POISON, RECOVERY,
                                     STATE_VERSION, SUPERSEDED, Policy, SequencerState,
                                     StreamSequencer)
from beam_pipeline.runtime import tune_gc_for_bulk_work
from beam_pipeline.tables import clean_table, write_clean_part
from transforms.read import DEAD_LETTER, TALLY, now_ms

CLEAN_ROWS, GAPS, CORRUPT_PERIODS, RECOVERY_REQUESTS, ERRORS = (
    "clean", "gaps", "corrupt_periods", "recovery_requests", "errors")
_TAG_OF = {GAP: GAPS, CORRUPT: CORRUPT_PERIODS, RECOVERY: RECOVERY_REQUESTS, ERROR: ERRORS}

_events_codec = msgspec.msgpack.Decoder(list[Event])
_event_codec = msgspec.msgpack.Decoder(Event)
_state_codec = msgspec.msgpack.Decoder(SequencerState)
_run_codec = msgspec.msgpack.Decoder(RunRef)
_encode = msgspec.msgpack.Encoder().encode


class StreamState(msgspec.Struct):
    """What the streaming wrapper keeps beside the machine's own state."""

    waiting: int = 0               # events in the reorder buffer
    stalled: bool = False
    recovery_timer: int = -1       # deadline the recovery timer is set for
    processing_floor: int = 0      # µs: processing time is at least when our last such timer fired


class StoredState(msgspec.Struct):
    machine: SequencerState
    stream: StreamState
    version: int = STATE_VERSION


_stored_codec = msgspec.msgpack.Decoder(StoredState)


# ---- batch prelude: runs spilled to the work folder ------------------------------------------

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
        for event in events_of(batch):      # a flat tuple: Event.key would build one more per event
            runs[(event.exchange, event.market, event.symbol, event.last_id // span)].append(event)
        for (exchange, market, symbol, run_index), run_events in runs.items():
            key = (exchange, market, symbol)
            path = "/".join([self.work_dir, "runs", *map(_safe, key), f"{run_index:012d}",
                             f"{uuid.uuid4().hex}.msgpack"])
            with FileSystems.create(path) as handle:
                handle.write(_encode(run_events))
            yield key, RunRef(run_index, path, len(run_events),
                              min(map(Event.time.fget, run_events)))


def read_run(refs) -> list:
    """All chunks of one run, in canonical order (chunks are in arrival order, so mostly sorted
    already: Python's sort merges such runs in close to linear time)."""
    events = []
    for ref in refs:
        with FileSystems.open(ref.path) as handle:
            events.extend(_events_codec.decode(handle.read()))
    return sort_canonically(events)


def runs_in_order(refs) -> list:
    """Chunk references -> one list of references per run, runs in id order."""
    by_run = defaultdict(list)
    for ref in refs:
        by_run[ref.run_index].append(ref)
    return [by_run[index] for index in sorted(by_run)]


# ---- the stateful DoFn -----------------------------------------------------------------------

class _BagStore:
    """The machine's held-delta store over a BagState."""

    def __init__(self, bag):
        self.bag = bag

    def add(self, event):
        self.bag.add(_encode(event))

    def read(self):
        return [_event_codec.decode(blob) for blob in self.bag.read()]

    def clear(self):
        self.bag.clear()


class SequencerDoFn(beam.DoFn):
    """Batch: (key, RunRef) -> clean rows, gaps, corrupt periods, recovery requests, error events,
    dead letters and tallies. Only event-time timers: a processing-time timer would push the whole
    batch job off Beam's fast FnApiRunner onto the slow bundle-based DirectRunner."""

    STATE = ReadModifyWriteStateSpec("state", BytesCoder())
    HELD = BagStateSpec("held", BytesCoder())
    RUNS = BagStateSpec("runs", BytesCoder())
    END_OF_INPUT = TimerSpec("end_of_input", TimeDomain.WATERMARK)

    def __init__(self, policy: Policy, work_dir: str = None):
        """`work_dir`: where the batch sequencer writes clean parts; None emits Arrow tables."""
        self.policy = policy
        self.work_dir = work_dir.rstrip("/") if work_dir else None
        self._part = 0

    def setup(self):
        tune_gc_for_bulk_work()

    # -- state helpers --

    def _load(self, key, state_cell, held_bag, waiting_bag=None):
        """The key's state; state from another schema version restarts the key (state_reset):
        the events its bags hold are in that version's encoding, so each becomes a state_reset
        dead letter with its stored bytes (accounted for, and replayable by that version)."""
        blob, outputs = state_cell.read(), []
        stored = None
        if blob is not None:
            try:
                stored = _stored_codec.decode(blob)
                if stored.version != STATE_VERSION:
                    raise ValueError(f"state version {stored.version}, expected {STATE_VERSION}")
            except (msgspec.DecodeError, ValueError) as error:
                stored = None
                outputs.append(self._state_reset(key, str(error)))
                outputs.extend(_unreadable_events(key, [held_bag, waiting_bag], str(error)))
        stored = stored or StoredState(SequencerState(), StreamState())
        machine = StreamSequencer(key, self.policy, stored.machine, _BagStore(held_bag))
        return stored, machine, outputs

    def _state_reset(self, key, why):
        """The key's earlier state cannot be read (`why`): what came before is in doubt."""
        logging.getLogger(__name__).warning("%s: state reset: %s", stream_name(key), why)
        return beam.pvalue.TaggedOutput(CORRUPT_PERIODS, CorruptPeriod(
            *key, start_id=0, end_id=0, start_time=None, end_time=now_ms(), reason="state_reset"))

    @staticmethod
    def _save(state_cell, stored):
        state_cell.write(_encode(stored))

    def _outputs(self, machine, first_seen):
        """Machine outputs -> tagged outputs; clean rows travel as one Arrow table per call."""
        clean, counts = [], Counter()
        for tag, value in machine.take_output():
            if tag == CLEAN:
                clean.append(value)
            elif tag in (DUPLICATE, SUPERSEDED):
                counts["duplicates" if tag == DUPLICATE else "superseded"] += 1
            elif tag == LATE:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, _late_letter(value))
            elif tag == POISON:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, _poison_letter(*value))
            else:
                yield beam.pvalue.TaggedOutput(_TAG_OF[tag], value)
        if clean:
            counts["clean_records"] += len(clean)
            yield beam.pvalue.TaggedOutput(CLEAN_ROWS, self._clean_output(machine, clean))
        if first_seen:
            counts["symbols"] += 1
        for name, count in counts.items():
            yield beam.pvalue.TaggedOutput(TALLY, (name, count))

    def _clean_output(self, machine, clean: list):
        """Clean rows as a table; in batch written to the work folder as a part (named by key and
        replay order, so a retried replay rewrites the same files) and only the part emitted."""
        table = clean_table(clean)
        if self.work_dir is None:
            return table
        self._part += 1
        name = "-".join(map(_safe, machine.key)) + f"-{self._part:06d}.parquet"
        path = f"{self.work_dir}/clean/{name}"
        return write_clean_part(table, path, machine.symbol)

    def _poison(self, stage, key, payload: bytes, source: str):
        return beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter(
            "processing_error", traceback.format_exc()[-8000:], stage, payload, source, now_ms(),
            symbol=stream_name(key)))

    # -- elements --

    def process(self, element,
                runs_bag=beam.DoFn.StateParam(RUNS),
                end_timer=beam.DoFn.TimerParam(END_OF_INPUT),
                window=beam.DoFn.WindowParam):
        """Remember the chunk; all runs are replayed in id order once the input has ended."""
        _, ref = element
        runs_bag.add(_encode(ref))
        end_timer.set(window.max_timestamp())

    # -- timers --

    @on_timer(END_OF_INPUT)
    def end_of_input(self, key=beam.DoFn.KeyParam,
                     state_cell=beam.DoFn.StateParam(STATE),
                     held_bag=beam.DoFn.StateParam(HELD),
                     runs_bag=beam.DoFn.StateParam(RUNS)):
        """Batch: replay the key's sorted runs in canonical order (id order; after an id reset,
        epochs in time order: beam_pipeline/epochs.py), then close any wait still open.

        The key's outputs are emitted only once its whole replay has succeeded (they are small:
        clean rows are Parquet parts in the work folder, emitted as references). If the replay
        raises (a bug: the machine sets a raising event aside on its own), nothing of the key has
        been emitted, so every one of its events becomes a processing_error dead letter with the
        trace and the job goes on. An OSError (the work folder) fails the bundle: the runner
        retries it, or the job stops with the error."""
        self._part = 0
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
        stored, machine, outputs = self._load(key, state_cell, held_bag)
        yield from outputs
        first_seen = not stored.machine.seen
        for events in replay_in_epoch_order(runs_in_order(refs), read_run,
                                            self.policy.medium_gap_max, chunks_min_time):
            machine.feed_all(events)
            yield from self._outputs(machine, first_seen)
            first_seen = False
        machine.finish()
        yield from self._outputs(machine, False)
        self._save(state_cell, stored)

    def _replay_failed(self, key, refs, held_bag):
        trace = traceback.format_exc()
        logging.getLogger(__name__).error("%s: replay failed, its events are dead letters:\n%s",
                                          stream_name(key), trace)
        held_bag.clear()
        for ref in refs:
            for event in read_run([ref]):
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTER, _poison_letter(event, trace, "sequence.end_of_input"))


class LiveSequencerDoFn(SequencerDoFn):
    """Streaming: (key, Event) one at a time. Adds the reorder buffer (processing-time timer), the
    recovery deadline (event-time timer) and stall detection (processing-time timer)."""

    WAITING = BagStateSpec("waiting", BytesCoder())
    RECOVERY = TimerSpec("recovery", TimeDomain.WATERMARK)
    REORDER = TimerSpec("reorder", TimeDomain.REAL_TIME)
    STALL = TimerSpec("stall", TimeDomain.REAL_TIME)
    END_OF_STREAM = TimerSpec("end_of_stream", TimeDomain.WATERMARK)
    STATE, HELD = SequencerDoFn.STATE, SequencerDoFn.HELD

    def __init__(self, policy: Policy, reorder_timeout_s: float = 2.0, stall_timeout_s: float = 30.0,
                 clock=Timestamp.now):
        """`clock` gives the processing time timers are set from. Beam's Python SDK does not hand
        it to process(); the wall clock is right on real runners, and tests with TestStream (whose
        processing time starts at 0) pass a clock of their own."""
        super().__init__(policy)
        self.reorder_wait = Duration(seconds=reorder_timeout_s)
        self.stall_wait = Duration(seconds=stall_timeout_s)
        self.clock = clock

    def process(self, element,
                state_cell=beam.DoFn.StateParam(STATE),
                held_bag=beam.DoFn.StateParam(HELD),
                waiting_bag=beam.DoFn.StateParam(WAITING),
                recovery_timer=beam.DoFn.TimerParam(RECOVERY),
                reorder_timer=beam.DoFn.TimerParam(REORDER),
                stall_timer=beam.DoFn.TimerParam(STALL),
                end_timer=beam.DoFn.TimerParam(END_OF_STREAM),
                window=beam.DoFn.WindowParam):
        key, value = element
        end_timer.set(window.max_timestamp())
        try:
            yield from self._process_event(key, value, state_cell, held_bag, waiting_bag,
                                           recovery_timer, reorder_timer, stall_timer)
        except Exception:  # a poison event must not crash-loop its key: dead-letter it, keep state
            yield self._poison("sequence", key, value.to_json(), value.source)

    def _process_event(self, key, event, state_cell, held_bag, waiting_bag, recovery_timer,
                       reorder_timer, stall_timer):
        stored, machine, outputs = self._load(key, state_cell, held_bag, waiting_bag)
        yield from outputs
        first_seen = not stored.machine.seen
        stream = stored.stream
        if stream.stalled:
            stream.stalled = False
            machine.out.append((ERROR, ErrorEvent("stall_resolved", machine.symbol, event.time)))
        if stream.waiting == 0 and machine.is_next(event):
            machine.feed(event)
        else:
            self._wait(machine, stream, event, waiting_bag, reorder_timer)
        self._arm_recovery(machine, stream, recovery_timer)
        stall_timer.set(self._now(stream) + self.stall_wait)
        self._save(state_cell, stored)
        yield from self._outputs(machine, first_seen)

    def _now(self, stream: StreamState) -> Timestamp:
        return max(self.clock(), Timestamp(micros=stream.processing_floor))

    def _wait(self, machine, stream, event, waiting_bag, reorder_timer):
        """Reorder buffer: keep `event` until the ids before it arrive, then feed the ready prefix."""
        if stream.waiting == 0:
            reorder_timer.set(self._now(stream) + self.reorder_wait)
        pending = canonical_order([_event_codec.decode(b) for b in waiting_bag.read()] + [event],
                                  self.policy.medium_gap_max)
        ready = 0
        while ready < len(pending) and machine.is_next(pending[ready]):
            machine.feed(pending[ready])
            ready += 1
        rest = pending[ready:]
        if len(rest) > self.policy.max_buffered_events:
            machine.out.append((ERROR, ErrorEvent("reorder_overflow", machine.symbol, event.time)))
            machine.feed_all(rest)     # declare the gap now rather than grow state without limit
            rest = []
        waiting_bag.clear()
        for waiting in rest:
            waiting_bag.add(_encode(waiting))
        stream.waiting = len(rest)

    def _arm_recovery(self, machine, stream, recovery_timer):
        deadline = machine.deadline()
        if deadline is not None and deadline != stream.recovery_timer:
            recovery_timer.set(Timestamp(micros=(deadline + 1) * 1000))
            stream.recovery_timer = deadline

    def _run_timer(self, stage: str, key, state_cell, held_bag, body, waiting_bag=None):
        """A timer's work on the key's state: load it, run `body(stored, machine)` (which may
        return extra outputs), save, then emit. On an exception the stored state stays as it was
        and the bundle goes on (a bad key must not fail it again and again): the events the timer
        was to process (`waiting_bag`) become processing_error dead letters with the stack trace,
        so each stays accounted for exactly once; a timer with no events of its own is reported
        as a `timer_error` error event and logged with its trace."""
        try:
            stored, machine, outputs = self._load(key, state_cell, held_bag, waiting_bag)
            yield from outputs
            extra = body(stored, machine) or ()
            self._save(state_cell, stored)
            yield from extra
            yield from self._outputs(machine, False)
        except Exception:
            yield from self._timer_failed(f"sequence.{stage}", key, state_cell, held_bag,
                                          waiting_bag)

    def _timer_failed(self, stage: str, key, state_cell, held_bag, waiting_bag):
        trace = traceback.format_exc()
        logging.getLogger(__name__).error("%s: %s failed:\n%s", stream_name(key), stage, trace)
        try:
            waiting = [_event_codec.decode(blob) for blob in waiting_bag.read()] if waiting_bag else []
            if waiting_bag:
                waiting_bag.clear()
        except Exception:      # the buffer itself is unreadable: nothing more can be saved
            waiting = []
        for event in waiting:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, _poison_letter(event, trace, stage))
        if waiting:
            try:                   # the buffer is empty now: so must the stored count be
                stored, _, _ = self._load(key, state_cell, held_bag)
                stored.stream.waiting = 0
                self._save(state_cell, stored)
            except Exception:
                pass               # unreadable state: the next element resets the key anyway
        else:
            yield beam.pvalue.TaggedOutput(ERRORS, ErrorEvent("timer_error", stream_name(key),
                                                              now_ms()))

    def _take_waiting(self, stored, waiting_bag) -> list:
        """The reorder buffer's events in canonical order; the buffer is emptied."""
        waiting = canonical_order((_event_codec.decode(b) for b in waiting_bag.read()),
                                  self.policy.medium_gap_max)
        waiting_bag.clear()
        stored.stream.waiting = 0
        return waiting

    @on_timer(RECOVERY)
    def recovery_deadline(self, key=beam.DoFn.KeyParam,
                          fired=beam.DoFn.TimestampParam,
                          state_cell=beam.DoFn.StateParam(STATE),
                          held_bag=beam.DoFn.StateParam(HELD),
                          recovery_timer=beam.DoFn.TimerParam(RECOVERY)):
        """Streaming: event time passed a medium gap's deadline with no snapshot."""
        def body(stored, machine):
            machine.advance_watermark(fired.micros // 1000)
            stored.stream.recovery_timer = -1
            self._arm_recovery(machine, stored.stream, recovery_timer)
        yield from self._run_timer("recovery", key, state_cell, held_bag, body)

    @on_timer(REORDER)
    def reorder_timeout(self, key=beam.DoFn.KeyParam,
                        fired=beam.DoFn.TimestampParam,
                        state_cell=beam.DoFn.StateParam(STATE),
                        held_bag=beam.DoFn.StateParam(HELD),
                        waiting_bag=beam.DoFn.StateParam(WAITING),
                        recovery_timer=beam.DoFn.TimerParam(RECOVERY)):
        """Streaming: the missing ids did not come in time; the waiting events reveal the gap."""
        def body(stored, machine):
            pending = self._take_waiting(stored, waiting_bag)
            stored.stream.processing_floor = fired.micros
            machine.feed_all(pending)
            self._arm_recovery(machine, stored.stream, recovery_timer)
        yield from self._run_timer("reorder", key, state_cell, held_bag, body, waiting_bag)

    @on_timer(STALL)
    def stall(self, key=beam.DoFn.KeyParam,
              fired=beam.DoFn.TimestampParam,
              state_cell=beam.DoFn.StateParam(STATE),
              held_bag=beam.DoFn.StateParam(HELD)):
        """Streaming: the symbol has been silent for --stall_timeout."""
        def body(stored, machine):
            stored.stream.stalled = True
            stored.stream.processing_floor = fired.micros
            return [beam.pvalue.TaggedOutput(ERRORS, ErrorEvent(
                "stall", machine.symbol, stored.machine.last_time or now_ms()))]
        yield from self._run_timer("stall", key, state_cell, held_bag, body)

    @on_timer(END_OF_STREAM)
    def end_of_stream(self, key=beam.DoFn.KeyParam,
                      state_cell=beam.DoFn.StateParam(STATE),
                      held_bag=beam.DoFn.StateParam(HELD),
                      waiting_bag=beam.DoFn.StateParam(WAITING),
                      recovery_timer=beam.DoFn.TimerParam(RECOVERY),
                      reorder_timer=beam.DoFn.TimerParam(REORDER),
                      stall_timer=beam.DoFn.TimerParam(STALL)):
        """The watermark reached the end of time: a bounded input is exhausted (or a drain). Feed
        the waiting events, close any wait (no snapshot can come any more) and clear the
        processing-time timers. Without this a bounded streaming run on Flink never ends: Beam
        Java's operator does not fire pending processing-time timers at the end of input, and their
        watermark holds keep the job alive. Never fires in a live unbounded run."""
        def body(stored, machine):
            machine.feed_all(self._take_waiting(stored, waiting_bag))
            machine.finish()
            stored.stream.recovery_timer = -1
            for timer in (reorder_timer, stall_timer, recovery_timer):
                timer.clear()
        yield from self._run_timer("end_of_stream", key, state_cell, held_bag, body, waiting_bag)


def _poison_letter(event: Event, trace: str, stage: str = "sequence") -> DeadLetter:
    return DeadLetter("processing_error", trace[-8000:], stage, event.to_json(),
                      event.source, now_ms(), symbol=stream_name(event.key),
                      first_id=_int_or_none(event.first_id), last_id=_int_or_none(event.last_id))


def _int_or_none(value):
    return value if isinstance(value, int) else None


def _unreadable_events(key, bags, why: str):
    """Dead letters for the stored events of a key whose state is being reset; the bags emptied."""
    for bag in filter(None, bags):
        for blob in bag.read():
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter(
                "state_reset", f"held in state that cannot be read: {why}", "sequence", blob,
                stream_name(key), now_ms(), symbol=stream_name(key)))
        bag.clear()


def _late_letter(event: Event) -> DeadLetter:
    return DeadLetter("late_event", "arrived after the gap it would have filled was declared",
                      "sequence", event.to_json(), event.source, now_ms(),
                      symbol=stream_name(event.key), first_id=event.first_id, last_id=event.last_id)


class SequenceFeeds(beam.PTransform):
    """EventBatches (or lists of Events) -> outputs clean (Arrow tables in tables.CLEAN_SCHEMA; in batch CleanParts,
    the same written to the work folder), gaps,
    corrupt_periods, recovery_requests, errors, dead_letter, tally."""

    def __init__(self, policy: Policy, streaming: bool, work_dir: str = None,
                 run_span_ids: int = 100_000, reorder_timeout_s: float = 2.0,
                 stall_timeout_s: float = 30.0, clock=Timestamp.now):
        super().__init__()
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
            keyed = event_lists | "KeyBySymbol" >> beam.FlatMap(
                lambda batch: (beam.window.TimestampedValue((event.key, event), event.time / 1000)
                               for event in events_of(batch)))
        else:
            keyed = event_lists | "SpillRuns" >> beam.ParDo(
                SpillRuns(self.work_dir, self.run_span_ids))
        if self.streaming:
            sequencer = LiveSequencerDoFn(self.policy, self.reorder_timeout_s,
                                          self.stall_timeout_s, self.clock)
        else:
            sequencer = SequencerDoFn(self.policy, self.work_dir)
        keyed = keyed | "TypedKeys" >> beam.Map(lambda kv: kv).with_output_types(
            typing.Tuple[typing.Tuple[str, str, str], typing.Any])
        return keyed | "Sequence" >> beam.ParDo(sequencer).with_outputs(
            CLEAN_ROWS, GAPS, CORRUPT_PERIODS, RECOVERY_REQUESTS, ERRORS, DEAD_LETTER, TALLY)
