"""Live sequencing (streaming): one key's events per message, a reorder buffer, timers.

A gap may be declared only when the records that could fill it can no longer arrive. For Pub/Sub
input every element carries its message's publish time and is stamped with it, so the runner's own
watermark says how far the input has been read *and sequenced*: it stays behind every message
still unpulled (Dataflow estimates it from the subscription's backlog; on DirectRunner our profile
derives it from the publish times it pulls, runners/direct.py) and behind every record still in
flight inside the pipeline. Out-of-order events therefore wait for an event-time timer at
publish time + --reorder_timeout: whether the job drains an hour of backlog, is live, or gets a
burst, a gap is declared once everything published up to that point has been sequenced, which is
what makes the answer equal the batch run's. A medium gap's wait ends by the data as in batch (a
snapshot in time, or a later event past its deadline), or when the watermark passes the revealing
message's publish time + --recovery_timeout. Followed files (--watch_seconds, transforms/follow.py)
carry a publish time too: their records' receive time + --quiet_seconds, on a watermark of the last
listing. Input without publish times (files read once, TestStream) keeps processing-time reorder
waits and event-time deadlines. Both sides bound the buffer by
--max_buffered_events. A silent symbol trips a processing-time stall timer.

The batch sequencer (transforms/sequence_batch.py) is a sibling over the same state machine and
stored state (transforms/sequence_state.py).
"""
from __future__ import annotations

import logging
import traceback

import apache_beam as beam
import msgspec
from apache_beam.coders import BytesCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec, TimerSpec,
                                              on_timer)
from apache_beam.utils.timestamp import Duration, Timestamp

from beam_pipeline.core import durability, runtime
from beam_pipeline.core.columns import events_of
from beam_pipeline.core.epochs import canonical_order
from beam_pipeline.core.model import ErrorEvent, Event, stream_name
from beam_pipeline.core.runtime import now_ms
from beam_pipeline.core.reasons import ErrorType, Outcome
from beam_pipeline.core.sequencer import Policy, resumed
from transforms import book_cache
from transforms import sequence_state as keyed
from transforms.cursors import save_cursor
from transforms.tables import clean_table
from transforms.tags import DEAD_LETTER, ERRORS


class Waiting(msgspec.Struct, array_like=True):
    """An event in the reorder buffer, with the publish time of the message it came in (0: none)."""

    published: int
    event: Event


_waiting_codec = msgspec.msgpack.Decoder(Waiting)


def _ms(timestamp: Timestamp) -> int:
    return timestamp.micros // 1000


def _report_hold(key, stored, published: int) -> None:
    """Tell this process's durability ledger whether the key holds events, and from which
    message at the oldest (DirectRunner acknowledges Pub/Sub messages by it: core/durability.py)."""
    if stored.stream.waiting or stored.machine.hold is not None:
        durability.hold(key, published)
    else:
        durability.release(key)


class LiveSequencerDoFn(beam.DoFn):
    """Streaming: (key, EventBatch of that key's events from one message). Adds the reorder buffer,
    the recovery deadline and stall detection to the state machine."""

    STATE = ReadModifyWriteStateSpec("state", BytesCoder())
    HELD = BagStateSpec("held", BytesCoder())
    WAITING = BagStateSpec("waiting", BytesCoder())
    RECOVERY = TimerSpec("recovery", TimeDomain.WATERMARK)
    REORDER = TimerSpec("reorder", TimeDomain.REAL_TIME)
    REORDER_PUBLISHED = TimerSpec("reorder_published", TimeDomain.WATERMARK)
    STALL = TimerSpec("stall", TimeDomain.REAL_TIME)
    STATUS_SNAPSHOT = TimerSpec("status", TimeDomain.REAL_TIME)
    END_OF_STREAM = TimerSpec("end_of_stream", TimeDomain.WATERMARK)

    def __init__(self, policy: Policy, reorder_timeout_s: float, stall_timeout_s: float,
                 clock=Timestamp.now, resume=None, cursor_folder: str = None,
                 book_checks: bool = False, status_seconds: float = None,
                 book_snapshots=None):
        """`clock` gives the processing time timers are set from. Beam's Python SDK does not hand
        it to process(); the wall clock is right on real runners, and tests with TestStream (whose
        processing time starts at 0) pass a clock of their own. `resume`: {key: SequencerState}
        saved by this job's last stop, each key's start when it has no state yet (a restart);
        `cursor_folder`: where the end of the input saves every key's cursor (transforms/cursors.py);
        `book_checks`: rebuild and check each key's book (core/books/watch.py), kept in this
        process's memory under a version the key's state carries (transforms/book_cache.py);
        `status_seconds`: a key whose state changed writes its status (status/) this long after
        the change, at most once per such period (--output_flush_seconds: one row per changed key
        and flush); None: only when the input ends or the job stops. `book_snapshots`: (levels,
        interval ms) of the books/ rows the key's book gives, or None (implies book_checks)."""
        self.book_checks = book_checks or book_snapshots is not None
        self.book_snapshots = book_snapshots
        self.status_micros = None if status_seconds is None else int(round(status_seconds * 1e6))
        self.resume = {key: resumed(state) for key, state in (resume or {}).items()}
        self.cursor_folder = cursor_folder
        self.policy = policy
        self.reorder_wait = Duration(seconds=reorder_timeout_s)
        self.reorder_ms = int(round(reorder_timeout_s * 1000))
        self.stall_wait = Duration(seconds=stall_timeout_s)
        self.clock = clock

    def process(self, element,
                state_cell=beam.DoFn.StateParam(STATE),
                held_bag=beam.DoFn.StateParam(HELD),
                waiting_bag=beam.DoFn.StateParam(WAITING),
                recovery_timer=beam.DoFn.TimerParam(RECOVERY),
                reorder_timer=beam.DoFn.TimerParam(REORDER),
                published_timer=beam.DoFn.TimerParam(REORDER_PUBLISHED),
                stall_timer=beam.DoFn.TimerParam(STALL),
                status_timer=beam.DoFn.TimerParam(STATUS_SNAPSHOT),
                end_timer=beam.DoFn.TimerParam(END_OF_STREAM),
                window=beam.DoFn.WindowParam):
        """One state load and save for all the key's events of a message: what lets a batched
        message cost little more than one record."""
        key, batch = element
        events = events_of(batch)
        published = getattr(batch, "publish_time", 0)
        end_timer.set(window.max_timestamp())
        cells = (state_cell, held_bag, waiting_bag, recovery_timer, reorder_timer,
                 published_timer, stall_timer, status_timer)
        try:
            outputs = list(self._process_events(key, events, published, *cells))
        except Exception:  # retry one event at a time: only an event that raises is set aside
            logging.getLogger(__name__).warning("%s: a batch of %d events failed, retried one by one:"
                                                "\n%s", stream_name(key), len(events),
                                                traceback.format_exc())
            outputs = list(self._process_one_by_one(key, events, published, *cells))
        yield from outputs

    def _process_one_by_one(self, key, events, published, *cells):
        for event in events:
            try:
                yield from list(self._process_events(key, [event], published, *cells))
            except Exception:  # a poison event must not crash-loop its key: dead-letter it
                yield keyed.poison("sequence", key, event.to_json(), event.source)

    def _process_events(self, key, events, published, state_cell, held_bag, waiting_bag,
                        recovery_timer, reorder_timer, published_timer, stall_timer, status_timer):
        stored, machine, outputs = keyed.load(key, self.policy, state_cell, held_bag, waiting_bag,
                                              self.resume.get(tuple(key)))
        yield from outputs
        first_seen = not stored.machine.seen
        stream = stored.stream
        now = self._now(stream)
        if stream.stalled:
            stream.stalled = False
            machine.out.append((Outcome.ERRORS, ErrorEvent(ErrorType.STALL_RESOLVED, machine.symbol,
                                                           events[0].time)))
        ready = 0
        if stream.waiting == 0:
            while ready < len(events) and self._next(machine, events[ready], published, None):
                machine.feed(events[ready])
                ready += 1
        if ready < len(events):
            timer = published_timer if published else reorder_timer
            self._wait(machine, stream, events[ready:], published, waiting_bag, timer, now)
        self._arm_recovery(machine, stream, recovery_timer, published)
        stall_timer.set(now + self.stall_wait)
        self._arm_status(stream, status_timer, now)
        books = self._checkout(key, stored)
        outputs = list(self._outputs(machine, first_seen, books))
        if books is not None:                        # before the save: the counts are in state
            keyed.count_book_checks(stream, outputs)
        keyed.save(state_cell, stored)
        _report_hold(key, stored, published)
        yield from outputs
        self._checkin(key, stored, books)

    @staticmethod
    def _outputs(machine, first_seen, books=None):
        """Clean rows travel as one Arrow table per call."""
        return keyed.tagged_outputs(machine, first_seen,
                                    lambda machine, rows: clean_table(rows, machine.key), books)

    def _checkout(self, key, stored):
        """--book_checks: the key's book at the version its state has; the next version is stored
        (before the state is saved), and the book checked in at it once its outputs are seen."""
        if not self.book_checks:
            return None
        watch, stored.stream.book_version = book_cache.checkout(key, stored.stream.book_version,
                                                                self.book_snapshots)
        return watch

    @staticmethod
    def _checkin(key, stored, books):
        if books is not None:
            book_cache.checkin(key, stored.stream.book_version, books)

    def _arm_status(self, stream, status_timer, now: Timestamp) -> None:
        """The key changed: its status is written once --output_flush_seconds have passed (one
        timer per key and period, however many messages came). A due time long past is a timer
        that will not fire (its run failed before the state was saved): set again."""
        if self.status_micros is None or status_timer is None:
            return
        due = now.micros + self.status_micros
        if not stream.status_due or stream.status_due + self.status_micros < now.micros:
            status_timer.set(Timestamp(micros=due))
            stream.status_due = due

    def _now(self, stream) -> Timestamp:
        return max(self.clock(), Timestamp(micros=stream.processing_floor))

    # -- the reorder buffer --

    def _wait(self, machine, stream, events, published, waiting_bag, timer, now):
        """Keep `events` until the ids before them arrive. The machine does not move while events
        wait (only a timer moves it, and then it feeds the buffer itself), so only a new event can
        be next: when none is, the new events are appended and the buffer is not read (a backlog
        can hold thousands in it)."""
        if stream.waiting == 0:
            timer.set(Timestamp(micros=(published + self.reorder_ms) * 1000) if published
                      else now + self.reorder_wait)
        overflow = stream.waiting + len(events) > self.policy.max_buffered_events
        if stream.waiting and not overflow and not any(
                self._next(machine, event, published, None) for event in events):
            for event in events:
                waiting_bag.add(keyed.encode(Waiting(published, event)))
            stream.waiting += len(events)
            return
        pending = self._read_waiting(waiting_bag) + [Waiting(published, e) for e in events]
        self._feed(machine, stream, pending, waiting_bag, declare_upto=None)

    def _feed(self, machine, stream, pending, waiting_bag, declare_upto, timer=None):
        """Feed `pending` in canonical order while each event is next. An event that reveals a
        gap is fed too (the gap declared) when its wait is over: it was published at or before
        `declare_upto` (ms: the watermark says everything published up to --reorder_timeout later
        has been sequenced), or it has no publish time and `declare_upto` is given (a
        processing-time wait that ended). What stays is put back; `timer` (when given) is set for
        the next waiting event that will be due."""
        order = canonical_order([w.event for w in pending], self.policy.reset_min_jump_ids)
        published_of = {id(w.event): w.published for w in pending}
        rest = []
        for position, event in enumerate(order):
            if self._next(machine, event, published_of[id(event)], declare_upto):
                machine.feed(event)
                continue
            rest = [Waiting(published_of[id(e)], e) for e in order[position:]]
            break
        if len(rest) > self.policy.max_buffered_events:
            machine.out.append((Outcome.ERRORS, ErrorEvent(ErrorType.REORDER_OVERFLOW, machine.symbol,
                                                           rest[-1].event.time)))
            machine.feed_all(w.event for w in rest)   # declare now rather than grow without limit
            rest = []
        waiting_bag.clear()
        for waiting in rest:
            waiting_bag.add(keyed.encode(waiting))
        stream.waiting = len(rest)
        if rest and timer is not None:
            due = min(w.published for w in rest) + self.reorder_ms
            timer.set(Timestamp(micros=max(due, declare_upto + self.reorder_ms + 1) * 1000))

    def _next(self, machine, event, published: int, declare_upto) -> bool:
        """Is `event` fed now? When its wait is over (_due), or when it is next in line. With
        publish times, a stream that has not started and a wait for a snapshot take nothing out
        of order: a backlog may deliver a later snapshot (a later resync) before the one that
        starts the stream or resolves the wait, and batch would take the earlier one."""
        if self._due(published, declare_upto):
            return True
        if published and (machine.state.cursor is None or machine.state.hold is not None):
            return False
        return machine.is_next(event)

    @staticmethod
    def _due(published: int, declare_upto) -> bool:
        if declare_upto is None:
            return False
        return not published or published <= declare_upto

    @staticmethod
    def _read_waiting(waiting_bag) -> list:
        return [_waiting_codec.decode(blob) for blob in waiting_bag.read()]

    # -- the recovery deadline --

    def _arm_recovery(self, machine, stream, recovery_timer, published: int):
        """A new wait for a snapshot: its deadline is the revealing message's publish time +
        --recovery_timeout (event time + timeout for input without publish times)."""
        deadline = machine.deadline()
        if deadline is None or deadline == stream.recovery_timer:
            return
        fire_ms = published + self.policy.recovery_timeout_ms if published else deadline
        recovery_timer.set(Timestamp(micros=(fire_ms + 1) * 1000))
        stream.recovery_timer = deadline

    # -- timers --

    def _run_timer(self, stage: str, key, state_cell, held_bag, body, waiting_bag=None,
                   final: bool = False, status_timer=None, status: bool = False):
        """A timer's work on the key's state: load it, run `body(stored, machine)` (which may
        return extra outputs), save, then emit. On an exception the stored state stays as it was
        and the bundle goes on (a bad key must not fail it again and again): the events the timer
        was to process (`waiting_bag`) become processing_error dead letters with the stack trace,
        so each stays accounted for exactly once; a timer with no events of its own is reported
        as a `timer_error` error event and logged with its trace. The key's status (status/) is
        written after the timer's outputs when `status` (its snapshot timer) or `final` (the end
        of the input: the last one); any other timer that runs sets the snapshot timer
        (`status_timer`), as a new message does."""
        try:
            stored, machine, outputs = keyed.load(key, self.policy, state_cell, held_bag, waiting_bag)
            yield from outputs          # a state reset's dead letters: out even if the body raises
            first_seen = not stored.machine.seen      # a key's first events may wait for a timer
            outputs = list(body(stored, machine) or ())
            books = self._checkout(key, stored)
            outputs.extend(self._outputs(machine, first_seen, books))
            if books is not None:
                keyed.count_book_checks(stored.stream, outputs)
            if status or final:
                outputs.append(keyed.status_output(machine, books, stored.stream.book_counts,
                                                   stored.stream.waiting))
                stored.stream.status_due = 0
            else:
                self._arm_status(stored.stream, status_timer, self._now(stored.stream))
            if books is not None and final:        # the end of the input: open periods end
                outputs.extend(keyed.book_outputs(books.finish()))
            keyed.save(state_cell, stored)
            _report_hold(key, stored, 0)
            yield from outputs
            self._checkin(key, stored, books)
        except Exception:
            yield from self._timer_failed(f"sequence.{stage}", key, state_cell, held_bag,
                                          waiting_bag)

    def _timer_failed(self, stage: str, key, state_cell, held_bag, waiting_bag):
        trace = traceback.format_exc()
        logging.getLogger(__name__).error("%s: %s failed:\n%s", stream_name(key), stage, trace)
        try:
            waiting = [w.event for w in self._read_waiting(waiting_bag)] if waiting_bag else []
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

    def _release(self, machine, stream, waiting_bag, declare_upto, timer=None):
        """Feed the buffer as far as `declare_upto` allows (see _feed)."""
        if stream.waiting:
            self._feed(machine, stream, self._read_waiting(waiting_bag), waiting_bag,
                       declare_upto, timer)

    @on_timer(REORDER)
    def reorder_timeout(self, key=beam.DoFn.KeyParam,
                        fired=beam.DoFn.TimestampParam,
                        state_cell=beam.DoFn.StateParam(STATE),
                        held_bag=beam.DoFn.StateParam(HELD),
                        waiting_bag=beam.DoFn.StateParam(WAITING),
                        recovery_timer=beam.DoFn.TimerParam(RECOVERY),
                        status_timer=beam.DoFn.TimerParam(STATUS_SNAPSHOT)):
        """Input without publish times: the missing ids did not come within --reorder_timeout of
        processing time; the waiting events reveal the gap."""
        def body(stored, machine):
            stored.stream.processing_floor = fired.micros
            self._release(machine, stored.stream, waiting_bag, declare_upto=_ms(fired))
            self._arm_recovery(machine, stored.stream, recovery_timer, 0)
        yield from self._run_timer("reorder", key, state_cell, held_bag, body, waiting_bag,
                                   status_timer=status_timer)

    @on_timer(REORDER_PUBLISHED)
    def reorder_published(self, key=beam.DoFn.KeyParam,
                          fired=beam.DoFn.TimestampParam,
                          state_cell=beam.DoFn.StateParam(STATE),
                          held_bag=beam.DoFn.StateParam(HELD),
                          waiting_bag=beam.DoFn.StateParam(WAITING),
                          recovery_timer=beam.DoFn.TimerParam(RECOVERY),
                          published_timer=beam.DoFn.TimerParam(REORDER_PUBLISHED),
                          status_timer=beam.DoFn.TimerParam(STATUS_SNAPSHOT)):
        """Every message published up to --reorder_timeout after the first waiting event's has
        been sequenced and the missing ids were not among them: the gap is declared. Waiting
        events published later stay, and the timer is set again for them."""
        def body(stored, machine):
            self._release(machine, stored.stream, waiting_bag, _ms(fired) - self.reorder_ms,
                          published_timer)
            self._arm_recovery(machine, stored.stream, recovery_timer, _ms(fired))
        yield from self._run_timer("reorder", key, state_cell, held_bag, body, waiting_bag,
                                   status_timer=status_timer)

    @on_timer(RECOVERY)
    def recovery_deadline(self, key=beam.DoFn.KeyParam,
                          fired=beam.DoFn.TimestampParam,
                          state_cell=beam.DoFn.StateParam(STATE),
                          held_bag=beam.DoFn.StateParam(HELD),
                          waiting_bag=beam.DoFn.StateParam(WAITING),
                          recovery_timer=beam.DoFn.TimerParam(RECOVERY),
                          status_timer=beam.DoFn.TimerParam(STATUS_SNAPSHOT)):
        """The watermark passed a medium gap's deadline with no snapshot: the wait gives up (the
        hole becomes a corrupt period, the held deltas are released)."""
        def body(stored, machine):
            stored.stream.recovery_timer = -1
            deadline = machine.deadline()
            if deadline is None:
                return
            machine.advance_watermark(deadline + 1)       # this wait only: a later one has its own
            self._release(machine, stored.stream, waiting_bag, declare_upto=None)
            self._arm_recovery(machine, stored.stream, recovery_timer, _ms(fired))
        yield from self._run_timer("recovery", key, state_cell, held_bag, body, waiting_bag,
                                   status_timer=status_timer)

    @on_timer(STALL)
    def stall(self, key=beam.DoFn.KeyParam,
              fired=beam.DoFn.TimestampParam,
              state_cell=beam.DoFn.StateParam(STATE),
              held_bag=beam.DoFn.StateParam(HELD)):
        """Streaming: the symbol has been silent for --stall_timeout (not while the job drains at
        a stop: its processing time then runs fast, and the silence is the stop's)."""
        if runtime.draining():
            return
        def body(stored, machine):
            stored.stream.stalled = True
            stored.stream.processing_floor = fired.micros
            return [beam.pvalue.TaggedOutput(ERRORS, ErrorEvent(
                ErrorType.STALL, machine.symbol, stored.machine.last_time or now_ms()))]
        yield from self._run_timer("stall", key, state_cell, held_bag, body)

    @on_timer(STATUS_SNAPSHOT)
    def status_snapshot(self, key=beam.DoFn.KeyParam,
                        state_cell=beam.DoFn.StateParam(STATE),
                        held_bag=beam.DoFn.StateParam(HELD)):
        """--output_flush_seconds after a change: the key's status, one row (status/)."""
        yield from self._run_timer("status", key, state_cell, held_bag, lambda *_: None,
                                   status=True)

    @on_timer(END_OF_STREAM)
    def end_of_stream(self, key=beam.DoFn.KeyParam,
                      state_cell=beam.DoFn.StateParam(STATE),
                      held_bag=beam.DoFn.StateParam(HELD),
                      waiting_bag=beam.DoFn.StateParam(WAITING),
                      recovery_timer=beam.DoFn.TimerParam(RECOVERY),
                      reorder_timer=beam.DoFn.TimerParam(REORDER),
                      published_timer=beam.DoFn.TimerParam(REORDER_PUBLISHED),
                      stall_timer=beam.DoFn.TimerParam(STALL),
                      status_timer=beam.DoFn.TimerParam(STATUS_SNAPSHOT)):
        """The watermark reached the end of time: a bounded input is exhausted (or a drain). Feed
        the waiting events, close any wait (no snapshot can come any more) and clear the
        processing-time timers. Without this a bounded streaming run on Flink never ends: Beam
        Java's operator does not fire pending processing-time timers at the end of input, and their
        watermark holds keep the job alive. Never fires in a live unbounded run. Writes the key's
        last status (a graceful stop's final snapshot)."""
        def body(stored, machine):
            machine.feed_all(canonical_order([w.event for w in self._read_waiting(waiting_bag)],
                                             self.policy.reset_min_jump_ids))
            waiting_bag.clear()
            stored.stream.waiting = 0
            machine.finish()
            stored.stream.recovery_timer = -1
            for timer in (reorder_timer, published_timer, stall_timer, recovery_timer,
                          status_timer):
                timer.clear()
            if self.cursor_folder:
                save_cursor(self.cursor_folder, key, machine.state)
        yield from self._run_timer("end_of_stream", key, state_cell, held_bag, body, waiting_bag,
                                   final=True)
