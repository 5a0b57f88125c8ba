"""DirectRunner profile: one in-process worker (``--direct_running_mode=in_memory``,
``--direct_num_workers=1``) unless the user chose otherwise.

These are Beam 2.75's own defaults, pinned so the choice is explicit and measured: on a 2-core
machine a 200,000-record batch run (4 files, 8 symbols) took 9-12 s in_memory, 11-13 s with
multi_threading x2 (the GIL serialises the Python work) and 10-16 s with multi_processing x2 (gRPC
and pickling between processes eat the second core). Streaming (Pub/Sub, REAL_TIME timers) runs on
Beam's BundleBasedDirectRunner, which ignores both options.

Not changed: in batch DirectRunner first tries Prism, whose binary download fails offline in about
0.25 s before it falls back to the FnApiRunner; no option skips the attempt.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import warnings

from beam_pipeline.core import durability, runtime
from runners.flags import flag_value
from runners.pubsub_inbox import Inbox, Journal, publish_ms

DEFAULTS = {"direct_running_mode": "in_memory", "direct_num_workers": "1"}


def apply_profile(argv: list[str]) -> list[str]:
    """Return argv plus the DirectRunner defaults the user did not give (argv is left unchanged)."""
    argv = list(argv)
    for name, value in DEFAULTS.items():
        if flag_value(argv, name) is None:
            argv.append(f"--{name}={value}")
    return argv


def tune_streaming_pubsub_reads(max_messages: int, wait_seconds: float,
                                lease_seconds: float = 60.0) -> Inbox:
    """Streaming DirectRunner reads Pub/Sub in one pull per bundle: at most 10 messages, a 30 s
    long poll when the subscription is idle, a new client each time, a watermark of the wall
    clock, and an acknowledgement right after the pull (Beam 2.75,
    transform_evaluator._PubSubReadEvaluator). On its single worker thread the idle poll stops
    every timer for up to 30 s (stall alerts came after 61 s), 10 messages a bundle cap a
    backlog's drain, a wall-clock watermark claims a backlog has been read the moment its first
    message is, and an early acknowledgement loses what a stop or a crash leaves unwritten.

    For this process the evaluator pulls up to `max_messages` (fewer while a stop could not drain
    them in time: Inbox.pull_size) with a `wait_seconds` poll on one reused client; its watermark
    follows the publish times it pulls (the oldest of each pull; on an empty pull, now minus the
    poll), as Dataflow estimates a Pub/Sub watermark from the backlog; and a message is
    acknowledged only once every output row it produced is in a finished file (Inbox), its lease
    renewed until then. `request_stop()` ends the pulls: the watermark jumps to the end of time,
    so the job drains as a bounded input ends. Dataflow and Flink read Pub/Sub their own way and
    are not touched. Returns the Inbox (the command line reports and settles it at a stop)."""
    from apache_beam.runners.direct import transform_evaluator

    durability.reset()
    prepare_graceful_stop()
    inbox = Inbox(lease_seconds)
    INBOX[0] = inbox
    evaluator = transform_evaluator._PubSubReadEvaluator
    evaluator._read_from_pubsub = _pull_reader(max_messages, wait_seconds, inbox)
    evaluator.finish_bundle = _finish_with_publish_watermark(wait_seconds)
    _cache_dofn_specs()
    _reuse_dofns()
    return inbox


def prepare_graceful_stop() -> None:
    """A streaming DirectRunner job of this process can be stopped with request_stop(): its
    sources (the Pub/Sub read above, the watched files' ticks in transforms/follow.py) end on it."""
    STOP.clear()
    runtime.end_drain()
    _stopped_at[0] = None
    _fast_forward_after_stop()


INBOX = [None]       # this process's Inbox (the read evaluator's watermark asks it)
# Set when the command line asks a streaming job to stop: no more pulls, the watermark ends.
STOP = threading.Event()
# After a stop the runner's processing-time clock runs this many times faster than the wall clock.
DRAIN_SPEEDUP = 1000
_stopped_at = [None]


def request_stop() -> None:
    """No more pulls; the source's watermark jumps to the end of time, which fires every key's
    end-of-stream timer and every event-time window. What still waits on processing time (each
    output folder's --output_flush_seconds trigger, the summary's 5 s) would hold the end of the
    job for up to that long, so the runner's clock runs DRAIN_SPEEDUP times faster from here:
    a 60 s flush fires within 0.06 s. The sequencer's stall timers, which this would fire too,
    stay silent during a drain (core/runtime.draining)."""
    _stopped_at[0] = time.time()
    runtime.begin_drain()
    STOP.set()


def _fast_forward_after_stop() -> None:
    from apache_beam.runners.direct import clock

    if getattr(clock.RealClock.time, "fast_forwards", False):
        return
    wall = time.time

    def processing_time(self):
        now = wall()
        stopped = _stopped_at[0]
        return now if stopped is None else now + (now - stopped) * (DRAIN_SPEEDUP - 1)

    processing_time.fast_forwards = True
    clock.RealClock.time = processing_time


def hold_watermark_for_end_of_window_timers() -> None:
    """Streaming DirectRunner: a stateful DoFn's timer set at the end of its window holds the
    DoFn's output watermark until it fires, as a timer holds it on Flink and Dataflow.

    Beam 2.75's BundleBasedDirectRunner holds no watermark for user timers. When a bounded input
    ends (or a drain) the watermark jumps to the end of time at once: the sequencer's
    end-of-stream timer (transforms/sequence_live.py) then emits the events it still held, the gap
    rows and corrupt periods it closes, after every stage downstream has seen the end of time, so a
    GroupByKey there (the summary's, the error counts') drops them as late, and a timer downstream
    at the end of the window (the sinks' final flush) may fire before they come. Seen: a bounded
    streaming run whose summary did not balance in 2 of 8 runs. Holding the output watermark
    just before each pending end-of-window timer until it has fired makes them arrive first.
    Only timers at the end of their window hold (the global window's end is never reached by a
    live job's watermark): event-time waits and windows are unchanged. For this process only."""
    from apache_beam.runners.direct import transform_evaluator

    evaluator = transform_evaluator._ParDoEvaluator
    if getattr(evaluator, "_feedcheck_end_holds", False):
        return
    finish = evaluator.finish_bundle

    def finish_bundle(self):
        result = finish(self)
        if self.user_state_context is not None:
            for key, state in self._step_context.partial_keyed_state.items():
                result.keyed_watermark_holds[key] = _end_of_window_hold(state)
        return result

    evaluator.finish_bundle = finish_bundle
    evaluator._feedcheck_end_holds = True


def _end_of_window_hold(state):
    """Just before the earliest end-of-window event-time timer of a key's state, or None."""
    from apache_beam.transforms.timeutil import TimeDomain
    from apache_beam.utils.timestamp import TIME_GRANULARITY

    holds = [timestamp - TIME_GRANULARITY
             for win, timers in state.timers.items()
             for (_, domain, _), timestamp in timers.items()
             if domain == TimeDomain.WATERMARK and timestamp >= win.max_timestamp()]
    return min(holds) if holds else None


def _finish_with_publish_watermark(wait_seconds: float):
    """_PubSubReadEvaluator.finish_bundle with a publish-time watermark (see above), and no
    further pull once a stop is requested: then the source is done and its watermark is the end
    of time, which fires every key's end-of-stream timer and every sink's last pane."""

    from apache_beam import pvalue
    from apache_beam.runners.direct.transform_evaluator import TransformResult
    from apache_beam.transforms.window import GlobalWindows
    from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

    watermarks = {}

    def finish_bundle(self):
        if STOP.is_set():
            return TransformResult(self, [], [], None, {None: MAX_TIMESTAMP})
        data = self._read_from_pubsub(self.source.timestamp_attribute)
        bundles = []
        if data:
            bundle = self._evaluation_context.create_bundle(list(self._outputs)[0])
            for timestamp, message in data:
                element = message if self.source.with_attributes else message.data
                bundle.output(GlobalWindows.windowed_value(element, timestamp=timestamp))
            bundles = [bundle]
            candidate = min(timestamp for timestamp, _ in data)
        else:
            candidate = Timestamp.of(time.time() - wait_seconds)
        watermark = max(watermarks.get(self._sub_name, candidate), candidate)
        floor = INBOX[0].watermark_floor() if INBOX[0] is not None else None
        if floor is not None:        # a killed run's messages are on their way again: wait for them
            watermark = min(watermark, Timestamp(micros=floor * 1000))
        watermarks[self._sub_name] = watermark
        inputs = self._applied_ptransform.inputs
        input_pvalue = inputs[0] if inputs else pvalue.PBegin(self._applied_ptransform.transform.pipeline)
        unprocessed = self._evaluation_context.create_bundle(input_pvalue)
        return TransformResult(self, bundles, [unprocessed], None, {None: watermark})

    return finish_bundle


def _reuse_dofns() -> None:
    """The bundle-based DirectRunner pickles and unpickles every DoFn at the start of every bundle
    (a check that it can be serialised, as a distributed runner would do once per worker): 14 % of
    a streaming job's CPU when messages are small (py-spy). Each bundle here uses the DoFn as
    built instead; setup and start_bundle still run per bundle as before, and the graph is still
    serialised once when the job is built."""
    from apache_beam.runners.direct import transform_evaluator

    evaluator = transform_evaluator._ParDoEvaluator
    if getattr(evaluator.__init__, "reuses_dofns", False):
        return
    build = evaluator.__init__

    def init(self, *args, perform_dofn_pickle_test=True, **kwargs):
        build(self, *args, perform_dofn_pickle_test=False, **kwargs)

    init.reuses_dofns = True
    evaluator.__init__ = init


def _cache_dofn_specs() -> None:
    """The bundle-based DirectRunner inspects every DoFn's method signatures for state and timer
    specs at the start of every bundle, three times (userstate.get_dofn_specs via
    is_stateful_dofn and validate_stateful_dofn): a third of a streaming job's CPU when it drains a
    backlog (py-spy). The specs are class attributes, fixed once the DoFn is built, so they are
    computed once per DoFn class (and per wrapped callable's code for Map/FlatMap: the runner
    pickles a fresh copy of each DoFn for every bundle, so the function objects differ)."""
    from apache_beam.transforms import userstate

    if getattr(userstate.get_dofn_specs, "cached", False):
        return
    compute, cache = userstate.get_dofn_specs, {}

    def get_dofn_specs(dofn):
        wrapped = getattr(dofn, "_fn", None)          # Map/FlatMap: specs may be in its defaults
        key = (type(dofn), getattr(wrapped, "__code__", wrapped))
        try:
            return cache[key]
        except KeyError:
            return cache.setdefault(key, compute(dofn))
        except TypeError:           # an unhashable wrapped callable: no caching
            return compute(dofn)

    get_dofn_specs.cached = True
    userstate.get_dofn_specs = get_dofn_specs


def _subscriber(pubsub):
    """A SubscriberClient; on the emulator with no cap on a pull's response size (the client's
    emulator channel keeps gRPC's 4 MiB default, which 1,000 batched messages exceed; its channel to
    the real service has no cap)."""
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not host:
        return pubsub.SubscriberClient()
    import grpc
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    channel = grpc.insecure_channel(host, options=[("grpc.max_receive_message_length", -1)])
    return pubsub.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel, host=host))


IDLE_POLL_SECONDS = 0.1   # between polls of an idle subscription, within one --pull_wait_seconds


def _pull_reader(max_messages: int, wait_seconds: float, inbox: Inbox):
    clients = {}

    warnings.filterwarnings("ignore", message=".*return_immediately.*")   # deprecated, on purpose

    def read_from_pubsub(self, timestamp_attribute):
        from apache_beam.io.gcp.pubsub import PubsubMessage
        from apache_beam.utils.timestamp import Timestamp
        from google.api_core import exceptions
        from google.cloud import pubsub

        client = clients.get("subscriber") or clients.setdefault("subscriber", _subscriber(pubsub))
        if inbox.journal is None and inbox.journal_path:
            again = inbox.recover(Journal(inbox.journal_path), client, self._sub_name)
            if again:
                logging.getLogger("feedcheck").warning(
                    "%d Pub/Sub messages the last run of this job pulled and did not finish are "
                    "read again first", again)
        if inbox.pulls:
            inbox.settle()
        # Polls that return at once, not a long poll with a client deadline: a long poll that times
        # out just as the server hands it messages leaves them leased to nobody until the ack
        # deadline, so they come back tens of seconds late (seen on the emulator: the first
        # messages of a burst arrived after 200,000 later ones).
        give_up = time.monotonic() + wait_seconds
        size = inbox.pull_size(max_messages)
        while True:
            try:
                response = client.pull(subscription=self._sub_name, max_messages=size,
                                       return_immediately=True, timeout=60, retry=None)
            except (exceptions.DeadlineExceeded, exceptions.ServiceUnavailable):
                response = None
            received = response.received_messages if response is not None else []
            if received or time.monotonic() >= give_up or STOP.is_set():
                break
            time.sleep(min(IDLE_POLL_SECONDS, wait_seconds))
        if inbox.recovering():
            received = inbox.stash_pull(client, self._sub_name, received, size)
        inbox._measure(len(received))
        if not received:
            return []                    # an idle subscription: let timers and the watermark move
        # journaled first: a kill before that leaves them to come back after their ack deadline,
        # behind newer messages, as late events (seen: 35 messages of a killed run's last pull)
        inbox.add(client, self._sub_name, received, max(publish_ms(m.message) for m in received))
        elements = []
        for received_message in received:
            message = PubsubMessage._from_message(received_message.message)
            stamp = (message.attributes or {}).get(timestamp_attribute) if timestamp_attribute else None
            if stamp is None:
                timestamp = Timestamp.from_utc_datetime(received_message.message.publish_time)
            elif stamp.isdigit():
                timestamp = Timestamp(micros=int(stamp) * 1000)
            else:
                timestamp = Timestamp.from_rfc3339(stamp)
            elements.append((timestamp, message))
        return elements

    return read_from_pubsub
