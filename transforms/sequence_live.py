"""Live sequencing (streaming): events one at a time, a reorder buffer, timers.

Out-of-order events wait in a BagState for at most --reorder_timeout (processing-time timer) or
--max_buffered_events; a medium gap's recovery deadline is an event-time timer; a silent symbol
trips a processing-time stall timer. The batch sequencer (transforms/sequence_batch.py) is a sibling
over the same state machine and stored state (transforms/sequence_state.py), so both give the same
answers for the same data.
"""
from __future__ import annotations

import logging
import traceback

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec, TimerSpec,
                                              on_timer)
from apache_beam.utils.timestamp import Duration, Timestamp

from beam_pipeline.core.epochs import canonical_order
from beam_pipeline.core.model import ErrorEvent, stream_name
from beam_pipeline.core.runtime import now_ms
from beam_pipeline.core.reasons import ErrorType, Outcome
from beam_pipeline.core.sequencer import Policy
from transforms import sequence_state as keyed
from transforms.tables import clean_table
from transforms.tags import DEAD_LETTER, ERRORS


class LiveSequencerDoFn(beam.DoFn):
    """Streaming: (key, Event) one at a time. Adds the reorder buffer (processing-time timer), the
    recovery deadline (event-time timer) and stall detection (processing-time timer)."""

    STATE = ReadModifyWriteStateSpec("state", BytesCoder())
    HELD = BagStateSpec("held", BytesCoder())
    WAITING = BagStateSpec("waiting", BytesCoder())
    RECOVERY = TimerSpec("recovery", TimeDomain.WATERMARK)
    REORDER = TimerSpec("reorder", TimeDomain.REAL_TIME)
    STALL = TimerSpec("stall", TimeDomain.REAL_TIME)
    END_OF_STREAM = TimerSpec("end_of_stream", TimeDomain.WATERMARK)

    def __init__(self, policy: Policy, reorder_timeout_s: float, stall_timeout_s: float,
                 clock=Timestamp.now):
        """`clock` gives the processing time timers are set from. Beam's Python SDK does not hand
        it to process(); the wall clock is right on real runners, and tests with TestStream (whose
        processing time starts at 0) pass a clock of their own."""
        self.policy = policy
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
            yield keyed.poison("sequence", key, value.to_json(), value.source)

    def _process_event(self, key, event, state_cell, held_bag, waiting_bag, recovery_timer,
                       reorder_timer, stall_timer):
        stored, machine, outputs = keyed.load(key, self.policy, state_cell, held_bag, waiting_bag)
        yield from outputs
        first_seen = not stored.machine.seen
        stream = stored.stream
        if stream.stalled:
            stream.stalled = False
            machine.out.append((Outcome.ERRORS, ErrorEvent(ErrorType.STALL_RESOLVED, machine.symbol,
                                                           event.time)))
        if stream.waiting == 0 and machine.is_next(event):
            machine.feed(event)
        else:
            self._wait(machine, stream, event, waiting_bag, reorder_timer)
        self._arm_recovery(machine, stream, recovery_timer)
        stall_timer.set(self._now(stream) + self.stall_wait)
        keyed.save(state_cell, stored)
        yield from self._outputs(machine, first_seen)

    @staticmethod
    def _outputs(machine, first_seen):
        """Clean rows travel as one Arrow table per call."""
        return keyed.tagged_outputs(machine, first_seen, lambda _, rows: clean_table(rows))

    def _now(self, stream: StreamState) -> Timestamp:
        return max(self.clock(), Timestamp(micros=stream.processing_floor))

    def _wait(self, machine, stream, event, waiting_bag, reorder_timer):
        """Reorder buffer: keep `event` until the ids before it arrive, then feed the ready prefix."""
        if stream.waiting == 0:
            reorder_timer.set(self._now(stream) + self.reorder_wait)
        pending = canonical_order([keyed.event_codec.decode(b) for b in waiting_bag.read()] + [event],
                                  self.policy.reset_min_jump_ids)
        ready = 0
        while ready < len(pending) and machine.is_next(pending[ready]):
            machine.feed(pending[ready])
            ready += 1
        rest = pending[ready:]
        if len(rest) > self.policy.max_buffered_events:
            machine.out.append((Outcome.ERRORS, ErrorEvent(ErrorType.REORDER_OVERFLOW, machine.symbol,
                                                           event.time)))
            machine.feed_all(rest)     # declare the gap now rather than grow state without limit
            rest = []
        waiting_bag.clear()
        for waiting in rest:
            waiting_bag.add(keyed.encode(waiting))
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
            stored, machine, outputs = keyed.load(key, self.policy, state_cell, held_bag, waiting_bag)
            yield from outputs
            extra = body(stored, machine) or ()
            keyed.save(state_cell, stored)
            yield from extra
            yield from self._outputs(machine, False)
        except Exception:
            yield from self._timer_failed(f"sequence.{stage}", key, state_cell, held_bag,
                                          waiting_bag)

    def _timer_failed(self, stage: str, key, state_cell, held_bag, waiting_bag):
        trace = traceback.format_exc()
        logging.getLogger(__name__).error("%s: %s failed:\n%s", stream_name(key), stage, trace)
        try:
            waiting = [keyed.event_codec.decode(blob) for blob in waiting_bag.read()] if waiting_bag else []
            if waiting_bag:
                waiting_bag.clear()
        except Exception:      # the buffer itself is unreadable: nothing more can be saved
            waiting = []
        for event in waiting:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, keyed.poison_letter(event, trace, stage))
        if waiting:
            try:                   # the buffer is empty now: so must the stored count be
                stored, _, _ = keyed.load(key, self.policy, state_cell, held_bag)
                stored.stream.waiting = 0
                keyed.save(state_cell, stored)
            except Exception:
                pass               # unreadable state: the next element resets the key anyway
        else:
            yield keyed.timer_error(key)

    def _take_waiting(self, stored, waiting_bag) -> list:
        """The reorder buffer's events in canonical order; the buffer is emptied."""
        waiting = canonical_order((keyed.event_codec.decode(b) for b in waiting_bag.read()),
                                  self.policy.reset_min_jump_ids)
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
                ErrorType.STALL, machine.symbol, stored.machine.last_time or now_ms()))]
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
