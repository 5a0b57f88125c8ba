"""Synthetic feeds of one non-Binance venue, in the venue's own wire format (venue_frames' builders),
with injected faults and their expected outcome (synthetic.Expected): each continuity rule's shape.

    generate_venue("okx", events=400, faults=["medium_gap_resynced", "duplicate"]) -> (items, Expected)
    as_envelopes(venue, items) / as_cryptofeed(venue, items) -> the lines to write

Rule shapes (RULE_OF): range-plus-one with ranges of 1-5 ids (Gate.io, KuCoin: REST snapshots),
range-plus-one with one id (Bybit v5, Kraken Futures), previous-link (OKX, Deribit, HTX, Bitget v2:
ids in the venue's steps, in-stream snapshots), connection sequence (Bitfinex: the number orders and
deduplicates; one key on its connection, so a lost message is a break of the connection's numbers:
a gap of cause connection_break, size unknown) and none (Kraken, Coinbase Pro: arrival ordinals).
Faults (VENUE_FAULTS): the gap classes where the rule can size a gap (small and large need a
range-plus-one venue; previous-link gaps are medium), duplicate, reorder, an id reset per the venue's
rule (RESET_OF: Bybit's `u == 1` snapshot, OKX's maintenance update `seqId < prevSeqId`, elsewhere an
engine restart with lower ids), and bad records (BAD_VENUE_RECORDS). Without ids (rule none) a lost
message is invisible: no gap row, every delivered record clean (unverified); a duplicate is one only
where the venue numbers its messages (Bitfinex). A connection's frames arrive in the order sent, so
the connection sequence has no reorder nor id reset; its bad record comes last, numbered in turn.
Several keys on one connection: bitfinex_connection.
"""

from __future__ import annotations

import json
import random

from tests.tooling import venue_frames as vf
from tests.tooling.synthetic import START_MS, Expected

RANGE, ONE_ID, PREVIOUS, CONNECTION, NONE = (
    "range_plus_one",
    "one_id",
    "previous_link",
    "connection_sequence",
    "none",
)
RULE_OF = {
    "gateio": RANGE,
    "kucoin": RANGE,
    "bybit": ONE_ID,
    "kraken_futures": ONE_ID,
    "okx": PREVIOUS,
    "deribit": PREVIOUS,
    "htx": PREVIOUS,
    "bitget": PREVIOUS,
    "bitfinex": CONNECTION,
    "kraken": NONE,
    "coinbase": NONE,
}
VENUE_OF = {venue.exchange: venue for venue in vf.VENUES}
SIZED = (RANGE, ONE_ID)  # rules that measure a gap's size
CHECKED = (RANGE, ONE_ID, PREVIOUS)  # rules that see a lost message per key
SEES_GAPS = CHECKED + (CONNECTION,)  # ... and the rule that sees it in the connection's numbers
RESET_OF = {"bybit": "u_equals_1", "okx": "maintenance"}  # others: "restart" (ids drop, snapshot)
# Venues whose id reset is revealed by a snapshot (Bybit's u == 1): it resyncs at once, without a
# recovery request (a reset revealed by a delta asks from the new epoch's first id).
SNAPSHOT_RESETS = frozenset(e for e, kind in RESET_OF.items() if kind == "u_equals_1")
GAP_FAULTS = ("small_gap", "medium_gap_resynced", "medium_gap_timeout", "large_gap")
VENUE_FAULTS = GAP_FAULTS + ("duplicate", "reorder", "id_reset")
BAD_VENUE_RECORDS = {"bad_price_level": "bad_price_level"}  # fault -> dead-letter reason


def faults_for(exchange: str) -> tuple:
    """The faults `exchange`'s rule gives a defined outcome (sized gaps need a range-plus-one rule;
    an id reset needs a checked rule)."""
    rule = RULE_OF[exchange]
    out = [f for f in VENUE_FAULTS if rule in SIZED or f not in ("small_gap", "large_gap")]
    out = [f for f in out if rule != CONNECTION or f != "reorder"]  # one connection: sent order
    return tuple(f for f in out if rule in CHECKED or f != "id_reset")


# the columns of an expected gap and corrupt-period row after the key's, in the sinks' order
GAP_COLUMNS = (
    "last_good_id",
    "next_first_id",
    "gap_size",
    "gap_class",
    "action",
    "resolution",
    "event_time",
)
CORRUPT_COLUMNS = ("start_id", "end_id", "start_time", "end_time", "reason")


class VenueStream:
    """One venue key's message sequence; records what each injected fault must produce."""

    def __init__(
        self, exchange, rng, expected: Expected, first_id=vf.FIRST, start_ms=START_MS, step_ms=100
    ):
        self.venue = VENUE_OF[exchange]
        self.rule = RULE_OF[exchange]
        self.rng, self.expected = rng, expected
        self.step = self.venue.step
        self.next_id = first_id
        self.time, self.step_ms = start_ms, step_ms
        self.last_id = self.last_time = None
        self.out = []  # (time, is_snapshot, raw)
        self.max_held = 3  # deltas a resync snapshot may come after (the gap's own excluded)

    @property
    def key(self):
        return (self.venue.exchange, self.venue.market, self.venue.symbol)

    def _count(self, name, n=1):
        self.expected.count(self.key, name, n)
        if self.rule not in CHECKED and name in ("clean_records", "duplicates", "superseded"):
            self.expected.count(self.key, "unverified_records", n)  # decoded, not checkable

    def snapshot(self, at_id, time_ms):
        self.out.append((time_ms, True, self.venue.snapshot(at_id, time_ms)))
        self._count("clean_records")

    def start(self):
        self.snapshot(self.next_id - self.step, self.time - 50)
        self.last_id, self.last_time = self.next_id - self.step, self.time - 50
        self._count("symbols")

    def delta(self, jump=0, clean=True, prev=None, first=None):
        """The next delta, `jump` messages' ids lost before it; `prev` overrides its previous id."""
        first = self.next_id + jump * self.step if first is None else first
        last = first + self.rng.randint(0, 4) if self.rule == RANGE else first
        linked = self.last_id + jump * self.step if prev is None else prev
        if self.rule == RANGE:
            raw = self.venue.delta(first, linked, self.time, last=last)
        else:
            raw = self.venue.delta(first, linked, self.time)
        self.out.append((self.time, False, raw))
        info = (first, self.time)
        self.last_id, self.last_time, self.next_id = last, self.time, last + self.step
        self.time += self.step_ms
        if clean:
            self._count("clean_records")
        return info

    def _row(self, columns, values, **fixed) -> dict:
        """An expected output row: the key's columns, then `columns` with `values`, then `fixed`."""
        exchange, market, symbol = self.key
        return dict(
            exchange=exchange, market=market, symbol=symbol, **dict(zip(columns, values)), **fixed
        )

    def gap_row(self, last_good, first, size, cls, action, resolution, time_ms):
        values = (last_good, first, size, cls, action, resolution, time_ms)
        self.expected.gaps.append(
            self._row(
                GAP_COLUMNS, values, cause="connection_break" if self.rule == CONNECTION else None
            )
        )

    def medium_gap_row(self, last_good, first, size, resolution, time_ms):
        """A medium gap held for a snapshot (its size only where the venue's ids count messages)."""
        self.gap_row(
            last_good,
            first,
            size if self.rule in SIZED else None,
            "medium",
            "hold_for_snapshot",
            resolution,
            time_ms,
        )

    def corrupt(self, start_id, end_id, start_time, end_time, reason):
        values = (start_id, end_id, start_time, end_time, reason)
        self.expected.corrupt_periods.append(self._row(CORRUPT_COLUMNS, values, detail=None))

    def held_deltas(self, clean: bool) -> int:
        """0..max_held more deltas after a gap, held until the snapshot that resyncs the key
        (`clean`: whether they still count as clean). Returns how many."""
        held = self.rng.randint(0, self.max_held)
        for _ in range(held):
            self.delta(clean=clean)
        return held

    def resync(self):
        """The snapshot at the last id, 30 ms after the last delta."""
        self.snapshot(self.last_id, self.last_time + 30)
        self.last_time += 30

    def inject(self, fault):
        if fault not in faults_for(self.venue.exchange):
            raise ValueError(
                f"{fault} has no defined outcome on {self.venue.exchange} ({self.rule})"
            )
        checked = self.rule in SEES_GAPS
        last_good, last_time = self.last_id, self.last_time
        timed_out = "connection_break" if self.rule == CONNECTION else "recovery_timeout"
        if self.rule == CONNECTION and fault.startswith("medium_gap"):
            self.expected.counts["connection_breaks"] += 1
        if fault == "small_gap":
            size = self.rng.randint(1, 10)
            first, t = self.delta(jump=size)
            self.gap_row(last_good, first, size, "small", "continue_with_warning", "continued", t)
        elif fault == "large_gap":
            size = self.rng.randint(1001, 50000)
            first, t = self.delta(jump=size)
            self.gap_row(last_good, first, size, "large", "mark_corrupt", "corrupt_period", t)
            self.corrupt(last_good + 1, first - 1, last_time, t, "large_gap")
        elif fault == "medium_gap_resynced":
            size = self.rng.randint(11, 1000)
            first, t = self.delta(jump=size, clean=not checked)
            held = self.held_deltas(clean=not checked)
            if checked:
                self._count("superseded", 1 + held)  # the snapshot covers them all
                self.medium_gap_row(last_good, first, size, "resynced", t)
            self.resync()
        elif fault == "medium_gap_timeout":
            size = self.rng.randint(11, 1000)
            first, t = self.delta(jump=size)
            if checked:
                self.medium_gap_row(last_good, first, size, "corrupt_period", t)
                self.corrupt(last_good + 1, first - 1, last_time, t, timed_out)
        elif fault == "duplicate":
            self.delta()
            self.out.append(self.out[-1])
            if self.rule == NONE:
                self._count("clean_records")  # a new arrival ordinal: not a duplicate
            else:
                self._count("duplicates")
        elif fault == "reorder":
            self.delta()
            self.delta()
            (t1, s1, r1), (t2, s2, r2) = self.out[-2], self.out[-1]
            self.out[-2], self.out[-1] = (t1, s2, r2), (t2, s1, r1)
        elif fault == "id_reset":
            self._reset(last_good)
        else:
            raise ValueError(f"unknown fault {fault!r}")

    def _reset(self, last_good):
        """The venue's id reset, resynced by a snapshot of the new epoch (a gap of class reset)."""
        kind = RESET_OF.get(self.venue.exchange, "restart")
        low = max(1, self.next_id // self.rng.randint(100, 10_000))
        if kind == "u_equals_1":
            # Bybit: the service restarted; a snapshot with u == 1, then deltas from 2
            t = self.time
            self.snapshot(1, t)
            self.last_id, self.last_time, self.next_id = 1, t, 2
            self.time += self.step_ms
            self.gap_row(last_good, 1, None, "reset", "hold_for_snapshot", "resynced", t)
            return
        if kind == "maintenance":
            # OKX maintenance: an update whose seqId is below its prevSeqId, then a snapshot
            first, t = self.delta(first=low, prev=last_good, clean=False)
        else:
            first, t = self.delta(first=low, clean=False)
        more = self.held_deltas(clean=False)
        self._count("superseded", 1 + more)
        self.resync()
        self.gap_row(last_good, first, None, "reset", "hold_for_snapshot", "resynced", t)


def generate_venue(
    exchange: str,
    events: int = 400,
    seed: int = 0,
    faults=(),
    bad_records=(),
    spacing: int = 30,
    step_ms: int = 5000,
    first_id: int = vf.FIRST,
    start_ms: int = START_MS,
    max_held: int = 3,
):
    """-> (items, Expected): one key of `exchange`, `events` deltas, `faults` `spacing` deltas apart
    (with 5 s between messages, 30 span more than --recovery_timeout: 60 s), `bad_records` (names
    of BAD_VENUE_RECORDS) among them; a resync snapshot comes after 0..`max_held` deltas held after
    the gap. items: (time ms, is_snapshot, raw) in arrival order."""
    rng = random.Random(f"{exchange}-{seed}")
    expected = Expected()
    stream = VenueStream(exchange, rng, expected, first_id, start_ms, step_ms)
    stream.max_held = max_held
    stream.start()
    todo = list(faults)
    if todo.count("id_reset") > 1:  # after one the ids are too low to drop by --reset_min_jump_ids
        raise ValueError("one id_reset per key: the next one could not drop far enough to be one")
    if (len(todo) + 1) * spacing > events:
        raise ValueError(f"not enough events ({events}) for {len(todo)} faults {spacing} apart")
    for n in range(1, events + 1):
        if todo and n % spacing == 0:
            stream.inject(todo.pop(0))
        else:
            stream.delta()
    items = list(stream.out)
    venue = stream.venue
    for kind in bad_records:
        at = start_ms + rng.randint(0, events) * step_ms
        raw = venue.bad_price(stream.next_id, stream.last_id, at)
        if stream.rule == CONNECTION:  # numbered after the last frame: no break of the connection
            items.append((max(at, stream.time), False, raw))
            stream.next_id += stream.step
        else:
            items.insert(rng.randint(1, len(items)), (at, False, raw))
        expected.dead_letters[BAD_VENUE_RECORDS[kind]] += 1
    expected.counts["input_records"] += len(items)
    return items, expected


def as_cryptofeed(exchange: str, items) -> list:
    """`items` as the lines of a cryptofeed raw capture (connect line, frames, REST snapshot lines;
    Bitfinex: its `subscribed` reply, counted as ignored by the caller: EXTRA_RECORDS)."""
    venue = VENUE_OF[exchange]
    return vf.cryptofeed_capture(
        venue, [(raw, at, n, snap) for n, (at, snap, raw) in enumerate(items)]
    )


# records a cryptofeed capture of the venue holds besides `items`: ignored, by reason
EXTRA_RECORDS = {"bitfinex": {"subscription": 1}}


def expected_summary(exchange: str, expected: Expected, cryptofeed: bool) -> dict:
    """The run's summary totals (synthetic.totals) for a feed of generate_venue, written as
    cryptofeed (as_cryptofeed) or envelopes (as_envelopes): Expected.summary() plus the figures only
    non-Binance venues have (present where non-zero, as the pipeline writes them)."""
    summary = expected.summary()
    extra = EXTRA_RECORDS.get(exchange, {}) if cryptofeed else {}
    if extra:
        summary["input_records"] += sum(extra.values())
        summary["ignored"] += sum(extra.values())
        summary["ignored_reasons"] = dict(extra)
    if expected.counts["unverified_records"]:
        summary["unverified_records"] = expected.counts["unverified_records"]
    if expected.counts["connection_breaks"]:
        summary["connection_breaks"] = expected.counts["connection_breaks"]
    return summary


def as_envelopes(exchange: str, items) -> list:
    """`items` as envelope lines (the collector's format), received at their venue time (KuCoin's
    updates carry none: the receive time is their time); not for Bitfinex, whose frames need the
    connection's `subscribed` reply to name their symbol."""
    if exchange == "bitfinex":
        raise ValueError("Bitfinex frames need their connection: use as_cryptofeed")
    venue = VENUE_OF[exchange]
    out = []
    for at, snap, raw in items:
        head = json.dumps(
            {
                "exchange": exchange,
                "market": venue.url_market or venue.market,
                "symbol": venue.symbol,
                "recv_ts_ms": at,
                "type": "snapshot" if snap else "delta",
            },
            separators=(",", ":"),
        )
        out.append(head[:-1].encode() + b',"payload":' + raw + b"}")
    return out


BITFINEX_BOOKS = {7: "tBTCUSD", 8: "tETHUSD"}  # channel id -> symbol: one connection, two books


def bitfinex_connection(
    messages: int = 60,
    drop=(),
    start_ms: int = START_MS,
    step_ms: int = 250,
    heartbeat_every: int = 7,
):
    """One Bitfinex connection (SEQ_ALL) carrying two books, as the lines of a cryptofeed capture:
    the connect line, the `subscribed` replies, then `messages` numbered frames 1.. across both
    books and heartbeats (a snapshot of each book first, then deltas taking turns, a heartbeat every
    `heartbeat_every`-th number); the numbers in `drop` are left out (lost messages).
    -> (lines, frames): frames as (number, symbol or None for a heartbeat, time ms, is_snapshot),
    those written only."""
    lines = [f"wss://api.bitfinex.com/ws/2 <-> {start_ms / 1000 - 1:.3f}".encode()]
    for chan_id, symbol in BITFINEX_BOOKS.items():
        lines.append(
            f"{start_ms / 1000 - 0.5:.3f}: ".encode()
            + vf.js(
                {
                    "event": "subscribed",
                    "channel": "book",
                    "chanId": chan_id,
                    "symbol": symbol,
                    "prec": "P0",
                }
            )
        )
    frames, turn = [], 0
    chans = list(BITFINEX_BOOKS)
    for number in range(1, messages + 1):
        at = start_ms + number * step_ms
        if number <= len(chans):
            chan, snapshot = chans[number - 1], True
            raw = [chan, [[99.5, 1, 2.0], [101, 1, -1.0]], number]
        elif number % heartbeat_every == 0:
            chan, snapshot = None, False
            raw = [chans[0], "hb", number]
        else:
            chan, snapshot = chans[turn % len(chans)], False
            turn += 1
            raw = [chan, [f"{100 + number % 5}.5", 1, -1.0], number]
        if number in drop:
            continue
        frames.append((number, BITFINEX_BOOKS.get(chan), at, snapshot))
        lines.append(f"{at / 1000:.3f}: ".encode() + vf.js(raw))
    return lines, frames
