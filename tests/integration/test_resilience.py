"""beam_pipeline.core.resilience against real services: the Pub/Sub emulator and local HTTP servers.

Nothing is mocked. Retry and breaker policies are shrunk to seconds so the suite stays well under a
minute; timing assertions only bound from above with generous slack (a loaded 2-core machine), or
from below where a wait is the behaviour under test.
"""
from __future__ import annotations

import json
import pickle
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import pybreaker
import pytest
from google.api_core import exceptions as google_exceptions

from beam_pipeline.core.resilience import (
    BreakerPolicy,
    CircuitOpenError,
    HttpStatusError,
    ResilientPublisher,
    RetriesExhaustedError,
    RetryPolicy,
    SnapshotFetcher,
)
from tests.tooling.pubsub_emulator import (
    PubSubEmulator,
    free_local_port,
    start_emulator,
    stop_emulator,
)

# Registers the pubsub_emulator fixture when no conftest.py does; a conftest listing the same
# plugin is fine (pytest loads a plugin module once).
pytest_plugins = ["tests.tooling.pubsub_emulator"]

# Slack for "this returned by the deadline" on a busy machine.
SCHEDULING_SLACK_S = 2.0
# A refusal by an open breaker takes microseconds; this bound is far below any retry deadline used.
FAIL_FAST_S = 0.5


# ---------------------------------------------------------------------------------------------
# Pub/Sub against the emulator


def test_publish_round_trip_keeps_data_and_attributes(pubsub_emulator: PubSubEmulator):
    topic = pubsub_emulator.create_topic(pubsub_emulator.unique_name("alerts"))
    subscription = pubsub_emulator.create_subscription(topic, pubsub_emulator.unique_name("alerts-sub"))
    # No emulator_host: the publisher reads $PUBSUB_EMULATOR_HOST, which the fixture set.
    publisher = ResilientPublisher(topic)
    sent = [
        (b'{"symbol":"BTCUSDT","gap":[1001,1004]}', {"symbol": "BTCUSDT", "kind": "gap"}),
        (b"\x00\xff binary \xe2\x82\xac", {"symbol": "ETHUSDT", "note": "caf\u00e9 \u20ac"}),
        (b"no attributes", {}),
    ]
    try:
        message_ids = [publisher.publish(data, **attrs) for data, attrs in sent]
    finally:
        publisher.close()

    assert len(set(message_ids)) == len(sent)
    received = pubsub_emulator.pull_all(subscription, max_wait_s=15, expected=len(sent))
    # Pub/Sub does not promise delivery order; compare as multisets.
    assert sorted(received) == sorted(sent)
    assert publisher.breaker.current_state == pybreaker.STATE_CLOSED


def test_publisher_pickles_without_its_client_and_works_after(pubsub_emulator: PubSubEmulator):
    topic = pubsub_emulator.create_topic(pubsub_emulator.unique_name("recovery"))
    subscription = pubsub_emulator.create_subscription(topic, pubsub_emulator.unique_name("recovery-sub"))
    publisher = ResilientPublisher(topic)
    publisher.publish(b"before pickling")  # creates the client, which must not be pickled
    clone = pickle.loads(pickle.dumps(publisher))
    try:
        clone.publish(b"from the clone", symbol="BTCUSDT", from_id="1001")
    finally:
        publisher.close()
        clone.close()
    received = pubsub_emulator.pull_all(subscription, max_wait_s=15, expected=2)
    assert sorted(received) == [(b"before pickling", {}),
                                (b"from the clone", {"symbol": "BTCUSDT", "from_id": "1001"})]


def test_flow_control_blocks_concurrent_producers_instead_of_failing_them(
        pubsub_emulator: PubSubEmulator):
    topic = pubsub_emulator.create_topic(pubsub_emulator.unique_name("burst"))
    subscription = pubsub_emulator.create_subscription(topic, pubsub_emulator.unique_name("burst-sub"))
    # At most 2 unacknowledged messages: with 8 threads most publishes must wait for room.
    publisher = ResilientPublisher(topic, max_outstanding_messages=2)
    errors: list[BaseException] = []

    def produce(worker: int) -> None:
        try:
            for i in range(5):
                publisher.publish(f"{worker}-{i}".encode(), worker=str(worker))
        except BaseException as error:  # noqa: BLE001 (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        publisher.close()
    assert errors == []
    received = pubsub_emulator.pull_all(subscription, max_wait_s=15, expected=40)
    assert sorted(data for data, _ in received) == sorted(
        f"{w}-{i}".encode() for w in range(8) for i in range(5))


def test_missing_topic_fails_at_once_and_does_not_count_against_the_breaker(
        pubsub_emulator: PubSubEmulator):
    publisher = ResilientPublisher(
        pubsub_emulator.topic_path(pubsub_emulator.unique_name("never-created")),
        retry=RetryPolicy(deadline_s=10.0, attempt_timeout_s=5.0),
        breaker=BreakerPolicy(fail_max=1, reset_timeout_s=60))
    try:
        started = time.monotonic()
        with pytest.raises(google_exceptions.NotFound):
            publisher.publish(b"x")
        assert time.monotonic() - started < 10.0 / 2  # no retries until the deadline
        # fail_max=1: had the NotFound counted, the breaker would now be open.
        assert publisher.breaker.current_state == pybreaker.STATE_CLOSED
    finally:
        publisher.close()


def test_reserved_attribute_names_are_rejected_before_any_call():
    publisher = ResilientPublisher("projects/feedcheck-test/topics/unused-topic",
                                   emulator_host=f"127.0.0.1:{free_local_port()}")
    with pytest.raises(ValueError, match="timeout"):
        publisher.publish(b"x", timeout="5")
    assert publisher._client is None  # nothing was contacted, not even a client built


def test_publisher_gives_up_by_the_deadline_then_breaker_opens_then_recovers():
    port = free_local_port()  # nothing listens here until the emulator is started below
    host = f"127.0.0.1:{port}"
    retry = RetryPolicy(deadline_s=3.0, attempt_timeout_s=1.0, initial_backoff_s=0.05, max_backoff_s=0.5)
    topic_id = PubSubEmulator.unique_name("outage")
    publisher = ResilientPublisher(
        f"projects/feedcheck-test/topics/{topic_id}", emulator_host=host, retry=retry,
        breaker=BreakerPolicy(fail_max=2, reset_timeout_s=4.0))
    emulator = PubSubEmulator(host=host)
    try:
        # Closed: each call retries until its deadline, then gives up with the last error attached.
        for failures in (1, 2):
            started = time.monotonic()
            with pytest.raises(RetriesExhaustedError) as gave_up:
                publisher.publish(b"lost")
            elapsed = time.monotonic() - started
            assert elapsed <= retry.deadline_s + SCHEDULING_SLACK_S
            assert gave_up.value.attempts >= 2
            # Refused connection (UNAVAILABLE), or, on a loaded machine, our 1 s wait ran out first.
            assert isinstance(gave_up.value.last_error,
                              (google_exceptions.ServiceUnavailable, TimeoutError))
            assert publisher.breaker.fail_counter == failures
        assert publisher.breaker.current_state == pybreaker.STATE_OPEN

        # Open: refused at once, without waiting for anything.
        started = time.monotonic()
        with pytest.raises(CircuitOpenError) as refused:
            publisher.publish(b"refused")
        assert time.monotonic() - started < FAIL_FAST_S
        assert isinstance(refused.value, pybreaker.CircuitBreakerError)
        assert 0 < refused.value.retry_in_s <= 4.0
        trial_allowed_at = started + refused.value.retry_in_s

        # The service comes back on the same port (in-memory emulator: the topic must be recreated).
        start_emulator(port)
        topic = emulator.create_topic(topic_id)
        subscription = emulator.create_subscription(topic, PubSubEmulator.unique_name("outage-sub"))

        # Half-open after reset_timeout: one trial call goes through, succeeds, closes the breaker.
        time.sleep(max(0.0, trial_allowed_at - time.monotonic()) + 0.2)
        publisher.publish(b"after recovery", attempt="trial")
        assert publisher.breaker.current_state == pybreaker.STATE_CLOSED
        publisher.publish(b"business as usual")
        received = emulator.pull_all(subscription, max_wait_s=15, expected=2)
        assert sorted(received) == [(b"after recovery", {"attempt": "trial"}),
                                    (b"business as usual", {})]
    finally:
        publisher.close()
        emulator.close()
        stop_emulator(port)


# ---------------------------------------------------------------------------------------------
# REST snapshots against a local HTTP server

SNAPSHOT = {"lastUpdateId": 1027024, "bids": [["4.00000000", "431.00000000"]],
            "asks": [["4.00000200", "12.00000000"]]}


@dataclass
class Reply:
    status: int = 200
    body: bytes = json.dumps(SNAPSHOT).encode()
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0  # wait this long before answering (a server that hangs)


@dataclass
class ScriptedServer:
    """An HTTP server on 127.0.0.1 whose n-th request (0-based) gets script(n)."""

    script: Callable[[int], Reply]
    paths: list[str] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def requests(self) -> int:
        with self.lock:
            return len(self.paths)

    def depth_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v3/depth"


@pytest.fixture
def http_server() -> Iterator[Callable[[Callable[[int], Reply]], ScriptedServer]]:
    """Factory: http_server(script) starts a ScriptedServer; all are shut down after the test."""
    started: list[tuple[ThreadingHTTPServer, ScriptedServer]] = []

    def start(script: Callable[[int], Reply]) -> ScriptedServer:
        scripted = ScriptedServer(script)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with scripted.lock:
                    n = len(scripted.paths)
                    scripted.paths.append(self.path)
                reply = scripted.script(n)
                if reply.hang_s and scripted.released.wait(reply.hang_s):
                    return  # test over: drop the connection
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        scripted.port = server.server_address[1]
        # A short poll interval: shutdown() waits for one, after every test.
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        started.append((server, scripted))
        return scripted

    yield start
    for server, scripted in started:
        scripted.released.set()
        server.shutdown()
        server.server_close()


FAST_HTTP_RETRY = RetryPolicy(deadline_s=4.0, attempt_timeout_s=0.5, initial_backoff_s=0.05,
                              max_backoff_s=0.3)


def test_fetch_succeeds_after_transient_503s(http_server):
    server = http_server(lambda n: Reply(503, b"busy") if n < 3 else Reply())
    fetcher = SnapshotFetcher(server.depth_url(), retry=FAST_HTTP_RETRY)

    assert fetcher.fetch("BTCUSDT", limit=1000) == SNAPSHOT
    assert server.requests == 4
    assert server.paths[-1] == "/api/v3/depth?symbol=BTCUSDT&limit=1000"
    assert fetcher.breaker.current_state == pybreaker.STATE_CLOSED


def test_fetch_times_out_on_a_hanging_server_and_retries(http_server):
    hang_s = 10.0  # far beyond the 0.5 s attempt timeout; released when the test ends
    server = http_server(lambda n: Reply(hang_s=hang_s) if n < 2 else Reply())
    fetcher = SnapshotFetcher(server.depth_url(), retry=FAST_HTTP_RETRY)

    started = time.monotonic()
    assert fetcher.fetch("ETHUSDT") == SNAPSHOT
    elapsed = time.monotonic() - started
    assert server.requests == 3
    assert elapsed >= 2 * FAST_HTTP_RETRY.attempt_timeout_s  # two attempts did wait for their timeout
    assert elapsed < hang_s  # and neither waited for the hanging server


def test_fetch_gives_up_by_the_deadline_when_the_server_always_hangs(http_server):
    server = http_server(lambda n: Reply(hang_s=10.0))
    retry = RetryPolicy(deadline_s=1.5, attempt_timeout_s=0.5, initial_backoff_s=0.05, max_backoff_s=0.2)
    fetcher = SnapshotFetcher(server.depth_url(), retry=retry)

    started = time.monotonic()
    with pytest.raises(RetriesExhaustedError) as gave_up:
        fetcher.fetch("BTCUSDT")
    assert time.monotonic() - started <= retry.deadline_s + SCHEDULING_SLACK_S
    assert gave_up.value.attempts >= 2
    assert isinstance(gave_up.value.last_error, TimeoutError)


def test_fetch_does_not_retry_a_404(http_server):
    server = http_server(lambda n: Reply(404, b'{"code":-1121,"msg":"Invalid symbol."}'))
    fetcher = SnapshotFetcher(server.depth_url(), retry=FAST_HTTP_RETRY,
                              breaker=BreakerPolicy(fail_max=1, reset_timeout_s=60))

    with pytest.raises(HttpStatusError) as rejected:
        fetcher.fetch("NOSUCHSYMBOL")
    assert rejected.value.status == 404
    assert "Invalid symbol" in str(rejected.value)
    assert server.requests == 1
    # fail_max=1: had the 404 counted, the breaker would now be open.
    assert fetcher.breaker.current_state == pybreaker.STATE_CLOSED


def test_fetch_waits_as_long_as_retry_after_says(http_server):
    server = http_server(lambda n: Reply(429, b"slow down", {"Retry-After": "1"}) if n == 0 else Reply())
    fetcher = SnapshotFetcher(server.depth_url(), retry=FAST_HTTP_RETRY)

    started = time.monotonic()
    assert fetcher.fetch("BTCUSDT") == SNAPSHOT
    assert time.monotonic() - started >= 1.0  # the backoff alone would be at most 0.05 s
    assert server.requests == 2


def test_breaker_opens_on_a_failing_host_and_closes_after_it_recovers(http_server):
    healthy = threading.Event()
    server = http_server(lambda n: Reply() if healthy.is_set() else Reply(503, b"down"))
    retry = RetryPolicy(deadline_s=1.0, attempt_timeout_s=0.5, initial_backoff_s=0.05, max_backoff_s=0.2)
    reset_timeout_s = 1.5
    fetcher = SnapshotFetcher(server.depth_url(), retry=retry,
                              breaker=BreakerPolicy(fail_max=2, reset_timeout_s=reset_timeout_s))

    for _ in range(2):
        with pytest.raises(RetriesExhaustedError) as gave_up:
            fetcher.fetch("BTCUSDT")
        assert isinstance(gave_up.value.last_error, HttpStatusError)
        assert gave_up.value.last_error.status == 503
    assert fetcher.breaker.current_state == pybreaker.STATE_OPEN

    # Open: refused at once and the server sees no request.
    requests_before = server.requests
    started = time.monotonic()
    with pytest.raises(CircuitOpenError):
        fetcher.fetch("BTCUSDT")
    assert time.monotonic() - started < FAIL_FAST_S
    assert server.requests == requests_before

    # Half-open trial while the host still fails: it fails and the breaker opens again.
    time.sleep(reset_timeout_s + 0.2)
    with pytest.raises(RetriesExhaustedError):
        fetcher.fetch("BTCUSDT")
    assert fetcher.breaker.current_state == pybreaker.STATE_OPEN
    with pytest.raises(CircuitOpenError):
        fetcher.fetch("BTCUSDT")

    # The host recovers; the next trial succeeds and closes the breaker.
    healthy.set()
    time.sleep(reset_timeout_s + 0.2)
    assert fetcher.fetch("BTCUSDT") == SNAPSHOT
    assert fetcher.breaker.current_state == pybreaker.STATE_CLOSED
    assert fetcher.fetch("ETHUSDT") == SNAPSHOT


def test_url_for_keeps_an_existing_query():
    fetcher = SnapshotFetcher("http://127.0.0.1:9/api/v3/depth?venue=spot")
    assert fetcher.url_for("BTCUSDT", 100) == \
        "http://127.0.0.1:9/api/v3/depth?venue=spot&symbol=BTCUSDT&limit=100"
    with pytest.raises(ValueError):
        SnapshotFetcher("ftp://127.0.0.1/depth")
