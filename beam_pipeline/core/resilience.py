"""Resilient calls to external services: Pub/Sub publishing and REST order-book snapshots.

Every call goes through two layers, both from maintained libraries:

* tenacity retries transient failures (connection refused, timeouts, 5xx, 429, gRPC UNAVAILABLE)
  with exponential backoff and full jitter, and gives up at a deadline measured from the first
  attempt. Each attempt's timeout is cut to the time left, so a call returns (or raises) within
  about ``deadline_s``. Permanent errors (HTTP 4xx other than 429, Pub/Sub NOT_FOUND,
  INVALID_ARGUMENT, ...) are raised at once: retrying cannot fix them.
* pybreaker keeps one circuit breaker per target (a Pub/Sub topic, an HTTP host) per process. A
  call that exhausted its retries counts as one failure; after ``fail_max`` consecutive ones the
  breaker opens and calls fail at once with CircuitOpenError, without touching the target, until
  ``reset_timeout_s`` has passed; then one trial call goes through (half-open) and closes the
  breaker if it succeeds. Permanent errors prove the target is up and do not count.

Both classes build their network clients lazily on first use, so they are cheap to construct and
can be pickled with a Beam DoFn, or built in ``DoFn.setup()``; call ``close()`` in ``teardown()``.

Delivery is at least once: an attempt whose acknowledgement was lost (a timeout) is sent again.
"""
from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable, TypeVar

import pybreaker
import tenacity

_LOG = logging.getLogger(__name__)

T = TypeVar("T")

# Below this an attempt could not even connect; attempts always get at least this much time.
_MIN_ATTEMPT_TIMEOUT_S = 0.05


# ---------------------------------------------------------------------------------------------
# Errors


class ExternalCallError(Exception):
    """Base of the errors raised by this module; ``target`` names the service that failed."""

    def __init__(self, message: str, *, target: str):
        super().__init__(message)
        self.target = target


class RetriesExhaustedError(ExternalCallError):
    """Every attempt failed with a transient error until the retry deadline passed.

    ``last_error`` (also ``__cause__``) is the last attempt's error.
    """

    def __init__(self, *, target: str, attempts: int, elapsed_s: float,
                 last_error: BaseException | None):
        super().__init__(
            f"{target}: gave up after {attempts} attempt(s) in {elapsed_s:.1f}s; "
            f"last error: {last_error!r}",
            target=target)
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.last_error = last_error


class CircuitOpenError(pybreaker.CircuitBreakerError, ExternalCallError):
    """The target's circuit breaker is open: the call was refused without contacting the target.

    A subclass of pybreaker.CircuitBreakerError, so handlers written for pybreaker also catch it.
    """

    def __init__(self, *, target: str, retry_in_s: float):
        ExternalCallError.__init__(
            self,
            f"{target}: circuit breaker open after repeated failures; "
            f"next trial call allowed in {retry_in_s:.1f}s",
            target=target)
        self.retry_in_s = retry_in_s


class HttpStatusError(ExternalCallError):
    """The HTTP server answered with an error status."""

    def __init__(self, *, target: str, url: str, status: int, body_excerpt: str,
                 retry_after_s: float | None = None):
        super().__init__(f"{target}: HTTP {status} for {url}: {body_excerpt!r}", target=target)
        self.url = url
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def is_transient(self) -> bool:
        # 429 (rate limited) and 5xx may pass on their own; other 4xx mean the request is wrong.
        # (Binance answers 418 once an IP ignored its 429s: not retried, on purpose.)
        return self.status == 429 or self.status >= 500


# ---------------------------------------------------------------------------------------------
# Policies


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry one call."""

    deadline_s: float = 30.0
    """Give up when the next attempt would start after this many seconds from the first one."""
    attempt_timeout_s: float = 10.0
    """Upper bound for one attempt (cut to the time left before the deadline)."""
    initial_backoff_s: float = 0.2
    """Scale of the first wait; waits are uniformly random up to initial * 2**(attempt-1)."""
    max_backoff_s: float = 5.0
    """Cap on the upper bound of one wait."""


@dataclass(frozen=True)
class BreakerPolicy:
    """When a target's circuit breaker opens and when it lets a trial call through."""

    fail_max: int = 5
    """Consecutive failed calls (each after its retries) that open the breaker."""
    reset_timeout_s: float = 30.0
    """Seconds the breaker stays open before it lets one trial call through (half-open)."""


# ---------------------------------------------------------------------------------------------
# Circuit breakers, one per target and process


class _LogStateChanges(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        _LOG.warning("circuit breaker %s: %s -> %s", cb.name,
                     getattr(old_state, "name", old_state), getattr(new_state, "name", new_state))


@dataclass
class _Breaker:
    breaker: pybreaker.CircuitBreaker
    storage: pybreaker.CircuitMemoryStorage  # kept to read opened_at through a public attribute


_breakers: dict[str, _Breaker] = {}
_breakers_lock = threading.Lock()


def _counts_as_target_failure(error: BaseException) -> bool:
    # Only exhausted retries say the target is unhealthy. A permanent error is an answer from a
    # healthy target (or a local bug), so it must neither open the breaker nor keep it open.
    return isinstance(error, RetriesExhaustedError)


def _breaker_for(target: str, policy: BreakerPolicy) -> _Breaker:
    """The process-wide breaker of target, created with policy on first use.

    Shared so that all DoFn instances (threads) of a worker learn together that a target is down.
    A later, different policy for the same target is ignored.
    """
    with _breakers_lock:
        entry = _breakers.get(target)
        if entry is None:
            storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
            breaker = pybreaker.CircuitBreaker(
                fail_max=policy.fail_max,
                reset_timeout=policy.reset_timeout_s,
                exclude=[lambda error: not _counts_as_target_failure(error)],
                listeners=[_LogStateChanges()],
                state_storage=storage,
                name=target,
                # The call that trips the breaker raises its own error (the real cause);
                # only the calls refused afterwards raise CircuitOpenError.
                throw_new_error_on_trip=False,
            )
            entry = _breakers[target] = _Breaker(breaker, storage)
        return entry


def _seconds_until_trial(entry: _Breaker) -> float:
    opened_at = entry.storage.opened_at
    if opened_at is None:
        return 0.0
    elapsed = time.time() - opened_at.timestamp()
    return max(0.0, entry.breaker.reset_timeout - elapsed)


# ---------------------------------------------------------------------------------------------
# The call path shared by both clients


def _call_with_retries(
    attempt: Callable[[float], T], *, target: str, policy: RetryPolicy,
    is_transient: Callable[[BaseException], bool],
    wait: Callable[[tenacity.RetryCallState], float] | None = None,
) -> T:
    """Run attempt(timeout_s) until it succeeds, raises a permanent error, or the deadline passes."""
    started = time.monotonic()

    def one_attempt() -> T:
        time_left = policy.deadline_s - (time.monotonic() - started)
        return attempt(max(min(policy.attempt_timeout_s, time_left), _MIN_ATTEMPT_TIMEOUT_S))

    def log_retry(state: tenacity.RetryCallState) -> None:
        _LOG.info("%s: attempt %d failed (%r); retrying in %.2fs", target, state.attempt_number,
                  state.outcome.exception() if state.outcome else None, state.upcoming_sleep)

    retrying = tenacity.Retrying(
        # stop_before_delay counts the coming wait too, so no attempt starts after the deadline.
        stop=tenacity.stop_before_delay(policy.deadline_s),
        wait=wait or _backoff(policy),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=log_retry,
    )
    try:
        return retrying(one_attempt)
    except tenacity.RetryError as exhausted:
        last_error = exhausted.last_attempt.exception()
        raise RetriesExhaustedError(
            target=target, attempts=exhausted.last_attempt.attempt_number,
            elapsed_s=time.monotonic() - started, last_error=last_error) from last_error


def _backoff(policy: RetryPolicy) -> tenacity.wait.wait_base:
    # Full jitter: many workers retrying against one recovering service spread out instead of
    # arriving in synchronized waves.
    return tenacity.wait_random_exponential(multiplier=policy.initial_backoff_s,
                                            max=policy.max_backoff_s)


def _guarded(entry: _Breaker, target: str, call: Callable[[], T]) -> T:
    """Run call under the target's breaker; CircuitOpenError if the breaker refuses it."""
    try:
        # calling() rather than breaker.call(): call() holds the breaker's lock for the whole
        # call, which would serialize every thread using the target behind one slow request.
        with entry.breaker.calling():
            return call()
    except pybreaker.CircuitBreakerError as refused:
        if isinstance(refused, CircuitOpenError):
            raise
        raise CircuitOpenError(target=target, retry_in_s=_seconds_until_trial(entry)) from None


# ---------------------------------------------------------------------------------------------
# Pub/Sub


def _is_transient_pubsub_error(error: BaseException) -> bool:
    from google.api_core import exceptions as gexc
    return isinstance(error, (
        gexc.ServiceUnavailable,   # server down or unreachable (also: connection refused)
        gexc.DeadlineExceeded,     # the RPC ran out of time
        gexc.InternalServerError,
        gexc.Unknown,
        gexc.Aborted,
        gexc.ResourceExhausted,    # quota or server overload
        gexc.Cancelled,
        TimeoutError,              # our wait for the acknowledgement ran out
    ))


# gRPC backs off reconnecting to a dead server up to 120 s by default, and meanwhile fails every
# call at once with UNAVAILABLE: after an outage the breaker's trial call would fail although the
# server is back. Measured with the emulator: after a 45 s outage a default channel needed 16.6 s
# to reconnect; with these options, 0.4 s after a 30 s outage.
_GRPC_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# PublisherClient.publish(topic, data, ordering_key, retry, timeout, **attrs) would take these
# attribute names as its own arguments (an attribute "timeout" would silently become the RPC timeout).
_RESERVED_ATTRIBUTE_NAMES = frozenset({"topic", "data", "ordering_key", "retry", "timeout"})


class ResilientPublisher:
    """Publishes to one Pub/Sub topic, waiting for the server's ack, with retries and a breaker.

    The client is created on the first publish(), so constructing this is cheap and the object
    pickles (without its client); build it in DoFn.setup() and close() it in DoFn.teardown().
    Thread-safe.

    Publisher flow control blocks a producer (all threads sharing this object) that has more than
    max_outstanding_messages or max_outstanding_bytes unacknowledged, instead of buffering without
    bound; time blocked there is outside the retry deadline, but each outstanding batch fails or
    succeeds within attempt_timeout_s. Google's client does not retry on its own here
    (retry=None): tenacity is the only retry layer, so the deadline holds.

    emulator_host ("127.0.0.1:8085") selects the Pub/Sub emulator; by default
    $PUBSUB_EMULATOR_HOST as it is when this object is constructed, else the real service with
    Application Default Credentials.
    """

    def __init__(
        self, topic_path: str, *,
        retry: RetryPolicy = RetryPolicy(),
        breaker: BreakerPolicy = BreakerPolicy(),
        max_outstanding_messages: int = 1000,
        max_outstanding_bytes: int = 10 * 1024 * 1024,
        emulator_host: str | None = None,
    ):
        if not topic_path.startswith("projects/") or "/topics/" not in topic_path:
            raise ValueError(f"expected projects/<project>/topics/<topic>, got {topic_path!r}")
        self.topic_path = topic_path
        self.retry_policy = retry
        self.breaker_policy = breaker
        self.max_outstanding_messages = max_outstanding_messages
        self.max_outstanding_bytes = max_outstanding_bytes
        self.emulator_host = emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST") or None
        self.target = f"pubsub://{self.emulator_host or 'pubsub.googleapis.com'}/{topic_path}"
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        del state["_client_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client_lock = threading.Lock()

    @property
    def breaker(self) -> pybreaker.CircuitBreaker:
        """This topic's process-wide circuit breaker (state: breaker.current_state)."""
        return _breaker_for(self.target, self.breaker_policy).breaker

    def publish(self, data: bytes, /, **attrs: str) -> str:
        """Publish one message and return its server-assigned id once the server acknowledged it.

        Raises RetriesExhaustedError when transient failures last past the retry deadline,
        CircuitOpenError while the breaker is open, google.api_core exceptions for permanent
        errors (e.g. NotFound for a missing topic), ValueError/TypeError for a bad message.
        """
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        reserved = _RESERVED_ATTRIBUTE_NAMES.intersection(attrs)
        if reserved:
            raise ValueError(f"attribute names reserved by the Pub/Sub client: {sorted(reserved)}")

        def attempt(timeout_s: float) -> str:
            future = self._get_client().publish(self.topic_path, data, **attrs)
            return future.result(timeout=timeout_s)

        return _guarded(
            _breaker_for(self.target, self.breaker_policy), self.target,
            lambda: _call_with_retries(attempt, target=self.target, policy=self.retry_policy,
                                       is_transient=_is_transient_pubsub_error))

    def close(self) -> None:
        """Release the client (a later publish() creates a new one). Idempotent."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.stop()  # flushes batches of other threads still publishing
            client.transport.close()

    def _get_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        import grpc
        from google.cloud import pubsub_v1
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        if self.emulator_host:
            # What Google's client does for $PUBSUB_EMULATOR_HOST, plus the reconnect options.
            channel = grpc.insecure_channel(self.emulator_host, options=_GRPC_RECONNECT_OPTIONS)
            transport = PublisherGrpcTransport(channel=channel, host=self.emulator_host)
        else:
            def channel_with_short_reconnect_backoff(host: str, **kwargs: Any) -> Any:
                options = list(kwargs.pop("options", None) or []) + _GRPC_RECONNECT_OPTIONS
                return PublisherGrpcTransport.create_channel(host, options=options, **kwargs)
            transport = PublisherGrpcTransport(channel=channel_with_short_reconnect_backoff)

        options = pubsub_v1.types.PublisherOptions(
            flow_control=pubsub_v1.types.PublishFlowControl(
                message_limit=self.max_outstanding_messages,
                byte_limit=self.max_outstanding_bytes,
                limit_exceeded_behavior=pubsub_v1.types.LimitExceededBehavior.BLOCK,
            ),
            retry=None,
            timeout=self.retry_policy.attempt_timeout_s,
        )
        return pubsub_v1.PublisherClient(publisher_options=options, transport=transport)


# ---------------------------------------------------------------------------------------------
# REST snapshots


def _is_transient_http_error(error: BaseException) -> bool:
    if isinstance(error, HttpStatusError):
        return error.is_transient
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, ssl.SSLCertVerificationError):
        return False  # a certificate that does not verify will not verify on the next attempt
    # Connection refused/reset, DNS failure, socket timeouts (urllib wraps some in URLError,
    # raises others bare), and a body cut short (http.client.IncompleteRead is not an OSError).
    return isinstance(error, (OSError, http.client.HTTPException))


def _retry_after_seconds(header: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _wait_at_least_retry_after(
        backoff: tenacity.wait.wait_base) -> Callable[[tenacity.RetryCallState], float]:
    # Exchanges (Binance) ban clients that keep calling after a 429 told them how long to wait.
    def wait(state: tenacity.RetryCallState) -> float:
        planned = backoff(state)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, HttpStatusError) and error.retry_after_s is not None:
            return max(planned, error.retry_after_s)
        return planned
    return wait


class SnapshotFetcher:
    """Fetches REST order-book depth snapshots (JSON) with retries and a per-host breaker.

    base_url is the depth endpoint, e.g. "https://api.binance.com/api/v3/depth"; fetch() adds
    symbol and limit to its query. Uses only the standard library (urllib). Thread-safe and
    picklable; holds no connection between calls.
    """

    def __init__(
        self, base_url: str, *,
        retry: RetryPolicy = RetryPolicy(deadline_s=30.0, attempt_timeout_s=5.0),
        breaker: BreakerPolicy = BreakerPolicy(),
        user_agent: str = "feedcheck-snapshot-fetcher",
    ):
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected an http(s) URL, got {base_url!r}")
        self.base_url = base_url
        self.retry_policy = retry
        self.breaker_policy = breaker
        self.user_agent = user_agent
        self.target = f"{parts.scheme}://{parts.netloc}"

    @property
    def breaker(self) -> pybreaker.CircuitBreaker:
        """This host's process-wide circuit breaker (state: breaker.current_state)."""
        return _breaker_for(self.target, self.breaker_policy).breaker

    def url_for(self, symbol: str, limit: int = 1000) -> str:
        parts = urllib.parse.urlsplit(self.base_url)
        query = urllib.parse.parse_qsl(parts.query) + [("symbol", symbol), ("limit", str(limit))]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def fetch(self, symbol: str, limit: int = 1000) -> Any:
        """GET the snapshot of symbol and return the parsed JSON.

        Raises RetriesExhaustedError, CircuitOpenError, HttpStatusError (4xx other than 429, at
        once), json.JSONDecodeError (a 2xx body that is not JSON; not retried).
        """
        return self.get_json(self.url_for(symbol, limit))

    def get_json(self, url: str) -> Any:
        """GET url (on this fetcher's host) with retries and the breaker; return the parsed JSON."""
        parts = urllib.parse.urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.target:
            raise ValueError(f"{url!r} is not on {self.target}")
        base_wait = _backoff(self.retry_policy)
        return _guarded(
            _breaker_for(self.target, self.breaker_policy), self.target,
            lambda: _call_with_retries(
                functools.partial(self._get_once, url), target=self.target,
                policy=self.retry_policy, is_transient=_is_transient_http_error,
                wait=_wait_at_least_retry_after(base_wait)))

    def _get_once(self, url: str, timeout_s: float) -> Any:
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": self.user_agent})
        # urllib's timeout bounds the connect and each socket read, not the whole transfer; the
        # deadline check between chunks bounds a server that trickles its body.
        deadline = time.monotonic() + timeout_s
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                body = bytearray()
                while chunk := response.read(64 * 1024):
                    body += chunk
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{url}: body not complete within {timeout_s:.1f}s")
        except urllib.error.HTTPError as error:
            try:
                excerpt = error.read(200).decode("utf-8", "replace")
            finally:
                error.close()  # the error holds the response's open connection
            raise HttpStatusError(
                target=self.target, url=url, status=error.code, body_excerpt=excerpt,
                retry_after_s=_retry_after_seconds(error.headers.get("Retry-After")),
            ) from None
        return json.loads(body)
