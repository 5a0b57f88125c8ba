"""Live capture of one market of one venue: python -m beam_pipeline.collector [--exchange
binance|okx|bybit] --market spot --symbols BTCUSDT,ETHUSDT [--topic projects/P/topics/T]
[--output_dir DIR] (one or both) [--recovery_subscription S | --recovery_kafka_topic T].

One websocket per process; what differs between venues (its URL, the subscription, how a book
frame is recognised, how a fresh snapshot is had) is the venue's module in beam_pipeline/capture/.
Every frame is written as it came with its receive time as an envelope line
(core/framings/envelope.py) of the venue's exchange and the market: to Pub/Sub as batched messages
(beam_pipeline/publish.py's format, ordering key = symbol, flow control), to Kafka, or to rolling
gzip files a batch run reads as they are.

Snapshots. Binance (REST): after every (re)connect a REST depth snapshot per symbol is written
in-stream once the new connection has delivered its first depth frame; each recovery request of the
pipeline (--recovery_subscription, or --recovery_kafka_topic) for one of our symbols is answered with a fresh one. A snapshot
is written only while the connection that was delivering when it was requested still is (one taken
during an outage would end the pipeline's disconnection before the reconnect). OKX and Bybit v5
(RESUBSCRIBE): the venue sends each symbol's snapshot in-stream when it is subscribed, so every
(re)connect brings them; a recovery request is answered by unsubscribing and subscribing the
symbol's book channel again (Resubscriptions), which makes the venue send a fresh one.

Network partitions: a lost connection (closed, refused, stalled past --idle_timeout) is retried
with exponential backoff and full jitter (tenacity, ReconnectBackoff), each wait capped by
--max_backoff. The backoff grows with every attempt that fails (a refused handshake, or a connection
that ends before it proved healthy: its first book frame delivered and --healthy_seconds up, e.g.
accepted and closed at once) and resets only when a connection proves healthy. After
--max_disconnect down the collector exits with code 5. When a connection delivers data again it
writes one disconnect marker per symbol for the whole outage (core/markers.py; `attempts`: the
connection attempts of the outage), which the pipeline turns into an explained gap: resynced by the
snapshot after the reconnect, else a corrupt period of reason disconnect. A connection
older than --planned_reconnect is replaced before the exchange closes it (Binance: at 24 h): the new one is
opened first and both are read until the new one joins each symbol's ids (OverlapMerge), so no
frame is lost or written twice.

REST snapshots go through resilience.SnapshotFetcher (retries with backoff honouring 429 and
Retry-After, a per-host circuit breaker), within a request-weight budget per minute; a 418 (or 429
after the retries) pauses every REST call for its Retry-After.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import json
import logging
import os
import signal
import sys
import threading
import time
from types import SimpleNamespace
from typing import Optional

import msgspec
import tenacity

from beam_pipeline.capture import binance, venue_for
from beam_pipeline.capture.base import DELTA, REST, SNAPSHOT, Frame, Refusal
from beam_pipeline.core.markers import Disconnect, encode_marker
from beam_pipeline.core.model import RawBatch
from beam_pipeline.core.resilience import (BreakerPolicy, CircuitOpenError, HttpStatusError,
                                           RetriesExhaustedError, RetryPolicy, SnapshotFetcher)
from beam_pipeline.core.runtime import now_ms
from beam_pipeline.options import (COLLECTOR_DEPTH_WEIGHTS, COLLECTOR_EXIT_GAVE_UP,
                                   COLLECTOR_KEEPALIVE_S, COLLECTOR_MARKETS,
                                   COLLECTOR_STREAM_VENUES, add_collector_arguments,
                                   recovery_kafka_group)

EXCHANGE = binance.NAME                 # the default venue
_LOG = logging.getLogger("feedcheck.collector")
OVERLAP_TIMEOUT_S = 10.0    # a planned reconnect: the old connection is closed this long at most
                            # after the new one opened, joined or not (a quiet symbol never joins)
REST_PAUSE_DEFAULT_S = 60.0 # a 418/429 without Retry-After pauses REST calls this long
SNAPSHOT_RETRY_S = 5.0      # a failed snapshot is tried again after this long
RESUBSCRIBE_RETRY_S = 10.0  # a resubscription whose snapshot has not come answers requests this long

_encode = msgspec.json.Encoder().encode


# ---- frames: each venue's (beam_pipeline/capture/) -------------------------------------------

parse_frame = binance.parse_frame       # Binance's, as before the venues (tests and bench use it)


def envelope_line(market: str, symbol: str, recv_ms: int, kind: str, payload: bytes,
                  exchange: str = EXCHANGE) -> bytes:
    return _encode({"exchange": exchange, "market": market, "symbol": symbol, "recv_ts_ms": recv_ms,
                    "type": kind, "payload": msgspec.Raw(payload)})


def stream_url(ws_base: str, symbols) -> str:
    """Binance's combined-stream URL of `symbols`."""
    return binance.connect_url(ws_base, "", symbols)


def depth_weight(market: str, limit: int) -> int:
    """Binance's request weight of one depth snapshot of `limit` levels."""
    for largest, weight in COLLECTOR_DEPTH_WEIGHTS[market]:
        if limit <= largest:
            return weight
    return COLLECTOR_DEPTH_WEIGHTS[market][-1][1]


# ---- a planned reconnect: two connections, one stream per symbol ------------------------------

class OverlapMerge:
    """While an old and a new connection both deliver, write each symbol's frames from the old
    one until the new one joins its ids (a frame of the new one that continues or covers the last
    id written), then from the new one only. Frames of the new one that come before the old has
    caught up wait here."""

    def __init__(self, last_ids: dict):
        self.last_ids = last_ids            # symbol -> last update id written (shared, updated by us)
        self.switched: set = set()
        self.waiting: dict = collections.defaultdict(list)

    def from_old(self, frame: Frame) -> list:
        if frame.symbol in self.switched:
            return []
        out = [frame]
        self._advance(frame)
        out.extend(self._join(frame.symbol))
        return out

    def from_new(self, frame: Frame) -> list:
        if frame.symbol in self.switched:
            self._advance(frame)
            return [frame]
        if frame.last_id is None:
            return [frame] if frame.kind == "other" else []
        self.waiting[frame.symbol].append(frame)
        return self._join(frame.symbol)

    def switch_all(self) -> list:
        """The overlap ends (timeout): every symbol takes the new connection's frames."""
        out = []
        for symbol, frames in list(self.waiting.items()):
            last = self.last_ids.get(symbol)
            out.extend(f for f in frames if last is None or f.last_id > last)
        self.waiting.clear()
        return out

    def _advance(self, frame: Frame) -> None:
        if frame.last_id is not None:
            self.last_ids[frame.symbol] = frame.last_id

    def _join(self, symbol: str) -> list:
        last, frames = self.last_ids.get(symbol), self.waiting.get(symbol)
        if not frames or last is None:
            return []
        frames[:] = [f for f in frames if f.last_id > last]
        if not frames:
            return []
        first = frames[0]
        if first.first_id is not None and first.first_id <= last + 1 or first.prev_id == last:
            self.switched.add(symbol)
            out = list(frames)
            frames.clear()
            for frame in out:
                self._advance(frame)
            return out
        return []

    def done(self, symbols) -> bool:
        return all(symbol in self.switched for symbol in symbols)


# ---- metrics --------------------------------------------------------------------------------

class Metrics:
    COUNTS = ("messages", "records", "reconnects", "disconnects", "planned_reconnects",
              "connect_attempts", "snapshots", "snapshot_failures", "snapshots_discarded",
              "recovery_requests", "recovery_deduplicated", "resubscribes", "refusals",
              "published_messages", "publish_failures", "records_lost", "file_flushes")

    def __init__(self, market: str, exchange: str = EXCHANGE):
        self.market, self.exchange = market, exchange
        self.started = time.monotonic()
        self.counts = collections.Counter(dict.fromkeys(self.COUNTS, 0))
        self.blocked_s = 0.0
        self.publish_lag_ms = None
        self.publish_lag_max_ms = 0
        self.last_reconnect_s = None
        self._last = (self.started, 0)

    def lag(self, ms: int) -> None:
        self.publish_lag_ms = ms
        self.publish_lag_max_ms = max(self.publish_lag_max_ms, ms)

    def snapshot(self) -> dict:
        now = time.monotonic()
        since, before = self._last
        rate = (self.counts["messages"] - before) / max(now - since, 1e-9)
        self._last = (now, self.counts["messages"])
        return {"exchange": self.exchange, "market": self.market, "uptime_s": round(now - self.started, 3),
                "messages_per_s": round(rate, 1), **dict(sorted(self.counts.items())),
                "blocked_s": round(self.blocked_s, 3), "publish_lag_ms": self.publish_lag_ms,
                "publish_lag_max_ms": self.publish_lag_max_ms,
                "last_reconnect_s": self.last_reconnect_s}

    @staticmethod
    def line(status: dict) -> str:
        c = status
        return (f"{c.get('exchange', EXCHANGE)} {c['market']}: {c['messages_per_s']:,.0f} msg/s, {c.get('messages', 0):,} messages, "
                f"{c.get('reconnects', 0)} reconnects, {c.get('snapshots', 0)} snapshots "
                f"({c.get('snapshot_failures', 0)} failed), {c.get('recovery_requests', 0)} recovery "
                f"requests ({c.get('recovery_deduplicated', 0)} deduplicated), publish lag "
                f"{c['publish_lag_ms']} ms, blocked {c['blocked_s']:.1f} s")


def write_json_atomically(path: str, value: dict) -> None:
    partial = f"{path}.partial"
    with open(partial, "w") as handle:
        json.dump(value, handle, indent=1)
    os.replace(partial, path)


def read_metrics(path: str) -> dict:
    """The last status written to --metrics_file; {} before the first (or unreadable)."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


# ---- sinks ----------------------------------------------------------------------------------

class PubSubSink:
    """Batched envelope messages per symbol (ordering key = symbol), with publisher flow control:
    past the bound publish() blocks, and so does capture; the blocked time is counted."""

    BLOCKED_LOG_S = 1.0

    def __init__(self, topic: str, market: str, records_per_message: int, message_seconds: float,
                 max_messages: int, max_bytes: int, metrics: Metrics, exchange: str = EXCHANGE):
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1 import types

        self.topic, self.market, self.metrics, self.exchange = topic, market, metrics, exchange
        self.records_per_message, self.message_seconds = records_per_message, message_seconds
        flow = types.PublishFlowControl(message_limit=max_messages, byte_limit=max_bytes,
                                        limit_exceeded_behavior=types.LimitExceededBehavior.BLOCK)
        self.client = pubsub_v1.PublisherClient(
            batch_settings=types.BatchSettings(max_messages=100, max_bytes=4 * 1024 * 1024,
                                               max_latency=0.01),
            publisher_options=types.PublisherOptions(enable_message_ordering=True,
                                                     flow_control=flow))
        self.buffers: dict = {}            # symbol -> (monotonic of first record, first recv ms, lines)
        self.futures: set = set()
        self._lock = threading.Lock()

    def write(self, symbol: str, line: bytes, recv_ms: int) -> None:
        entry = self.buffers.get(symbol)
        if entry is None:
            entry = self.buffers[symbol] = (time.monotonic(), recv_ms, [])
        entry[2].append(line)
        if len(entry[2]) >= self.records_per_message:
            self._send(symbol)

    def tick(self) -> None:
        due = time.monotonic() - self.message_seconds
        for symbol in [s for s, entry in self.buffers.items() if entry[0] <= due]:
            self._send(symbol)

    def _send(self, symbol: str) -> None:
        from beam_pipeline.publish import message_of

        _, first_recv, lines = self.buffers.pop(symbol)
        data, attributes = message_of(RawBatch(f"collector:{symbol}", "envelope", self.exchange,
                                               self.market, [(0, line) for line in lines]), True)
        began = time.monotonic()
        future = self.client.publish(self.topic, data, ordering_key=symbol, **attributes)
        blocked = time.monotonic() - began
        self.metrics.blocked_s += blocked
        if blocked >= self.BLOCKED_LOG_S:
            _LOG.warning("publishing blocked capture for %.1f s (flow control: the broker is slow)",
                         blocked)
        self.metrics.counts["published_messages"] += 1
        with self._lock:
            self.futures.add(future)
        future.add_done_callback(lambda done: self._settled(done, symbol, first_recv, len(lines)))

    def _settled(self, future, symbol: str, first_recv: int, records: int) -> None:
        with self._lock:
            self.futures.discard(future)
        error = future.exception()
        if error is None:
            self.metrics.lag(now_ms() - first_recv)
            return
        self.metrics.counts["publish_failures"] += 1
        self.metrics.counts["records_lost"] += records
        _LOG.error("%s: a message of %d records could not be published (%r); publishing of the "
                   "symbol resumes with the next one", symbol, records, error)
        self.client.resume_publish(self.topic, symbol)

    def close(self) -> None:
        for symbol in list(self.buffers):
            self._send(symbol)
        with self._lock:
            pending = list(self.futures)
        for future in pending:
            try:
                future.result(timeout=60)
            except Exception:       # counted and logged by _settled
                pass
        self.client.stop()


class KafkaTopicSink(PubSubSink):
    """The same batched envelope messages per symbol on a Kafka topic (--kafka_bootstrap_servers,
    --kafka_topic): key = symbol (a partition keeps a symbol in order), attributes as headers,
    CreateTime = the publish time (the streaming job's event time)."""

    def __init__(self, bootstrap_servers: str, topic: str, market: str, records_per_message: int,
                 message_seconds: float, metrics: Metrics, exchange: str = EXCHANGE):
        from beam_pipeline.publish import KafkaSink

        self.topic, self.market, self.metrics, self.exchange = topic, market, metrics, exchange
        self.records_per_message, self.message_seconds = records_per_message, message_seconds
        self.kafka = KafkaSink(bootstrap_servers, topic)
        self.buffers: dict = {}
        self.futures: set = set()
        self._lock = threading.Lock()

    def _send(self, symbol: str) -> None:
        from beam_pipeline.publish import message_of

        _, first_recv, lines = self.buffers.pop(symbol)
        data, attributes = message_of(RawBatch(f"collector:{symbol}", "envelope", self.exchange,
                                               self.market, [(0, line) for line in lines]), True)
        future = self.kafka.publish(data, attributes, symbol)
        self.metrics.counts["published_messages"] += 1
        with self._lock:
            self.futures.add(future)
        future.add_both(lambda result: self._sent(future, result, symbol, first_recv, len(lines)))

    def _sent(self, future, result, symbol: str, first_recv: int, records: int) -> None:
        with self._lock:
            self.futures.discard(future)
        if not isinstance(result, BaseException):
            self.metrics.lag(now_ms() - first_recv)
            return
        self.metrics.counts["publish_failures"] += 1
        self.metrics.counts["records_lost"] += records
        _LOG.error("%s: a message of %d records could not be sent to Kafka (%r)", symbol, records,
                   result)

    def close(self) -> None:
        for symbol in list(self.buffers):
            self._send(symbol)
        self.kafka.close()          # flushes: every record sent or failed


class FileSink:
    """Rolling files <exchange>-<market>-<YYYYMMDD>T<HH>.jsonl.gz, one per UTC hour of receive time.
    Each flush appends one complete gzip member in one write: a crash loses what was not flushed,
    and what is on disk stays a readable gzip file."""

    def __init__(self, folder: str, market: str, flush_seconds: float, metrics: Metrics,
                 exchange: str = EXCHANGE):
        os.makedirs(folder, exist_ok=True)
        self.folder, self.market, self.flush_seconds, self.metrics = folder, market, flush_seconds, metrics
        self.exchange = exchange
        self.hour, self.lines, self.flushed = None, [], time.monotonic()

    def path_of(self, hour: int) -> str:
        stamp = time.strftime("%Y%m%dT%H", time.gmtime(hour * 3600))
        return os.path.join(self.folder, f"{self.exchange}-{self.market}-{stamp}.jsonl.gz")

    def write(self, symbol: str, line: bytes, recv_ms: int) -> None:
        hour = recv_ms // 3_600_000
        if hour != self.hour:
            self.flush()
            self.hour = hour
        self.lines.append(line)

    def tick(self) -> None:
        if time.monotonic() - self.flushed >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self.flushed = time.monotonic()
        if not self.lines:
            return
        member = gzip.compress(b"\n".join(self.lines) + b"\n", compresslevel=6)
        with open(self.path_of(self.hour), "ab") as handle:
            handle.write(member)
            handle.flush()
            os.fsync(handle.fileno())
        self.metrics.counts["file_flushes"] += 1
        self.lines = []

    def close(self) -> None:
        self.flush()


class BothSinks:
    """--topic and --output_dir together: every record to each, the same feed in both."""

    def __init__(self, *sinks):
        self.sinks = sinks

    def write(self, symbol: str, line: bytes, recv_ms: int) -> None:
        for sink in self.sinks:
            sink.write(symbol, line, recv_ms)

    def tick(self) -> None:
        for sink in self.sinks:
            sink.tick()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


# ---- REST snapshots -------------------------------------------------------------------------

class WeightBudget:
    """At most `per_minute` request weight in any 60 s."""

    def __init__(self, per_minute: int):
        self.per_minute, self.spent = per_minute, collections.deque()

    def wait_s(self, weight: int, now: float) -> float:
        while self.spent and self.spent[0][0] <= now - 60:
            self.spent.popleft()
        used = sum(w for _, w in self.spent)
        if used + weight <= self.per_minute or not self.spent:
            return 0.0
        over, freed = used + weight - self.per_minute, 0
        for at, spent in self.spent:
            freed += spent
            if freed >= over:
                return at + 60 - now
        return 60.0

    def spend(self, weight: int, now: float) -> None:
        self.spent.append((now, weight))


class Snapshots:
    """A queue of wanted snapshots (one pending per symbol), fetched one at a time."""

    def __init__(self, collector: "Collector", depth_url: str, limit: int, weight_per_minute: int):
        self.collector, self.limit = collector, limit
        self.fetcher = SnapshotFetcher(depth_url, retry=RetryPolicy(deadline_s=20.0, attempt_timeout_s=5.0,
                                                                    initial_backoff_s=0.5),
                                       breaker=BreakerPolicy(fail_max=3, reset_timeout_s=15.0),
                                       user_agent="feedcheck-collector")
        self.weight = depth_weight(collector.market, limit)
        self.budget = WeightBudget(weight_per_minute)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pending: set = set()           # queued, not yet being fetched
        self.fetching: Optional[str] = None
        self.last_fetched: dict = {}
        self.paused_until = 0.0

    def want(self, symbol: str, recovery: bool = False, from_id: Optional[int] = None) -> None:
        metrics = self.collector.metrics
        if recovery:
            metrics.counts["recovery_requests"] += 1
            fresh = time.monotonic() - self.last_fetched.get(symbol, -1e18) < \
                self.collector.args.recovery_dedup_seconds
            if fresh or symbol in self.pending or symbol == self.fetching:
                metrics.counts["recovery_deduplicated"] += 1
                return
        if symbol not in self.pending:      # one being fetched may predate the want: again
            self.pending.add(symbol)
            self.queue.put_nowait(symbol)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            symbol = await self.queue.get()
            if symbol not in self.pending:
                continue                    # queued twice (a retry and a new want): fetched once
            await self._wait_for_budget()
            self.pending.discard(symbol)
            stream = self.collector.delivering()
            if stream is None:              # an outage: the next connection that delivers wants it
                _LOG.info("%s: no connection delivers; the snapshot waits for the next one", symbol)
                continue
            self.fetching = symbol
            self.budget.spend(self.weight, time.monotonic())
            try:
                body = await loop.run_in_executor(None, self.fetcher.fetch, symbol, self.limit)
            except (HttpStatusError, RetriesExhaustedError) as failed:
                # a 418 at once, or 429s until the retries ran out: every REST call waits
                error = getattr(failed, "last_error", failed)
                if getattr(error, "status", None) in (418, 429):
                    pause = error.retry_after_s or REST_PAUSE_DEFAULT_S
                    self.paused_until = time.monotonic() + pause
                    _LOG.warning("REST: HTTP %d (rate limit): every snapshot waits %.0f s",
                                 error.status, pause)
                    self._again(symbol, 0)
                elif isinstance(failed, RetriesExhaustedError):
                    self._failed(symbol, failed)
                else:                       # a permanent refusal (400: no such symbol, ...)
                    self.collector.metrics.counts["snapshot_failures"] += 1
                    _LOG.error("%s: snapshot refused: %s", symbol, error)
                continue
            except (CircuitOpenError, OSError, ValueError) as error:
                self._failed(symbol, error)
                continue
            finally:
                self.fetching = None
            if self.collector.write_snapshot(symbol, body, stream):
                self.last_fetched[symbol] = time.monotonic()

    def arrived(self, symbol: str, snapshot_id: Optional[int] = None) -> None:
        """An in-stream snapshot was written: none on a REST venue."""

    def _failed(self, symbol: str, error: BaseException) -> None:
        self.collector.metrics.counts["snapshot_failures"] += 1
        _LOG.warning("%s: snapshot failed (%s); trying again in %.0f s", symbol, error,
                     SNAPSHOT_RETRY_S)
        self._again(symbol, SNAPSHOT_RETRY_S)

    def _again(self, symbol: str, after_s: float) -> None:
        asyncio.get_running_loop().call_later(after_s, self.want, symbol)

    async def _wait_for_budget(self) -> None:
        while True:
            now = time.monotonic()
            wait = max(self.paused_until - now, self.budget.wait_s(self.weight, now))
            if wait <= 0:
                return
            await asyncio.sleep(wait)


class Resubscriptions:
    """Wanted snapshots of a venue that sends them in-stream (OKX, Bybit v5): the symbol's book
    channel is unsubscribed and subscribed again on the connection that delivers, and the venue
    answers with a fresh snapshot (written as any frame; `arrived` when it is). Recovery requests
    are deduplicated: one asked and not yet arrived answers them (one asked more than
    RESUBSCRIBE_RETRY_S ago that never came no longer does), and so does one arrived less than
    --recovery_dedup_seconds ago whose id is at or past the request's from_id (a snapshot from
    before the gap cannot resync it, however recent). After a reconnect nothing is asked: the new
    subscription brings every symbol's snapshot."""

    def __init__(self, collector: "Collector"):
        self.collector = collector
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pending: set = set()           # asked (or about to be), its snapshot not arrived yet
        self.fetching: Optional[str] = None # always None: nothing is fetched
        self.asked: dict = {}               # symbol -> monotonic time of its resubscription
        self.last_fetched: dict = {}        # symbol -> monotonic time its last snapshot arrived
        self.last_ids: dict = {}            # symbol -> the id of its last snapshot

    def want(self, symbol: str, recovery: bool = False, from_id: Optional[int] = None) -> None:
        metrics = self.collector.metrics
        now = time.monotonic()
        if recovery:
            metrics.counts["recovery_requests"] += 1
        stale = now - self.asked.get(symbol, now) > RESUBSCRIBE_RETRY_S
        fresh = (now - self.last_fetched.get(symbol, -1e18) < self.collector.args.recovery_dedup_seconds
                 and (from_id is None or self.last_ids.get(symbol, -1) >= from_id))
        if (symbol in self.pending and not stale) or (recovery and fresh):
            if recovery:
                metrics.counts["recovery_deduplicated"] += 1
            return
        self.pending.add(symbol)
        self.queue.put_nowait(symbol)

    def arrived(self, symbol: str, snapshot_id: Optional[int] = None) -> None:
        self.pending.discard(symbol)
        self.asked.pop(symbol, None)
        self.last_fetched[symbol] = time.monotonic()
        if snapshot_id is not None:
            self.last_ids[symbol] = snapshot_id

    async def run(self) -> None:
        collector = self.collector
        while True:
            symbol = await self.queue.get()
            live = collector._live
            if live is None or live.closed:  # the next connection's subscription brings it
                self.pending.discard(symbol)
                _LOG.info("%s: no connection delivers; its next subscription brings the snapshot",
                          symbol)
                continue
            try:
                for message in collector.venue.resubscribe_messages(collector.market, symbol):
                    await live.ws.send(message)
            except Exception as error:      # websockets' ConnectionClosed: the reconnect brings it
                self.pending.discard(symbol)
                _LOG.warning("%s: resubscription failed (%r); the reconnect brings the snapshot",
                             symbol, error)
                continue
            self.asked[symbol] = time.monotonic()
            collector.metrics.counts["resubscribes"] += 1
            _LOG.info("%s: resubscribed for a fresh snapshot", symbol)


# ---- the collector --------------------------------------------------------------------------

def recovery_partitions(bootstrap_servers: str, topic: str, timeout_s: float = 30.0) -> set:
    """The partitions of the recovery topic. A producer's metadata request creates a missing topic
    where the brokers create topics on first use (a consumer's does not); else this fails."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","),
                             max_block_ms=int(timeout_s * 1000))
    try:
        return producer.partitions_for(topic)
    except KafkaError as error:
        raise RuntimeError(f"--recovery_kafka_topic {topic}: no such topic on "
                           f"{bootstrap_servers} ({error!r})") from None
    finally:
        producer.close()


class GaveUp(Exception):
    pass


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:200]


class _Connection:
    def __init__(self, ws, number: int):
        self.ws, self.number, self.opened = ws, number, time.monotonic()
        self.connected = self.opened    # kept (opened is moved on by a failed planned reconnect)
        self.task: Optional[asyncio.Task] = None
        self.first_frame: Optional[float] = None    # monotonic time of its first depth frame
        self.closed = False                         # its reader has seen it end


class ReconnectBackoff:
    """The wait before each connection attempt: exponential with full jitter (tenacity's
    wait_random_exponential: uniform in [0, min(max_s, initial_s * 2**(failures - 1))]) over the
    attempts that failed since a connection last proved healthy, none before the first attempt after
    a healthy one. A connection proves healthy when it has delivered its first depth frame and
    stayed up healthy_s; one that ends before (accepted and closed at once, closed after a few
    frames) is a failed attempt like a refused handshake. Only a healthy connection resets the
    count. Also tenacity's wait= (failed handshakes are counted by its after=)."""

    def __init__(self, initial_s: float, max_s: float, healthy_s: float):
        self.jitter = tenacity.wait_random_exponential(multiplier=initial_s, max=max_s)
        self.healthy_s = healthy_s
        self.failures = 0

    def is_healthy(self, opened: float, first_frame: Optional[float], now: float) -> bool:
        return first_frame is not None and now - opened >= self.healthy_s

    def failed(self, *_) -> None:
        self.failures += 1

    def ended(self, opened: float, first_frame: Optional[float], now: float) -> bool:
        """A connection opened at `opened` ended at `now` (monotonic): True if it had proved
        healthy (the count resets), else it is one more failed attempt."""
        if self.is_healthy(opened, first_frame, now):
            self.failures = 0
            return True
        self.failed()
        return False

    def next_wait(self) -> float:
        if not self.failures:
            return 0.0
        return self.jitter(SimpleNamespace(attempt_number=self.failures))

    def __call__(self, retry_state) -> float:
        return self.next_wait()


class Collector:
    def __init__(self, args):
        self.args, self.market = args, args.market
        self.venue = venue_for(args.exchange)
        self.exchange = self.venue.NAME
        self.symbols = symbols_of(args)
        if self.venue.RESYNC == REST:           # Binance: endpoints per market
            ws_base, rest_base, depth_path, weight_limit = COLLECTOR_MARKETS[self.market]
            self.depth_url = (args.rest_url or rest_base).rstrip("/") + depth_path
            self.weight_per_minute = args.request_weight_per_minute or weight_limit // 2
        else:
            ws_base = COLLECTOR_STREAM_VENUES[self.exchange][0]
        self.url = self.venue.connect_url(args.ws_url or ws_base, self.market, self.symbols)
        self.metrics = Metrics(self.market, self.exchange)
        self.last_ids: dict = {}
        self.last_times: dict = {}
        self.backoff = ReconnectBackoff(args.initial_backoff, args.max_backoff,
                                        args.healthy_seconds)
        self.outage_attempts = 0            # connection attempts since the outage began
        self._outages = 0                   # outages begun (a delivering connection lost)
        self._live: Optional[_Connection] = None   # the current connection once it delivered
        self.stopping = threading.Event()
        self.sink = None
        self.frames: Optional[asyncio.Queue] = None
        self._connections = 0
        self._catching_up: set = set()      # symbols whose new connection may still repeat ids
        self._catch_up_until = 0.0

    # -- writing --

    def write_frame(self, frame: Frame, recv_ms: int) -> None:
        if frame.last_id is not None:
            self.last_ids[frame.symbol] = frame.last_id
            self.last_times[frame.symbol] = frame.event_time
        self.metrics.counts["messages"] += 1
        self._write(frame.symbol, envelope_line(self.market, frame.symbol, recv_ms, frame.kind,
                                                frame.payload, self.exchange), recv_ms)
        if frame.kind == SNAPSHOT:              # an in-stream snapshot (OKX, Bybit)
            self.metrics.counts["snapshots"] += 1
            self.snapshots.arrived(frame.symbol, frame.last_id)

    def _write(self, symbol: str, line: bytes, recv_ms: int) -> None:
        self.metrics.counts["records"] += 1
        self.sink.write(symbol, line, recv_ms)

    def write_snapshot(self, symbol: str, body, stream: int) -> bool:
        """Write a snapshot fetched while `stream` (delivering()) delivered, if it still does; else
        it is discarded: taken during an outage, it would sort after the outage's marker (a marker
        carries the last id before the loss) and end the disconnection before the deltas resume."""
        if self.delivering() != stream:
            self.metrics.counts["snapshots_discarded"] += 1
            _LOG.warning("%s: snapshot discarded: the connection it was taken for was lost", symbol)
            return False
        recv = now_ms()
        self.metrics.counts["snapshots"] += 1
        self._write(symbol, envelope_line(self.market, symbol, recv, SNAPSHOT, _encode(body),
                                          self.exchange), recv)
        return True

    def delivering(self) -> Optional[int]:
        """The stream being captured (the number of outages so far) while a connection delivers
        (it has sent a depth frame and is open), else None."""
        live = self._live
        if live is None or live.closed:
            return None
        return self._outages

    def write_markers(self, lost_ms: int, back_ms: int, attempts: int) -> None:
        for symbol in self.symbols:
            marker = Disconnect(symbols=self.symbols, attempts=attempts,
                                last_id=self.last_ids.get(symbol),
                                last_event_time=self.last_times.get(symbol),
                                from_ms=lost_ms, to_ms=back_ms)
            self._write(symbol, encode_marker(self.exchange, self.market, symbol, marker), back_ms)
        self.metrics.counts["disconnects"] += 1

    # -- connections --

    async def _open(self) -> _Connection:
        from websockets.asyncio.client import connect

        from websockets.exceptions import ConnectionClosed

        ws = await connect(self.url, open_timeout=10, ping_interval=20, ping_timeout=20,
                           max_size=2**24, proxy=None)
        try:
            for message in self.venue.subscribe_messages(self.market, self.symbols):
                await ws.send(message)
        except ConnectionClosed as closed:  # closed before it subscribed: a failed attempt
            raise ConnectionError(f"closed while subscribing ({closed})") from None
        self._connections += 1
        connection = _Connection(ws, self._connections)
        connection.task = asyncio.create_task(self._read(connection))
        return connection

    async def _keepalive(self, connection: _Connection, message: str) -> None:
        """The venue's own ping (OKX closes a connection silent for 30 s, whatever the websocket
        pings): its answer is a frame like any other (not written)."""
        while True:
            await asyncio.sleep(COLLECTOR_KEEPALIVE_S)
            await connection.ws.send(message)

    async def _read(self, connection: _Connection) -> None:
        """Frames of one connection -> the frames queue, then ("closed", why)."""
        why = "closed"
        ping = self.venue.keepalive_message()
        keepalive = asyncio.create_task(self._keepalive(connection, ping)) if ping else None
        try:
            while True:
                raw = await asyncio.wait_for(connection.ws.recv(decode=False), self.args.idle_timeout)
                await self.frames.put((connection, raw, now_ms()))
        except asyncio.TimeoutError:
            why = f"no frame for {self.args.idle_timeout:g} s"
        except asyncio.CancelledError:
            raise
        except Exception as error:          # websockets' ConnectionClosed, OSError
            why = repr(error)
        finally:
            connection.closed = True
            if keepalive is not None:
                keepalive.cancel()
            await connection.ws.close()
        await self.frames.put((connection, None, why))

    async def _attempt(self) -> _Connection:
        self.outage_attempts += 1
        self.metrics.counts["connect_attempts"] += 1
        return await self._open()

    def _gave_up(self, last_error) -> GaveUp:
        return GaveUp(f"the connection to {self.url} stayed down for more than "
                      f"--max_disconnect={self.args.max_disconnect:g} s ({self.outage_attempts} "
                      f"attempts; last error: {last_error})")

    async def _connect_with_backoff(self, down_since: float) -> Optional[_Connection]:
        """A new connection, retried with backoff and full jitter until --max_disconnect has passed
        since `down_since` (monotonic); None when stopping. When the last connection ended before it
        proved healthy, the first attempt waits as after a failed one."""
        from websockets.exceptions import InvalidHandshake, InvalidURI

        if self.backoff.failures:
            remaining = self.args.max_disconnect - (time.monotonic() - down_since)
            if remaining <= 0:
                raise self._gave_up("the connection ended before it proved healthy")
            wait = min(self.backoff.next_wait(), remaining)
            _LOG.warning("next connect attempt in %.1f s (%d failed in a row)", wait,
                         self.backoff.failures)
            await self._interruptible_sleep(wait)
            if self.stopping.is_set():
                return None
        remaining = self.args.max_disconnect - (time.monotonic() - down_since)
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_delay(max(remaining, 0)) | tenacity.stop_when_event_set(self.stopping),
            wait=self.backoff,
            retry=tenacity.retry_if_exception(
                lambda error: isinstance(error, (OSError, asyncio.TimeoutError, InvalidHandshake))
                and not isinstance(error, InvalidURI)),
            after=self.backoff.failed,
            sleep=self._interruptible_sleep,
            before_sleep=lambda state: _LOG.warning(
                "connect attempt %d failed (%s); next in %.1f s", self.outage_attempts,
                _short(state.outcome.exception()), state.upcoming_sleep))
        try:
            return await retrying(self._attempt)
        except tenacity.RetryError as exhausted:
            if self.stopping.is_set():
                return None
            raise self._gave_up(repr(exhausted.last_attempt.exception())) from None

    def _take_over(self, merge: OverlapMerge, new: _Connection) -> None:
        """The new connection of a planned reconnect takes over: what waited is written; symbols it
        had not joined yet may still bring ids the old one wrote (queued frames): those are
        dropped until it passes them (for OVERLAP_TIMEOUT_S at most)."""
        for frame in merge.switch_all():
            self.write_frame(frame, now_ms())
        if new.first_frame is None:         # the stream goes on through it: it delivers
            new.first_frame = time.monotonic()
        self._live = new
        self._catching_up = {symbol for symbol in self.symbols if symbol not in merge.switched}
        self._catch_up_until = time.monotonic() + OVERLAP_TIMEOUT_S

    def _repeated(self, frame: Frame) -> bool:
        if frame.symbol not in self._catching_up:
            return False
        if time.monotonic() > self._catch_up_until:
            self._catching_up.clear()
            return False
        last = self.last_ids.get(frame.symbol)
        if frame.last_id is not None and last is not None and frame.last_id <= last:
            return True
        self._catching_up.discard(frame.symbol)
        return False

    async def _interruptible_sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.1, deadline - time.monotonic()))

    def _delivers(self, connection: _Connection, lost_ms: Optional[int], down_since: float,
                  recv: int) -> None:
        """The current connection's first book frame (written next): the outage, if any, ends
        with one marker per symbol; a snapshot per symbol is wanted (a venue that sends its
        snapshots in-stream has sent them on this connection's subscription)."""
        connection.first_frame = time.monotonic()
        self._live = connection
        if lost_ms is not None:
            self.write_markers(lost_ms, recv, self.outage_attempts)
            self.metrics.counts["reconnects"] += 1
            self.metrics.last_reconnect_s = round(time.monotonic() - down_since, 3)
            _LOG.warning("reconnected after %.1f s: data again (%d connection attempts)",
                         time.monotonic() - down_since, self.outage_attempts)
        self.outage_attempts = 0
        if self.venue.RESYNC == REST:
            for symbol in self.symbols:
                self.snapshots.want(symbol)

    async def capture(self) -> int:
        """Connect, read, reconnect; returns the exit code. An outage begins when a connection that
        delivered is lost (lost_ms, down_since) and ends when a connection delivers again."""
        current, replacing, merge = None, None, None
        down_since, lost_ms = time.monotonic(), None
        while not self.stopping.is_set():
            if current is None:
                try:
                    current = await self._connect_with_backoff(down_since)
                except GaveUp as gave_up:
                    _LOG.error("giving up: %s", gave_up)
                    return COLLECTOR_EXIT_GAVE_UP
                if current is None:
                    break
            try:
                connection, raw, recv = await asyncio.wait_for(self.frames.get(), 0.5)
            except asyncio.TimeoutError:
                connection = None
            if connection is not None and raw is None:               # a connection ended
                if connection is replacing:
                    replacing, merge = None, None
                    _LOG.warning("the replacement connection ended (%s); keeping the old one", recv)
                elif connection is current:
                    if replacing is not None:                         # the overlap takes over
                        self._take_over(merge, replacing)
                        current, replacing, merge = replacing, None, None
                    else:
                        ended = time.monotonic()
                        healthy = self.backoff.ended(current.connected, current.first_frame, ended)
                        _LOG.warning("connection lost after %.1f s (%s)%s",
                                     ended - current.connected, recv, "" if healthy else ": it had not proved healthy, "
                                     f"{self.backoff.failures} failed attempts in a row")
                        if current.first_frame is not None:   # it delivered: an outage begins
                            down_since, lost_ms = ended, now_ms()
                            self._outages += 1
                            self.outage_attempts = 0
                        current, self._live = None, None
                continue
            if connection is not None:
                frame = self.venue.parse_frame(raw)
                if isinstance(frame, Refusal):
                    self.metrics.counts["refusals"] += 1
                    _LOG.error("the exchange refused: %s", frame.message)
                    frame = None
                if frame is not None:
                    if frame.kind in (DELTA, SNAPSHOT) and connection.first_frame is None:
                        if connection is current:
                            self._delivers(connection, lost_ms, down_since, recv)
                            lost_ms = None
                        else:
                            connection.first_frame = time.monotonic()
                    if merge is None:
                        if connection is current and not self._repeated(frame):
                            self.write_frame(frame, recv)
                    else:
                        chosen = merge.from_old(frame) if connection is current else merge.from_new(frame)
                        for each in chosen:
                            self.write_frame(each, recv)
            if merge is not None and (merge.done(self.symbols)
                                      or time.monotonic() - replacing.opened > OVERLAP_TIMEOUT_S):
                self._take_over(merge, replacing)
                old, current, replacing, merge = current, replacing, None, None
                old.task.cancel()
                await old.ws.close()
                self.metrics.counts["planned_reconnects"] += 1
                _LOG.info("planned reconnect done: connection %d replaced by %d", old.number,
                          current.number)
            elif (current is not None and replacing is None
                  and time.monotonic() - current.opened > self.args.planned_reconnect):
                try:
                    replacing = await self._open()
                    merge = OverlapMerge(self.last_ids)
                except Exception as error:     # the old connection goes on; try again later
                    _LOG.warning("planned reconnect: could not open a new connection (%r)", error)
                    current.opened = time.monotonic() - self.args.planned_reconnect + 5
        for connection in (current, replacing):
            if connection is not None:
                connection.task.cancel()
                await connection.ws.close()
        return 0

    # -- the recovery loop --

    def _answer_request(self, loop, data: bytes) -> None:
        """One recovery request (the pipeline's JSON, from Pub/Sub or Kafka): for one of our
        symbols, a fresh snapshot is wanted. Called from the listeners' threads."""
        try:
            request = json.loads(data)
            symbol = request.get("symbol")
            if (request.get("exchange", self.exchange) == self.exchange
                    and request.get("market") == self.market
                    and symbol in set(self.symbols)):
                from_id = request.get("from_id")
                loop.call_soon_threadsafe(self.snapshots.want, symbol, True,
                                          from_id if isinstance(from_id, int) else None)
        except (ValueError, AttributeError) as error:
            _LOG.warning("a recovery request that is not JSON: %r (%s)", data[:200], error)

    def _listen_for_recovery(self, loop) -> list:
        """The recovery listeners (Pub/Sub, Kafka or both), each a () -> None that stops it."""
        stops = []
        if self.args.recovery_subscription:
            stops.append(self._listen_on_pubsub(loop))
        if self.args.recovery_kafka_topic:
            stops.append(self._listen_on_kafka(loop))
        return stops

    def _listen_on_pubsub(self, loop):
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()

        def on_request(message) -> None:
            self._answer_request(loop, message.data)
            message.ack()

        future = subscriber.subscribe(self.args.recovery_subscription, on_request,
                                      flow_control=pubsub_v1.types.FlowControl(max_messages=100))

        def stop() -> None:
            future.cancel()
            subscriber.close()
        return stop

    def _listen_on_kafka(self, loop):
        """Reads --recovery_kafka_topic in a thread. Every partition is assigned to this consumer
        (no group rebalance to wait for: requests published once this returns are seen) and read
        on from the group's committed offset, or from the topic's end for a new group (an older
        request is stale). Offsets are committed as requests are answered."""
        from kafka import KafkaConsumer, TopicPartition

        args = self.args
        partitions = recovery_partitions(args.kafka_bootstrap_servers, args.recovery_kafka_topic)
        group = args.recovery_kafka_group or recovery_kafka_group(self.exchange, self.market)
        consumer = KafkaConsumer(bootstrap_servers=args.kafka_bootstrap_servers.split(","),
                                 group_id=group, enable_auto_commit=True,
                                 auto_offset_reset="latest")
        assigned = [TopicPartition(args.recovery_kafka_topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        for partition in assigned:
            if consumer.committed(partition) is None:
                consumer.seek_to_end(partition)
            consumer.position(partition)  # resolve it now, before any request is published
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                for records in consumer.poll(timeout_ms=200).values():
                    for record in records:
                        self._answer_request(loop, record.value)
            consumer.close()

        thread = threading.Thread(target=poll, name="recovery-kafka", daemon=True)
        thread.start()
        _LOG.info("answering recovery requests from Kafka topic %s (group %s)",
                  args.recovery_kafka_topic, group)

        def stop() -> None:
            done.set()
            thread.join(timeout=10)
        return stop

    # -- status --

    async def _ticks(self) -> None:
        last_status = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            self.sink.tick()
            if time.monotonic() - last_status >= self.args.status_seconds:
                last_status = time.monotonic()
                self.report()

    def report(self) -> dict:
        status = self.metrics.snapshot()
        status["snapshots_pending"] = len(self.snapshots.pending) + (self.snapshots.fetching is not None)
        _LOG.info("%s", Metrics.line(status))
        if self.args.metrics_file:
            write_json_atomically(self.args.metrics_file, status)
        return status

    # -- the whole run --

    def stop(self) -> None:
        if not self.stopping.is_set():
            _LOG.info("stopping: draining the output")
        self.stopping.set()

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        self.frames = asyncio.Queue(maxsize=10_000)
        self.sink = self._make_sink()
        if self.venue.RESYNC == REST:
            self.snapshots = Snapshots(self, self.depth_url, self.args.snapshot_limit,
                                       self.weight_per_minute)
        else:
            self.snapshots = Resubscriptions(self)
        helpers = [asyncio.create_task(self.snapshots.run()), asyncio.create_task(self._ticks())]
        listeners = self._listen_for_recovery(loop)
        _LOG.info("capturing %s %s %s from %s into %s", self.exchange, self.market, ",".join(self.symbols), self.url,
                  " and ".join(filter(None, (self.args.topic, self.args.kafka_topic,
                                             self.args.output_dir))))
        try:
            code = await self.capture()
        finally:
            for task in helpers:
                task.cancel()
            for stop_listening in listeners:
                stop_listening()
            await loop.run_in_executor(None, self.sink.close)
            self.report()
        return code

    def _make_sink(self):
        args = self.args
        sinks = []
        if args.topic:
            sinks.append(PubSubSink(args.topic, self.market, args.records_per_message,
                                    args.message_seconds, args.max_outstanding_messages,
                                    args.max_outstanding_bytes, self.metrics, self.exchange))
        if args.kafka_topic:
            sinks.append(KafkaTopicSink(args.kafka_bootstrap_servers, args.kafka_topic, self.market,
                                        args.records_per_message, args.message_seconds,
                                        self.metrics, self.exchange))
        if args.output_dir:
            sinks.append(FileSink(args.output_dir, self.market, args.flush_seconds, self.metrics,
                                  self.exchange))
        return sinks[0] if len(sinks) == 1 else BothSinks(*sinks)


def build_parser() -> argparse.ArgumentParser:
    """`feedcheck-collect`'s options (docs/reference/options.md documents them)."""
    parser = argparse.ArgumentParser(
        prog="feedcheck-collect",
        description="Capture one market's order-book streams live (one connection): Binance's "
                    "depth streams with a REST snapshot per symbol after every (re)connect and on "
                    "every recovery request; OKX's and Bybit v5's books, whose snapshots come "
                    "in-stream on every subscription and on the resubscription that answers a "
                    "recovery request. Into Pub/Sub, Kafka or rolling files. Exit codes: 0 stopped "
                    "(SIGTERM/SIGINT, output drained), 2 usage, 5 gave up after --max_disconnect.")
    add_collector_arguments(parser)
    return parser


def symbols_of(args) -> list:
    """--symbols as the venue writes them (upper case: BTCUSDT, BTC-USDT)."""
    return [s.strip().upper() for s in args.symbols.split(",") if s.strip()]


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.kafka_topic and not args.kafka_bootstrap_servers:
        parser.error("Kafka needs both --kafka_bootstrap_servers and --kafka_topic")
    if args.recovery_kafka_topic and not args.kafka_bootstrap_servers:
        parser.error("--recovery_kafka_topic needs --kafka_bootstrap_servers")
    if args.kafka_bootstrap_servers and not (args.kafka_topic or args.recovery_kafka_topic):
        parser.error("--kafka_bootstrap_servers needs --kafka_topic, --recovery_kafka_topic or both")
    if not (args.topic or args.output_dir or args.kafka_topic):
        parser.error("give --topic, --kafka_topic, --output_dir, or several")
    if args.topic and (not args.topic.startswith("projects/") or "/topics/" not in args.topic):
        parser.error(f"--topic must be projects/<project>/topics/<topic>, not {args.topic!r}")
    if args.recovery_subscription and "/subscriptions/" not in args.recovery_subscription:
        parser.error("--recovery_subscription must be projects/<project>/subscriptions/<name>")
    markets = COLLECTOR_STREAM_VENUES[args.exchange][1] if args.exchange in COLLECTOR_STREAM_VENUES \
        else tuple(COLLECTOR_MARKETS)
    if args.market not in markets:
        parser.error(f"--market {args.market} is not one of {args.exchange}'s: {', '.join(sorted(markets))}")
    symbols = symbols_of(args)
    why = venue_for(args.exchange).check_symbols(args.market, symbols) if symbols else "none given"
    if why:
        parser.error(f"--symbols must be comma-separated symbols ({why}), not {args.symbols!r}")
    if args.max_backoff < args.initial_backoff:
        parser.error("--initial_backoff must be <= --max_backoff")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    for chatty in ("websockets", "kafka"):          # their INFO lines drown the status lines
        logging.getLogger(chatty).setLevel(logging.WARNING)
    return asyncio.run(Collector(args).main())


if __name__ == "__main__":
    sys.exit(main())
