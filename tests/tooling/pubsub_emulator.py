"""pytest plugin: a session-wide Google Pub/Sub emulator on 127.0.0.1 and small helpers around it.

Use it from tests/conftest.py (or a test module) with::

    pytest_plugins = ["tests.tooling.pubsub_emulator"]

    def test_something(pubsub_emulator):
        topic = pubsub_emulator.create_topic(pubsub_emulator.unique_name("alerts"))
        sub = pubsub_emulator.create_subscription(topic, pubsub_emulator.unique_name("alerts-sub"))
        pubsub_emulator.publish(topic, b"hello", symbol="BTCUSDT")
        assert pubsub_emulator.pull_all(sub, max_wait_s=5, expected=1) == [(b"hello", {"symbol": "BTCUSDT"})]

The fixture reuses an emulator already answering at $PUBSUB_EMULATOR_HOST; otherwise it starts one
with scripts/pubsub_emulator.sh on a free port and stops it at the end of the session. Either way it
sets os.environ["PUBSUB_EMULATOR_HOST"] for the whole session, so every Google Pub/Sub client
created afterwards in this process (and in child processes) talks to the emulator.

The emulator keeps state in memory for its lifetime: a reused emulator still holds topics from
earlier runs, so tests should name their topics with unique_name().
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from google.api_core import exceptions as google_exceptions

PROJECT_ID = "feedcheck-test"
EMULATOR_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pubsub_emulator.sh"
EMULATOR_HOST_ENV = "PUBSUB_EMULATOR_HOST"

Message = tuple[bytes, dict[str, str]]


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def emulator_answers(host: str, timeout_s: float = 2.0) -> bool:
    """True if a Pub/Sub emulator answers at host ("127.0.0.1:8085"): its root URL returns "Ok"."""
    # No proxy: an http_proxy from the environment must not intercept a local probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{host}/", timeout=timeout_s) as response:
            return response.read().startswith(b"Ok")
    except (OSError, urllib.error.URLError):
        return False


def _script_env() -> dict[str, str]:
    # One state directory per port (the script's default): an inherited
    # PUBSUB_EMULATOR_STATE_DIR would make two emulators of one session share a pid file.
    env = dict(os.environ)
    env.pop("PUBSUB_EMULATOR_STATE_DIR", None)
    return env


def start_emulator(port: int) -> float:
    """Start an emulator on 127.0.0.1:port with the project script; returns seconds until it answered."""
    started = time.monotonic()
    result = subprocess.run(
        [str(EMULATOR_SCRIPT), "start", str(port)],
        capture_output=True, text=True, timeout=120, check=False, env=_script_env())
    if result.returncode != 0:
        raise RuntimeError(
            f"{EMULATOR_SCRIPT.name} start {port} failed (exit {result.returncode}):\n{result.stderr}")
    return time.monotonic() - started


def stop_emulator(port: int) -> None:
    """Stop the emulator the script started on port; a no-op if none is running."""
    subprocess.run([str(EMULATOR_SCRIPT), "stop", str(port)],
                   capture_output=True, text=True, timeout=60, check=True, env=_script_env())


@dataclass
class PubSubEmulator:
    """A running emulator plus helpers for arranging and checking Pub/Sub state in tests.

    Names may be short ("alerts") or full resource paths ("projects/p/topics/alerts").
    Topic and subscription ids need at least 3 characters (the emulator rejects shorter ones).
    """

    host: str
    project_id: str = PROJECT_ID
    started_by_fixture: bool = False
    startup_seconds: float | None = None
    _publisher: object | None = field(default=None, repr=False)
    _subscriber: object | None = field(default=None, repr=False)

    @staticmethod
    def unique_name(prefix: str) -> str:
        """A topic/subscription id that no earlier run used (a reused emulator keeps old state)."""
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def topic_path(self, name: str) -> str:
        return name if name.startswith("projects/") else f"projects/{self.project_id}/topics/{name}"

    def subscription_path(self, name: str) -> str:
        return name if name.startswith("projects/") else f"projects/{self.project_id}/subscriptions/{name}"

    # The helper clients talk to self.host explicitly (not via $PUBSUB_EMULATOR_HOST), so a test
    # that points the variable elsewhere cannot redirect them.
    @property
    def publisher(self):
        """A google.cloud.pubsub_v1.PublisherClient connected to this emulator."""
        if self._publisher is None:
            import grpc
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
            transport = PublisherGrpcTransport(channel=grpc.insecure_channel(self.host), host=self.host)
            self._publisher = pubsub_v1.PublisherClient(transport=transport)
        return self._publisher

    @property
    def subscriber(self):
        """A google.cloud.pubsub_v1.SubscriberClient connected to this emulator."""
        if self._subscriber is None:
            import grpc
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
            transport = SubscriberGrpcTransport(channel=grpc.insecure_channel(self.host), host=self.host)
            self._subscriber = pubsub_v1.SubscriberClient(transport=transport)
        return self._subscriber

    def create_topic(self, name: str) -> str:
        """Create the topic if it does not exist; returns its full path."""
        path = self.topic_path(name)
        try:
            self.publisher.create_topic(name=path, timeout=10)
        except google_exceptions.AlreadyExists:
            pass
        return path

    def create_subscription(self, topic: str, name: str) -> str:
        """Create a pull subscription on topic if it does not exist; returns its full path.

        Only messages published after this call reach the subscription.
        """
        path = self.subscription_path(name)
        try:
            self.subscriber.create_subscription(
                name=path, topic=self.topic_path(topic), ack_deadline_seconds=30, timeout=10)
        except google_exceptions.AlreadyExists:
            pass
        return path

    def publish(self, topic: str, data: bytes, **attrs: str) -> str:
        """Publish one message and wait for the server's ack; returns the message id."""
        return self.publisher.publish(self.topic_path(topic), data, **attrs).result(timeout=30)

    def pull_all(self, subscription: str, max_wait_s: float = 10.0, *,
                 expected: int | None = None, settle_s: float = 1.0) -> list[Message]:
        """Pull and ack messages until `expected` arrived, or no new message came for settle_s after
        the first one, or max_wait_s passed. Returns (data, attributes) in delivery order, which
        Pub/Sub does not promise to be publish order.
        """
        path = self.subscription_path(subscription)
        messages: list[Message] = []
        deadline = time.monotonic() + max_wait_s
        last_arrival: float | None = None
        while True:
            now = time.monotonic()
            if now >= deadline or (expected is not None and len(messages) >= expected):
                break
            if expected is None and last_arrival is not None and now - last_arrival >= settle_s:
                break
            wait_s = min(deadline - now, settle_s if expected is None else 2.0)
            try:
                # A pull long-polls server side until messages arrive or the RPC deadline is near;
                # the emulator answers an empty pull just before the deadline, or the client raises
                # DeadlineExceeded. retry=None: waiting here is the retry.
                response = self.subscriber.pull(
                    subscription=path, max_messages=100, timeout=max(wait_s, 0.1), retry=None)
            except google_exceptions.DeadlineExceeded:
                continue
            received = response.received_messages
            if not received:
                continue
            self.subscriber.acknowledge(
                subscription=path, ack_ids=[m.ack_id for m in received], timeout=10)
            messages.extend((m.message.data, dict(m.message.attributes)) for m in received)
            last_arrival = time.monotonic()
        return messages

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher.transport.close()
            self._publisher = None
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    """A Pub/Sub emulator for the whole test session (see the module docstring)."""
    previous_host = os.environ.get(EMULATOR_HOST_ENV)
    if previous_host and emulator_answers(previous_host):
        emulator = PubSubEmulator(host=previous_host)
        port = None
    else:
        port = free_local_port()
        startup_seconds = start_emulator(port)
        emulator = PubSubEmulator(host=f"127.0.0.1:{port}", started_by_fixture=True,
                                  startup_seconds=startup_seconds)
    os.environ[EMULATOR_HOST_ENV] = emulator.host
    try:
        yield emulator
    finally:
        emulator.close()
        if previous_host is None:
            os.environ.pop(EMULATOR_HOST_ENV, None)
        else:
            os.environ[EMULATOR_HOST_ENV] = previous_host
        if port is not None:
            stop_emulator(port)
