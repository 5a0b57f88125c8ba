"""Pub/Sub messages a streaming DirectRunner job has pulled and not yet acknowledged.

Inbox holds each pull's ack ids until every output row its messages produced is written
(core/durability.py), renews their leases meanwhile, sizes the next pull by what a stop can drain,
and after a killed run awaits the messages that run had pulled (Journal: <output>/_state/
inflight.jsonl) before it hands on newer ones. runners/direct.py's Pub/Sub read drives it.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time

from beam_pipeline.core import durability

ACK_IDS_PER_REQUEST = 1000      # Pub/Sub takes at most this many ack ids in one request
_LOG = logging.getLogger(__name__)


def publish_ms(message) -> int:
    return int(message.publish_time.timestamp() * 1000)


def _in_requests(ack_ids):
    """`ack_ids` in slices Pub/Sub takes in one request."""
    for start in range(0, len(ack_ids), ACK_IDS_PER_REQUEST):
        yield ack_ids[start:start + ACK_IDS_PER_REQUEST]


class _Pull:
    """One pull's messages, acknowledged together: `mark` is the durability ledger's mark taken at
    the first idle moment after it (core/durability.py), None while it may still be held."""

    __slots__ = ("number", "ack_ids", "newest_ms", "mark")

    def __init__(self, number, ack_ids, newest_ms):
        self.number, self.ack_ids, self.newest_ms, self.mark = number, ack_ids, newest_ms, None


class Journal:
    """What this job pulled and has not acknowledged, on disk: <output>/_state/inflight.jsonl.

    A job killed before it acknowledged what it pulled leaves those messages leased to nobody
    until their lease runs out; Pub/Sub then delivers them again, after newer ones the restarted
    job has already read, and a key started on the newer ids would take the older ones for
    duplicates. So the journal records each pull (its ack ids, its messages' ids and publish
    times) and each acknowledgement; the next run of the job (`recover`) asks Pub/Sub to deliver
    the unacknowledged ones again at once (ack deadline 0) and holds its watermark at the oldest
    of them until every one has come back (or `give_up_s` passed: they were acknowledged just
    before the kill), so each key is sequenced in publish order as if nothing had happened.
    Newer messages pulled meanwhile wait in the Inbox's stash (Inbox.stash): Pub/Sub hands out
    what it never delivered before what it delivers again (the emulator gave 720 new messages
    before the first of 720 nacked ones), and a key handed those first would start past the
    older ids and take them for duplicates. Local output folders only (an object store has no
    append)."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._handle = None

    def _write(self, entry: dict) -> None:
        if self._handle is None:
            self._handle = open(self.path, "a")
        self._handle.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def pulled(self, number: int, ack_ids, messages: dict) -> None:
        self._write({"pull": number, "ack_ids": ack_ids, "messages": messages})

    def acknowledged(self, numbers) -> None:
        if numbers:
            self._write({"acked": list(numbers)})

    def awaiting(self, messages: dict) -> None:
        if messages:
            self._write({"awaiting": messages})

    def unfinished(self) -> tuple[list, dict]:
        """(ack ids, {message id: publish ms}) of what the journal's run pulled and did not
        acknowledge, and of what it was still awaiting."""
        pulls, acked, awaiting = {}, set(), {}
        try:
            with open(self.path) as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue            # a line cut short by the kill
                    if "pull" in entry:
                        pulls[entry["pull"]] = entry
                    elif "acked" in entry:
                        acked.update(entry["acked"])
                    elif "awaiting" in entry:
                        awaiting.update(entry["awaiting"])
        except FileNotFoundError:
            return [], {}
        ack_ids, messages = [], dict(awaiting)
        for number, entry in pulls.items():
            if number not in acked:
                ack_ids += entry["ack_ids"]
                messages.update(entry["messages"])
            else:
                for message_id in entry["messages"]:
                    messages.pop(message_id, None)
        return ack_ids, messages

    def clear(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if os.path.exists(self.path):
            os.remove(self.path)


class Inbox:
    """Pulled messages that are not yet acknowledged, and how much to pull.

    A message is acknowledged once everything it produced is on disk (`settle`, called at every
    pull: the DirectRunner pulls only when every earlier bundle has been processed). Until then
    a thread renews its lease every third of `lease_seconds`, so Pub/Sub does not hand it out
    again while this job still owns it; a job that dies stops renewing, and Pub/Sub delivers the
    message again (to the restarted job) once the lease runs out.

    The pull size follows what a stop can drain: a stop finishes every pulled message, so one
    pull must take no more records than the job processes in a share of --stop_timeout."""

    RENEW_SHARE = 1 / 3

    def __init__(self, lease_seconds: float):
        self.lease_seconds = lease_seconds
        self.pulls: list[_Pull] = []
        self.acknowledged_messages = 0
        self.client = self.subscription = None
        self.records_per_second = None        # measured: records of a pull / time to process it
        self.records_per_message = None
        self._last_pull = None                # (monotonic time, progress READ count) at a pull
        self._lock = threading.Lock()
        self._renewer = None
        self._closed = threading.Event()
        self.drain_budget_s = None            # set by the command line: a share of --stop_timeout
        self.journal = None
        self.journal_path = None              # set by the command line (a local output folder)
        self.pull_count = 0
        self.awaited = {}                     # message id -> publish ms: a killed run's, not back yet
        self.give_up_at = None
        self.stash = []                       # pulled while awaiting: handed on in publish order
        self.stash_bytes = 0
        self.returned_messages = 0            # stashed messages given back to Pub/Sub (a stop)

    # -- a killed run's messages --

    def recover(self, journal: "Journal", client, subscription: str) -> int:
        """Before the first pull: what the last run of this job pulled and did not acknowledge is
        delivered again at once and awaited (Journal). Returns how many messages that is."""
        ack_ids, messages = journal.unfinished()
        journal.clear()
        self.journal, self.client, self.subscription = journal, client, subscription
        if not messages:
            return 0
        # ack ids of the last run may have expired: they are delivered again anyway
        self._set_deadlines(ack_ids, 0, "ack ids of the last run", logging.INFO)
        self.awaited = {message_id: int(ms) for message_id, ms in messages.items()}
        journal.awaiting(self.awaited)
        self.give_up_at = time.monotonic() + 2 * self.lease_seconds + 30
        return len(messages)

    def watermark_floor(self):
        """The oldest publish time (ms) of a killed run's message not delivered again yet."""
        if self.awaited and time.monotonic() > self.give_up_at:
            logging.getLogger("feedcheck").warning(
                "%d messages the last run had pulled were not delivered again within %d s "
                "(acknowledged just before it ended?): no longer waiting for them",
                len(self.awaited), 2 * self.lease_seconds + 30)
            self.awaited = {}
        return min(self.awaited.values()) if self.awaited else None

    # -- newer messages while a killed run's come back --

    STASH_LIMIT_BYTES = 64 << 20

    def recovering(self) -> bool:
        """Are a killed run's messages still awaited (or newer ones stashed behind them)?"""
        return bool(self.stash) or self.watermark_floor() is not None

    def stash_pull(self, client, subscription: str, received, size: int) -> list:
        """While awaiting: keep this pull's messages (leased, journaled as awaited by a next
        run) and hand on nothing; once the last awaited one is back, hand on the stash in
        publish order, at most `size` messages a pull (what a stop can drain). Past STASH_LIMIT_BYTES, new messages are given
        back to Pub/Sub at once (it delivers them again later) and only awaited ones are kept."""
        self.client, self.subscription = client, subscription
        keep = []
        for message in received:
            awaited = message.message.message_id in self.awaited
            if awaited or self.stash_bytes < self.STASH_LIMIT_BYTES:
                keep.append(message)
            else:
                self._return([message.ack_id])
        if self.journal is not None:        # first, as in add()
            self.journal.awaiting({m.message.message_id: publish_ms(m.message) for m in keep})
        for message in keep:
            self.awaited.pop(message.message.message_id, None)
        self._extend([m.ack_id for m in keep])
        self.stash += keep
        self.stash_bytes += sum(len(m.message.data) for m in keep)
        self._start_renewing()
        if self.watermark_floor() is not None:
            return []
        ordered = sorted(self.stash, key=lambda m: publish_ms(m.message))
        ready, self.stash = ordered[:size], ordered[size:]
        self.stash_bytes = sum(len(m.message.data) for m in self.stash)
        return ready

    def return_stash(self) -> int:
        """A stop while awaiting: the stash was never handed on; give it back to Pub/Sub (the
        journal still names it, so the next run awaits it too)."""
        stash, self.stash, self.stash_bytes = self.stash, [], 0
        self._return([m.ack_id for m in stash])
        self.returned_messages += len(stash)
        return len(stash)

    def _return(self, ack_ids) -> None:
        """Give messages back to Pub/Sub now (a lease that ends later instead is not a loss)."""
        self._set_deadlines(ack_ids, 0, "could not return messages")

    # -- sizing --

    def pull_size(self, max_messages: int) -> int:
        if not (self.drain_budget_s and self.records_per_second and self.records_per_message):
            # nothing measured yet: a first pull small enough to drain at any plausible rate
            return max_messages if self.drain_budget_s is None else min(max_messages, 10)
        budget = self.records_per_second * self.drain_budget_s / self.records_per_message
        return max(1, min(max_messages, int(budget)))

    def _measure(self, pulled_messages: int) -> None:
        """At a pull: the previous pull's records have been processed since it returned."""
        from beam_pipeline.core import progress

        now, read = time.monotonic(), progress.snapshot()[progress.READ]
        if self._last_pull is not None:
            since, read_before, messages = self._last_pull
            records = read - read_before
            if records > 0 and messages:
                rate = records / max(now - since, 1e-3)
                self.records_per_second = rate if self.records_per_second is None else \
                    0.7 * self.records_per_second + 0.3 * rate
                per_message = records / messages
                self.records_per_message = per_message if self.records_per_message is None else \
                    max(per_message, 0.7 * self.records_per_message + 0.3 * per_message)
        self._last_pull = (now, read, pulled_messages)

    # -- leases --

    def add(self, client, subscription: str, received, newest_ms: int) -> None:
        """A pull's messages, journaled before anything else (the narrower the window in which a
        kill leaves a pull unjournaled, the fewer messages a restart sees come back late)."""
        ack_ids = [m.ack_id for m in received]
        self.client, self.subscription = client, subscription
        messages = {m.message.message_id: publish_ms(m.message) for m in received}
        self.pull_count += 1
        if self.journal is not None:
            self.journal.pulled(self.pull_count, ack_ids, messages)
        self._extend(ack_ids)
        for message_id in messages:
            self.awaited.pop(message_id, None)
        with self._lock:
            self.pulls.append(_Pull(self.pull_count, ack_ids, newest_ms))
        self._start_renewing()

    def _start_renewing(self) -> None:
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew, name="feedcheck-leases",
                                             daemon=True)
            self._renewer.start()

    def _extend(self, ack_ids) -> None:
        """Renew leases (a lost one means a redelivery, never a loss)."""
        self._set_deadlines(ack_ids, int(self.lease_seconds), "could not renew leases")

    def _set_deadlines(self, ack_ids, seconds: int, failure: str, level=logging.WARNING) -> None:
        """Sets the ack deadline of `ack_ids`; a request that fails is logged as `failure`, not
        raised: what it was for happens anyway once the lease runs out."""
        for request in _in_requests(ack_ids):
            try:
                self.client.modify_ack_deadline(subscription=self.subscription, ack_ids=request,
                                                ack_deadline_seconds=seconds, timeout=30)
            except Exception as error:   # noqa: BLE001: see above
                _LOG.log(level, "%s (%d ack ids): %s", failure, len(request), error)

    def _renew(self) -> None:
        """Renew every lease still held, until close(). Acknowledging is left to the pulls: only
        there is every earlier bundle known to be processed and its files renamed into place."""
        while not self._closed.wait(self.lease_seconds * self.RENEW_SHARE):
            with self._lock:
                ack_ids = [ack_id for pull in self.pulls for ack_id in pull.ack_ids]
            ack_ids += [m.ack_id for m in list(self.stash)]
            if ack_ids:
                self._extend(ack_ids)

    def close(self) -> None:
        self._closed.set()

    # -- acknowledging --

    def settle(self) -> int:
        """Acknowledge every pull whose outputs are all written. Called at a pull, where the
        pipeline has processed every earlier bundle: a pull that no key holds events of gets the
        ledger's mark, and is acknowledged once every folder has written up to that mark.
        Returns how many messages were acknowledged."""
        oldest = durability.oldest_held()
        noted = durability.mark()
        done = []
        with self._lock:
            for pull in self.pulls:
                if oldest is not None and pull.newest_ms >= oldest:
                    pull.mark = None                 # a key may still hold events of it
                elif pull.mark is None:
                    pull.mark = noted
                if pull.mark is not None and durability.is_written(pull.mark):
                    done.append(pull)
            self.pulls = [pull for pull in self.pulls if pull not in done]
        return self._acknowledge(done)

    def acknowledge_all(self) -> int:
        """After a drain: everything pulled has been processed and written (the journal goes:
        nothing is left for a next run to recover)."""
        returned = self.return_stash()
        with self._lock:
            done, self.pulls = self.pulls, []
        count = self._acknowledge(done)
        if self.journal is not None and not self.awaited and not returned:
            self.journal.clear()
        return count

    def _acknowledge(self, pulls) -> int:
        ack_ids = [ack_id for pull in pulls for ack_id in pull.ack_ids]
        for request in _in_requests(ack_ids):
            self.client.acknowledge(subscription=self.subscription, ack_ids=request, timeout=60)
        if self.journal is not None:
            self.journal.acknowledged([pull.number for pull in pulls])
        self.acknowledged_messages += len(ack_ids)
        return len(ack_ids)

    def unacknowledged(self) -> int:
        with self._lock:
            return sum(len(pull.ack_ids) for pull in self.pulls)
