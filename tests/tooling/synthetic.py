"""Synthetic Binance-style feeds in the envelope format, with injected faults and their expected
outcome: the demo's sample, the tests' ground truth and the benchmark's input.

    python -m tests.tooling.synthetic --events 100000 --output sample/feed.jsonl.gz

Each symbol starts with a REST snapshot, then deltas 100 ms apart (spot: U..u ranges of 1-5 ids;
usdm: with pu). Faults are placed on one symbol each, `spacing` messages apart so that their effects
do not overlap (a medium gap waits up to --recovery_timeout = 60 s = 600 messages).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import string
import zlib
from collections import Counter
from dataclasses import dataclass, field

START_MS = 1_700_000_000_000
STEP_MS = 100
DEFAULT_SYMBOLS = (("spot", "BTCUSDT", 0.4), ("spot", "ETHUSDT", 0.25),
                   ("usdm", "BTCUSDT", 0.2), ("usdm", "SOLUSDT", 0.15))

GAP_FAULTS = ("small_gap", "medium_gap_resynced", "medium_gap_timeout", "large_gap")
STREAM_FAULTS = GAP_FAULTS + ("duplicate", "reorder")
BAD_RECORDS = ("bad_json", "invalid_utf8", "missing_field", "mistyped_field", "invalid_ids",
               "inverted_ids", "missing_prev_id", "bad_price_level", "record_too_large")
# A bad record's expected dead-letter reason (negative and inverted ids share one reason).
REASON_OF = {name: name for name in BAD_RECORDS}
REASON_OF["inverted_ids"] = "invalid_ids"

# Chaos faults (see generate_chaos). Clock jumps have a documented outcome: the canonical order is by
# update id, event time only bounds a wait, so a jump outside a wait changes nothing and a forward jump
# inside a medium gap's wait ends it (recovery_timeout). Id resets (an engine restart: update ids start
# again from a much lower number, time goes on) are gaps of class "reset": the new epoch waits for a
# snapshot like a medium gap (README, "Gap policy").
CLOCK_FAULTS = ("clock_jump_forward", "clock_jump_back", "medium_gap_clock_jump")
CHAOS_STREAM_FAULTS = STREAM_FAULTS + CLOCK_FAULTS + ("reorder_window",)
RESET_FAULTS = ("id_reset", "id_reset_resync")
# More bad records, each with one well-defined dead-letter reason.
EXTRA_BAD_RECORDS = ("garbage_json", "nul_bytes", "mistyped_time", "mistyped_levels", "float_id",
                     "string_payload", "invalid_utf8_price", "unknown_exchange", "unknown_market",
                     "symbol_mismatch")
REASON_OF.update({name: name for name in EXTRA_BAD_RECORDS})
REASON_OF.update(garbage_json="bad_json", nul_bytes="bad_json", mistyped_time="mistyped_field",
                 mistyped_levels="bad_price_level", float_id="mistyped_field",
                 string_payload="mistyped_field", invalid_utf8_price="invalid_utf8",
                 unknown_exchange="unsupported_exchange")
# Messages of other streams: each is counted as ignored.
# The demo (make demo): every fault class the batch job reports, once at least.
LATE_BY = 50
DEMO_FAULTS_EXTRA = (("id_reset", 1), ("late_message", 1), ("id_reset_resync", 2))
DEMO_BAD_RECORDS = BAD_RECORDS + ("symbol_mismatch", "unknown_market", "unknown_exchange")
OTHER_STREAMS = ("trade", "agg_trade_as_delta", "book_ticker", "kline", "subscription_ack",
                 "partial_depth", "ticker_type")


@dataclass
class Expected:
    gaps: list = field(default_factory=list)
    corrupt_periods: list = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    dead_letters: Counter = field(default_factory=Counter)
    # The same counts per (exchange, market, symbol).
    per_key: dict = field(default_factory=dict)

    def count(self, key, name: str, n: int = 1) -> None:
        self.counts[name] += n
        self.per_key.setdefault(key, Counter())[name] += n

    def summary(self) -> dict:
        c = self.counts
        return {"input_records": c["input_records"], "clean_records": c["clean_records"],
                "ignored": c["ignored"], "duplicates": c["duplicates"],
                "superseded": c["superseded"], "control": c["control"],
                "dead_letters": dict(sorted(self.dead_letters.items())),
                "gaps": {cls: sum(1 for g in self.gaps if g["gap_class"] == cls)
                         for cls in ("small", "medium", "large", "reset")},
                "corrupt_periods": len(self.corrupt_periods), "symbols": c["symbols"],
                "reconnects": c["reconnects"],
                "balanced": c["input_records"] == (
                    c["clean_records"] + c["ignored"] + c["duplicates"] + c["superseded"]
                    + c["control"] + sum(self.dead_letters.values()))}


PER_FILE_KEYS = ("files", "file_dead_letters", "skipped_files", "still_being_written",
                 "read_error_files")


IN_FLIGHT_KEYS = ("in_flight", "in_flight_records", "note")   # a streaming summary's running state


def totals(summary: dict) -> dict:
    """A run summary without its per-file parts (they depend on how the input is split in files),
    without a streaming summary's in-flight figures and without the run's settings record."""
    return {name: value for name, value in summary.items()
            if name not in PER_FILE_KEYS + IN_FLIGHT_KEYS + ("settings",)}


def _levels(rng, mid: float, count: int, side: int):
    """`count` levels within 5.00 of `mid`, below it (bids: side -1) or above it (asks: +1), so
    the rebuilt book is never crossed (core/books checks it)."""
    return [[f"{mid + side * (rng.randint(-500, 500) + 500) / 200:.2f}",
             f"{rng.randint(0, 50000) / 1000:.3f}"] for _ in range(count)]


def _envelope(market, symbol, recv_ms, kind, payload) -> bytes:
    return json.dumps({"exchange": "binance", "market": market, "symbol": symbol,
                       "recv_ts_ms": recv_ms, "type": kind, "payload": payload},
                      separators=(",", ":")).encode()


class _Stream:
    """One symbol's message sequence; it records what each injected fault must produce."""

    def __init__(self, market, symbol, rng, expected: Expected, first_id: int,
                 start_ms: int = START_MS, step_ms: int = STEP_MS):
        self.market, self.symbol, self.rng, self.expected = market, symbol, rng, expected
        self.next_id = first_id
        self.last_u = None
        self.time = start_ms
        self.step_ms = step_ms
        self.last_time = None
        self.max_levels = 8
        self.out = []  # (time, line)

    def _key(self):
        return {"exchange": "binance", "market": self.market, "symbol": self.symbol}

    @property
    def key(self):
        return ("binance", self.market, self.symbol)

    def _count(self, name: str, n: int = 1):
        self.expected.count(self.key, name, n)

    def snapshot(self, last_update_id: int, time_ms: int):
        payload = {"lastUpdateId": last_update_id, "bids": _levels(self.rng, 100, 20, -1),
                   "asks": _levels(self.rng, 101, 20, 1)}
        if self.market == "usdm":
            payload.update(E=time_ms, T=time_ms)
        self.out.append((time_ms, _envelope(self.market, self.symbol, time_ms + 5, "snapshot", payload)))
        self._count("clean_records")

    def start(self):
        self.snapshot(self.next_id - 1, self.time - 50)
        self.last_u, self.last_time = self.next_id - 1, self.time - 50
        self._count("symbols")

    def delta(self, jump: int = 0, clean: bool = True, prev=None):
        """Next delta; `jump` ids are skipped before it (lost messages); `prev` overrides pu."""
        first = self.next_id + jump
        last = first + self.rng.randint(0, 4)
        payload = {"e": "depthUpdate", "E": self.time, "s": self.symbol, "U": first, "u": last,
                   "b": _levels(self.rng, 100, self.rng.randint(1, self.max_levels), -1),
                   "a": _levels(self.rng, 101, self.rng.randint(1, self.max_levels), 1)}
        if self.market == "usdm":
            payload.update(pu=self.last_u + jump if prev is None else prev, T=self.time - 3)
        line = _envelope(self.market, self.symbol, self.time + 7, "delta", payload)
        self.out.append((self.time, line))
        info = (first, last, self.time)
        self.last_u, self.last_time, self.next_id = last, self.time, last + 1
        self.time += self.step_ms
        if clean:
            self._count("clean_records")
        return info, line

    def gap_row(self, last_good, first, size, cls, action, resolution, time_ms):
        if self.market == "usdm":
            size = None
            cls = "medium" if cls == "small" else cls
        self.expected.gaps.append(dict(self._key(), last_good_id=last_good, next_first_id=first,
                                       gap_size=size, gap_class=cls, action=action,
                                       resolution=resolution, event_time=time_ms, cause=None))

    def corrupt(self, start_id, end_id, start_time, end_time, reason):
        self.expected.corrupt_periods.append(dict(self._key(), start_id=start_id, end_id=end_id,
                                                  start_time=start_time, end_time=end_time,
                                                  reason=reason, detail=None))

    def inject(self, fault: str):
        last_good, last_time = self.last_u, self.last_time
        if fault == "small_gap" and self.market == "spot":
            size = self.rng.randint(1, 10)
            (first, _, t), _ = self.delta(jump=size)
            self.gap_row(last_good, first, size, "small", "continue_with_warning", "continued", t)
        elif fault == "large_gap" and self.market == "spot":
            size = self.rng.randint(1001, 50000)
            (first, _, t), _ = self.delta(jump=size)
            self.gap_row(last_good, first, size, "large", "mark_corrupt", "corrupt_period", t)
            self.corrupt(last_good + 1, first - 1, last_time, t, "large_gap")
        elif fault in ("small_gap", "large_gap"):
            raise ValueError(f"{fault} needs a spot symbol: usdm gaps have no measurable size")
        elif fault == "medium_gap_resynced":
            size = self.rng.randint(11, 1000)
            (first, _, t), _ = self.delta(jump=size, clean=False)
            held = self.rng.randint(0, 3)
            for _ in range(held):
                self.delta(clean=False)
            self._count("superseded", 1 + held)   # the snapshot covers them all
            self.snapshot(self.last_u, self.last_time + 30)
            self.last_time += 30
            self.gap_row(last_good, first, size, "medium", "hold_for_snapshot", "resynced", t)
        elif fault == "medium_gap_timeout":
            size = self.rng.randint(11, 1000)
            (first, _, t), _ = self.delta(jump=size)
            self.gap_row(last_good, first, size, "medium", "hold_for_snapshot", "corrupt_period", t)
            self.corrupt(last_good + 1, first - 1, last_time, t, "recovery_timeout")
        elif fault == "duplicate":
            _, line = self.delta()
            self.out.append((self.out[-1][0], line))
            self._count("duplicates")
        elif fault == "reorder":
            self.delta()
            self.delta()
            (t1, l1), (t2, l2) = self.out[-2], self.out[-1]
            self.out[-2], self.out[-1] = (t1, l2), (t2, l1)  # the later message arrives first
        elif fault in ("clock_jump_forward", "clock_jump_back"):
            # the collector's or the exchange's clock jumps by minutes; ids stay continuous
            minutes = self.rng.randint(2, 30) * 60_000
            self.time += minutes if fault == "clock_jump_forward" else -minutes
            self.delta()
        elif fault == "medium_gap_clock_jump":
            # a medium gap whose wait is ended by a forward clock jump, long before a snapshot
            size = self.rng.randint(11, 1000)
            (first, _, t), _ = self.delta(jump=size)
            for _ in range(self.rng.randint(0, 3)):
                self.delta()
            self.time += self.rng.randint(2, 30) * 60_000
            self.delta()
            self.gap_row(last_good, first, size, "medium", "hold_for_snapshot", "corrupt_period", t)
            self.corrupt(last_good + 1, first - 1, last_time, t, "recovery_timeout")
        elif fault == "reorder_window":
            count = self.rng.randint(3, 8)
            for _ in range(count):
                self.delta()
            window = self.out[-count:]
            lines = [line for _, line in window]
            self.rng.shuffle(lines)
            self.out[-count:] = [(t, line) for (t, _), line in zip(window, lines)]
        elif fault == "late_message":
            # a delta that reaches the capture LATE_BY messages after its successors (a slow
            # path in the collector): batch sequencing by id puts it back, so it is clean, no gap
            self.delta()
            late = self.out.pop()
            for _ in range(LATE_BY):
                self.delta()
            self.out.append((self.out[-1][0], late[1]))
        elif fault in RESET_FAULTS:
            # an engine restart: ids start again far lower (futures: the first pu is -1), time goes
            # on. The new epoch waits for a snapshot: one that covers it supersedes its deltas, none
            # in time (--recovery_timeout, or the end of the input) leaves a corrupt period and the
            # deltas clean, unanchored. (Ids drop by far more than --medium_gap_max: at least 99%
            # of ids >= 5,000.)
            resync = fault == "id_reset_resync"
            self.next_id = max(1, self.next_id // self.rng.randint(100, 10_000))
            (first, _, t), _ = self.delta(prev=-1, clean=not resync)
            more = self.rng.randint(0, 5)
            for _ in range(more):
                self.delta(clean=not resync)
            if resync:
                self._count("superseded", 1 + more)
                self.snapshot(self.last_u, self.last_time + 30)
                self.last_time += 30
                self.gap_row(last_good, first, None, "reset", "hold_for_snapshot", "resynced", t)
            else:
                self.gap_row(last_good, first, None, "reset", "hold_for_snapshot",
                             "corrupt_period", t)
                self.corrupt(last_good + 1, first - 1, last_time, t, "recovery_timeout")
        else:
            raise ValueError(f"unknown fault {fault!r}")


def _bad_record(kind: str, rng, max_record_bytes: int) -> bytes:
    good = {"e": "depthUpdate", "E": START_MS, "s": "BTCUSDT", "U": 5, "u": 6,
            "b": [["1.00", "2.0"]], "a": []}

    def env(payload, market="spot"):
        return _envelope(market, "BTCUSDT", START_MS, "delta", payload)

    if kind == "bad_json":
        return env(good)[:-7]
    if kind == "invalid_utf8":
        return env(good).replace(b'"BTCUSDT"', b'"BTC\xff\xfeUSDT"', 1)
    if kind == "missing_field":
        return env({k: v for k, v in good.items() if k != "u"})
    if kind == "mistyped_field":
        return env(dict(good, U="5"))
    if kind == "invalid_ids":
        return env(dict(good, U=-5))
    if kind == "inverted_ids":
        return env(dict(good, U=9, u=6))
    if kind == "missing_prev_id":
        return env(good, market="usdm")
    if kind == "bad_price_level":
        return env(dict(good, b=[["abc", "1.0"]]))
    if kind == "record_too_large":
        return env(dict(good, b=[["1.00", "2.0"]] * (max_record_bytes // 14 + 10)))
    if kind == "garbage_json":   # "{{" is never JSON; no newline, never blank
        junk = "".join(rng.choice(string.printable[:-6]) for _ in range(rng.randint(0, 80)))
        return b"{{" + junk.encode()
    if kind == "nul_bytes":
        return b"\x00" * rng.randint(1, 64)
    if kind == "mistyped_time":
        return env(dict(good, E=str(START_MS)))
    if kind == "mistyped_levels":
        return env(dict(good, b={"1.00": "2.0"}))
    if kind == "float_id":
        return env(dict(good, U=5.5))
    if kind == "string_payload":
        return env("depthUpdate")
    if kind == "invalid_utf8_price":
        return env(dict(good, b=[["1.00", "7.5"]])).replace(b'"7.5"', b'"7.\xc3\x28"', 1)
    if kind == "unknown_exchange":
        return env(good).replace(b'"exchange":"binance"', b'"exchange":"poloniex"', 1)
    if kind == "unknown_market":
        return env(good, market="options")
    if kind == "symbol_mismatch":
        return env(dict(good, s="ETHUSDT"))
    raise ValueError(kind)


def _ignored_record(rng) -> bytes:
    trade = {"e": "aggTrade", "E": START_MS, "s": "BTCUSDT", "a": rng.randint(1, 10**9),
             "p": "100.00", "q": "0.5", "T": START_MS}
    return _envelope("spot", "BTCUSDT", START_MS, "trade", trade)


def _other_stream_record(kind: str, rng) -> bytes:
    """A message of another stream, in a delta envelope unless its type says otherwise: ignored."""
    if kind == "trade":
        return _ignored_record(rng)
    if kind == "agg_trade_as_delta":
        payload = {"e": "aggTrade", "E": START_MS, "s": "BTCUSDT", "a": rng.randint(1, 10**9),
                   "p": "100.00", "q": "0.5", "T": START_MS}
    elif kind == "book_ticker":   # spot bookTicker: no `e`
        payload = {"u": rng.randint(1, 10**9), "s": "BTCUSDT", "b": "25.35", "B": "31.21",
                   "a": "25.36", "A": "40.66"}
    elif kind == "kline":
        payload = {"e": "kline", "E": START_MS, "s": "BTCUSDT",
                   "k": {"t": START_MS, "T": START_MS + 59_999, "i": "1m", "o": "1.0", "c": "1.1"}}
    elif kind == "subscription_ack":
        payload = {"result": None, "id": rng.randint(1, 1000)}
    elif kind == "partial_depth":  # <symbol>@depth<levels>: no `e`, no `U`
        payload = {"lastUpdateId": rng.randint(1, 10**9), "bids": [["1.0", "2.0"]], "asks": []}
    elif kind == "ticker_type":
        return _envelope("spot", "BTCUSDT", START_MS, "24hrTicker", {"e": "24hrTicker", "x": [1, {}]})
    else:
        raise ValueError(kind)
    return _envelope("spot", "BTCUSDT", START_MS, "delta", payload)


def generate(events: int = 10_000, seed: int = 0, faults=(), bad_records=(), ignored: int = 0,
             symbols=DEFAULT_SYMBOLS, spacing: int = 700, max_record_bytes: int = 1 << 20,
             start_ms: int = START_MS, step_ms: int = STEP_MS, other_streams=(), max_levels: int = 8):
    """-> (lines, Expected). `faults` is a sequence of (fault, symbol index) pairs; `spacing`
    messages of one symbol separate its faults and must span more than the recovery timeout."""
    rng = random.Random(seed)
    expected = Expected()
    streams = [_Stream(market, symbol, rng, expected, 10_000 * (i + 1) * 1000, start_ms, step_ms)
               for i, (market, symbol, _) in enumerate(symbols)]
    weights = [weight for _, _, weight in symbols]
    plan = {i: [] for i in range(len(streams))}
    for fault, index in faults:
        plan[index].append(fault)
    for stream in streams:
        stream.max_levels = max_levels
        stream.start()
    produced = Counter()
    for _ in range(events):
        index = rng.choices(range(len(streams)), weights)[0]
        stream = streams[index]
        produced[index] += 1
        if plan[index] and produced[index] % spacing == spacing // 2:
            stream.inject(plan[index].pop(0))
        else:
            stream.delta()
    left = [f for todo in plan.values() for f in todo]
    if left:
        raise ValueError(f"not enough events to place every fault; left over: {left}")
    lines = _merge_streams([stream.out for stream in streams])
    for kind in bad_records:
        lines.insert(rng.randrange(len(lines) + 1), _bad_record(kind, rng, max_record_bytes))
        expected.dead_letters[REASON_OF[kind]] += 1
    for _ in range(ignored):
        lines.insert(rng.randrange(len(lines) + 1), _ignored_record(rng))
    expected.counts["ignored"] += ignored
    for kind in other_streams:
        lines.insert(rng.randrange(len(lines) + 1), _other_stream_record(kind, rng))
    expected.counts["ignored"] += len(other_streams)
    expected.counts["input_records"] = len(lines)
    return lines, expected


def _merge_streams(outs):
    """Interleave the streams by time, keeping each stream's own order (reorders, duplicates)."""
    import heapq

    return [line for _, _, _, line in heapq.merge(
        *[[(t, i, n, line) for n, (t, line) in enumerate(out)] for i, out in enumerate(outs)],
        key=lambda item: (item[0], item[1], item[2]))]


def write_lines(path: str, lines) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as handle:
        for line in lines:
            handle.write(line + b"\n")


def gzip_members(lines, rng, members: int) -> tuple:
    """`lines` as a gzip file of up to `members` concatenated members -> (data, member spans)."""
    cuts = []
    if len(lines) > 1:
        cuts = sorted(rng.sample(range(1, len(lines)), min(members, len(lines)) - 1))
    parts, spans, start = [], [], 0
    for begin, end in zip([0] + cuts, cuts + [len(lines)]):
        member = gzip.compress(b"".join(line + b"\n" for line in lines[begin:end]), 1, mtime=0)
        spans.append((start, start + len(member)))
        parts.append(member)
        start += len(member)
    return b"".join(parts), spans


def readable_prefix(data: bytes) -> tuple:
    """What a gzip reader gets from `data` before it fails: (decompressed bytes, failed?).
    Decompressed with zlib directly, member by member, independently of the pipeline's reader."""
    out, rest = [], data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out.append(inflater.decompress(rest))
        except zlib.error:
            return b"".join(out), True
        if not inflater.eof:
            return b"".join(out), True
        rest = inflater.unused_data
    return b"".join(out), False


def truncate_gzip(lines, rng, members: int = 3) -> tuple:
    """A gzip file of `lines` cut inside one of its members (never at a member boundary)
    -> (data, surviving lines): the complete lines a reader gets before the cut."""
    data, spans = gzip_members(lines, rng, members)
    begin, end = spans[rng.randrange(len(spans))]
    cut = rng.randint(begin + 1, end - 1)
    data = data[:cut]
    prefix, failed = readable_prefix(data)
    assert failed, "a cut inside a member must fail"
    return data, prefix.split(b"\n")[:-1]


CHAOS_SYMBOLS = (("spot", "BTCUSDT", 0.25), ("spot", "ETHUSDT", 0.2), ("usdm", "BTCUSDT", 0.2),
                 ("usdm", "SOLUSDT", 0.15), ("spot", "RSTUSDT", 0.1), ("usdm", "RSTUSDT", 0.1))
# Which faults each chaos symbol may get (sized gaps need spot; the RST symbols get the id resets).
CHAOS_FAULTS_OF = (
    GAP_FAULTS + ("duplicate", "reorder", "reorder_window") + CLOCK_FAULTS,
    GAP_FAULTS + ("duplicate", "reorder", "reorder_window") + CLOCK_FAULTS,
    ("medium_gap_resynced", "medium_gap_timeout", "duplicate", "reorder", "reorder_window")
    + CLOCK_FAULTS,
    ("medium_gap_resynced", "medium_gap_timeout", "duplicate", "reorder", "reorder_window")
    + CLOCK_FAULTS,
    RESET_FAULTS + ("small_gap", "duplicate"),
    RESET_FAULTS + ("medium_gap_resynced", "duplicate"),
)
TRUNCATED_KEY = ("binance", "spot", "TRUNCUSDT")
RAW_KEY = ("binance", "spot", "RAWUSDT")         # raw websocket messages (--input_format binance)
CRYPTOFEED_KEY = ("binance", "usdm", "CFDUSDT")  # cryptofeed websocket and REST logs
BLANKS = (b"", b"   ", b"\t", b"\r", b" \r")


@dataclass
class ChaosFeed:
    files: list                    # (file name, bytes)
    expected: Expected
    faults: list                   # the (fault, symbol index) plan
    truncated: str                 # name of the truncated .gz file


def _safe_first(line: bytes) -> bool:
    """A record that makes auto-detection pick the envelope format (see detect_format)."""
    return line.startswith(b'{"exchange"')


def generate_chaos(seed: int, faults_per_symbol: int = 3, max_record_bytes: int = 4096,
                   spacing: int = 30, step_ms: int = 5000, resets: bool = True,
                   files: int = None, venues=()) -> ChaosFeed:
    """A feed with every fault class, spread over plain, gzip and multi-member gzip files, one of
    them cut mid-member, with blank lines; and its expected outcome.

    Event times are 5 s apart so that `spacing` messages (30) span more than the recovery timeout
    (60 s = 12 messages) plus the longest fault (a reorder window of 8). The truncated file holds a
    symbol of its own (TRUNCUSDT) whose records before the cut are clean, plus other streams'
    messages and bad records: what survives the cut is known exactly."""
    rng = random.Random(f"chaos-{seed}")
    symbols = CHAOS_SYMBOLS if resets else CHAOS_SYMBOLS[:4]
    plan = []
    for index, allowed in enumerate(CHAOS_FAULTS_OF[:len(symbols)]):
        chosen = [rng.choice(allowed) for _ in range(rng.randint(1, faults_per_symbol))]
        if index >= 4:
            chosen = [rng.choice(RESET_FAULTS)] + chosen[:1]
        plan += [(fault, index) for fault in chosen]
    rng.shuffle(plan)
    bad = [rng.choice(BAD_RECORDS + EXTRA_BAD_RECORDS) for _ in range(rng.randint(3, 12))]
    bad += list(BAD_RECORDS + EXTRA_BAD_RECORDS)
    others = [rng.choice(OTHER_STREAMS) for _ in range(rng.randint(0, 8))] + list(OTHER_STREAMS)
    need = max(sum(1 for _, i in plan if i == index) * spacing / weight
               for index, (_, _, weight) in enumerate(symbols))
    events = int(need * 1.25) + 200
    while True:
        try:
            lines, expected = generate(events, seed, plan, bad, 0, symbols, spacing,
                                       max_record_bytes, step_ms=step_ms, other_streams=others,
                                       max_levels=2)
            break
        except ValueError as error:
            if "not enough events" not in str(error):
                raise
            events = int(events * 1.3)
    # several files, each starting with a record that auto-detects as an envelope
    count = files or rng.randint(1, 3)
    out = []
    for index in range(count):
        part = list(lines[index::count])
        first = next(i for i, line in enumerate(part) if _safe_first(line))
        part[0], part[first] = part[first], part[0]
        for _ in range(rng.randint(0, 5)):
            part.insert(rng.randrange(len(part) + 1), rng.choice(BLANKS))
        body = b"".join(line + b"\n" for line in part)
        kind = rng.choice(("plain", "gz", "members"))
        if kind == "plain":
            out.append((f"part{index}.jsonl", body if rng.random() < 0.5 else body.rstrip(b"\n")))
        elif kind == "gz":
            out.append((f"part{index}.jsonl.gz", gzip.compress(body, 1, mtime=0)))
        else:
            out.append((f"part{index}.jsonl.gz", gzip_members(part, rng, rng.randint(2, 4))[0]))
    out += _other_format_files(rng, expected, spacing, step_ms)
    out += _venue_files(venues, seed, expected, spacing, step_ms, out)
    # the truncated file: its own clean symbol, other streams' messages and bad records
    stream = _Stream("spot", "TRUNCUSDT", rng, Expected(), 77_000_000, START_MS, step_ms)
    stream.max_levels = 2
    stream.start()
    for _ in range(rng.randint(20, 120)):
        stream.delta()
    kinds = {line: "clean" for _, line in stream.out}
    tail = [line for _, line in stream.out]
    for _ in range(rng.randint(0, 6)):
        kind = rng.choice(OTHER_STREAMS)
        line = _other_stream_record(kind, rng)
        kinds[line] = "ignored"
        tail.insert(rng.randint(1, len(tail)), line)
    for _ in range(rng.randint(0, 6)):
        kind = rng.choice(BAD_RECORDS + EXTRA_BAD_RECORDS)
        line = _bad_record(kind, rng, max_record_bytes)
        kinds[line] = REASON_OF[kind]
        tail.insert(rng.randint(1, len(tail)), line)
    data, survivors = truncate_gzip(tail, rng, rng.randint(1, 4))
    truncated = "cut.jsonl.gz"
    out.append((truncated, data))
    expected.counts["input_records"] += len(survivors) + 1
    expected.dead_letters["read_error"] += 1
    for line in survivors:
        kind = kinds[line]
        if kind == "clean":
            expected.count(TRUNCATED_KEY, "clean_records")
        elif kind == "ignored":
            expected.counts["ignored"] += 1
        else:
            expected.dead_letters[kind] += 1
    if any(kinds[line] == "clean" for line in survivors):
        expected.count(TRUNCATED_KEY, "symbols")
    return ChaosFeed(out, expected, plan, truncated)


def _venue_files(venues, seed, expected: Expected, spacing: int, step_ms: int, files) -> list:
    """Each venue's key (synthetic_venues.generate_venue) with 1-3 of its rule's faults and a bad
    record, its expected outcome merged into `expected`: half the time as envelope lines mixed into
    `files`' first envelope file (updated in place), else as a cryptofeed capture of its own."""
    from tests.tooling import synthetic_venues as sv

    rng = random.Random(f"chaos-venues-{seed}")
    out = []
    for exchange in venues:
        faults = [rng.choice(sv.faults_for(exchange)) for _ in range(rng.randint(1, 3))]
        while faults.count("id_reset") > 1:       # one per key (generate_venue)
            faults.remove("id_reset")
        items, part = sv.generate_venue(exchange, (len(faults) + 1) * spacing + rng.randint(1, 30),
                                        seed, faults, list(sv.BAD_VENUE_RECORDS), spacing, step_ms)
        extra = sv.EXTRA_RECORDS.get(exchange)
        if extra:
            raise ValueError(f"{exchange}'s capture has ignored records: not a chaos venue")
        envelope = exchange != "bitfinex" and rng.random() < 0.5
        if envelope:
            index = next(i for i, (name, _) in enumerate(files) if name.startswith("part"))
            name, data = files[index]
            lines = (gzip.decompress(data) if name.endswith(".gz") else data).split(b"\n")
            lines = [line for line in lines if line] + sv.as_envelopes(exchange, items)
            body = b"\n".join(lines) + b"\n"
            files[index] = (name, gzip.compress(body, 1, mtime=0) if name.endswith(".gz") else body)
        else:
            out.append((f"{exchange.upper()}.ws.1.0", b"\n".join(sv.as_cryptofeed(exchange, items)) + b"\n"))
        _merge(expected, part)
        expected.counts["input_records"] += part.counts["input_records"]
        expected.dead_letters.update(part.dead_letters)
    return out


def _merge(expected: Expected, part: Expected) -> None:
    for key, counts in part.per_key.items():
        for name, n in counts.items():
            expected.count(key, name, n)
    expected.gaps += part.gaps
    expected.corrupt_periods += part.corrupt_periods


def _stream_with_faults(market, symbol, first_id, rng, part, spacing, step_ms, faults, snapshot):
    stream = _Stream(market, symbol, rng, part, first_id, START_MS, step_ms)
    stream.max_levels = 2
    if snapshot:
        stream.start()
    else:                              # raw websocket captures hold no REST snapshot
        stream.last_u, stream.last_time = first_id - 1, START_MS - 50
        stream._count("symbols")
    for fault in faults:
        for _ in range(spacing):
            stream.delta()
        stream.inject(fault)
    for _ in range(rng.randint(1, spacing)):
        stream.delta()
    return stream


def _stamp(ms: int, rng) -> bytes:
    return f"{ms // 1000}.{ms % 1000:03d}{rng.randint(0, 9999):04d}".encode()


def _other_format_files(rng, expected: Expected, spacing: int, step_ms: int) -> list:
    """One symbol as raw Binance websocket messages (bare and combined, no snapshot) and one as
    cryptofeed logs (a websocket log with its header, a REST log of depth snapshots), each with other
    streams' messages and faults; their expected outcome is merged into `expected`."""
    files, part = [], Expected()
    # raw websocket messages: the stream starts unanchored, so only gaps that need no snapshot
    faults = [rng.choice(("duplicate", "reorder", "reorder_window", "small_gap", "large_gap",
                          "medium_gap_timeout", "clock_jump_back")) for _ in range(rng.randint(0, 2))]
    raw = _stream_with_faults("spot", "RAWUSDT", 88_000_000, rng, part, spacing, step_ms, faults,
                              snapshot=False)
    lines = []
    for _, line in raw.out:
        payload = json.loads(line)["payload"]
        if rng.random() < 0.5:
            payload = {"stream": "rawusdt@depth@100ms", "data": payload}
        lines.append(json.dumps(payload, separators=(",", ":")).encode())
    others = [{"stream": "rawusdt@trade", "data": {"e": "trade", "E": START_MS, "s": "RAWUSDT",
                                                   "t": 1, "p": "1.0", "q": "2.0"}},
              {"u": 400900217, "s": "RAWUSDT", "b": "25.35", "B": "31.21", "a": "25.36", "A": "40.66"},
              {"result": None, "id": 1},
              {"stream": "rawusdt@kline_1m", "data": {"e": "kline", "E": START_MS, "s": "RAWUSDT"}}]
    for _ in range(rng.randint(1, 6)):
        lines.insert(rng.randint(0, len(lines)), json.dumps(rng.choice(others)).encode())
        expected.counts["ignored"] += 1
    expected.counts["input_records"] += len(lines)
    for _ in range(rng.randint(0, 3)):
        lines.insert(rng.randint(0, len(lines)), rng.choice(BLANKS))
    body = b"".join(line + b"\n" for line in lines)
    files.append(("raw0.binance.jsonl.gz", gzip.compress(body, 1, mtime=0)) if rng.random() < 0.5
                 else ("raw0.binance.jsonl", body))
    # cryptofeed: websocket log (header, then "<recv seconds>: <message>") and REST log
    faults = [rng.choice(("duplicate", "reorder", "medium_gap_resynced", "medium_gap_timeout",
                          "clock_jump_forward")) for _ in range(rng.randint(0, 2))]
    feed = _stream_with_faults("usdm", "CFDUSDT", 99_000_000, rng, part, spacing, step_ms, faults,
                               snapshot=True)
    url = "https://fapi.binance.com/fapi/v1/depth?symbol=CFDUSDT&limit=1000"
    ws, rest = [], []
    for time_ms, line in feed.out:
        envelope = json.loads(line)
        payload = json.dumps(envelope["payload"], separators=(",", ":")).encode()
        stamp = _stamp(envelope["recv_ts_ms"], rng)
        if envelope["type"] == "snapshot":
            rest.append(url.encode() + b" -> " + stamp + b": " + payload)
        else:
            ws.append(stamp + b': {"stream":"cfdusdt@depth@100ms","data":' + payload + b"}")
    mark = b': {"stream":"cfdusdt@markPrice","data":{"e":"markPriceUpdate","E":1,"s":"CFDUSDT"}}'
    for _ in range(rng.randint(1, 4)):
        ws.insert(rng.randint(0, len(ws)), _stamp(START_MS, rng) + mark)
        expected.counts["ignored"] += 1
    info = b"https://fapi.binance.com/fapi/v1/exchangeInfo -> " + _stamp(START_MS, rng) + b': {"symbols":[]}'
    rest.insert(rng.randint(1, len(rest)), info)     # another REST endpoint: ignored
    expected.counts["ignored"] += 1
    expected.counts["input_records"] += len(ws) + len(rest)
    header = (b"wss://fstream.binance.com/stream?streams=cfdusdt@depth@100ms/cfdusdt@markPrice <-> "
              + _stamp(START_MS - 1000, rng))
    files.append(("BINANCE_FUTURES.ws.1.0", b"\n".join([header] + ws) + b"\n"))
    files.append(("BINANCE_FUTURES.http.0.0", b"\n".join(rest) + b"\n"))
    _merge(expected, part)
    return files


def default_faults(symbol_count: int = len(DEFAULT_SYMBOLS)):
    """Every fault class once, spread over the symbols (gaps on the spot symbols where sized)."""
    return [("small_gap", 0), ("medium_gap_resynced", 0), ("medium_gap_timeout", 0),
            ("large_gap", 0), ("duplicate", 1), ("reorder", 1), ("medium_gap_resynced", 2),
            ("medium_gap_timeout", 3 % symbol_count), ("duplicate", 2), ("reorder", 3 % symbol_count)]


def demo_faults():
    """The demo's faults: every class of default_faults, plus id resets and a late message."""
    return default_faults() + list(DEMO_FAULTS_EXTRA)


def summary_json(summary: dict) -> str:
    """A summary as the pipeline writes summary.json (sinks.WriteSummary), so the two diff cleanly."""
    return json.dumps(summary, indent=2, sort_keys=True) + "\n"


def check_summary(expected_path: str, summary_path: str) -> int:
    """Prints the unified diff of the two summaries' totals (nothing when equal); 0 when equal."""
    import difflib

    with open(expected_path) as handle:
        expected = summary_json(totals(json.load(handle))).splitlines(keepends=True)
    with open(summary_path) as handle:
        written = summary_json(totals(json.load(handle))).splitlines(keepends=True)
    diff = list(difflib.unified_diff(expected, written, expected_path, summary_path))
    print("".join(diff), end="")
    return 1 if diff else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tooling.synthetic",
                                     description="Write a synthetic envelope feed with faults.")
    parser.add_argument("--events", type=int, default=100_000, help="Delta messages to generate.")
    parser.add_argument("--seed", type=int, default=7, help="Random seed.")
    parser.add_argument("--output", help="File to write (.gz compresses).")
    parser.add_argument("--check", metavar="SUMMARY", default=None,
                        help="Instead: diff a run's summary.json against --expected (the totals: "
                             "the per-file table depends on the file names); exit 1 if they differ.")
    parser.add_argument("--no_faults", action="store_true", help="A clean feed (benchmarks).")
    parser.add_argument("--expected", default=None, help="Also write the expected summary here.")
    parser.add_argument("--venue", default=None,
                        help="Instead of Binance: one key of this exchange (okx, bybit, gateio, ...) "
                             "in its own wire format, with every fault its rule defines "
                             "(tests/tooling/synthetic_venues.py).")
    parser.add_argument("--venue_format", choices=("envelope", "cryptofeed"), default="envelope",
                        help="With --venue: envelope lines or a cryptofeed raw capture.")
    args = parser.parse_args(argv)
    if args.check:
        return check_summary(args.expected, args.check)
    if not args.output:
        parser.error("--output is required")
    if args.venue:
        return _main_venue(args)
    faults = [] if args.no_faults else demo_faults()
    bad = [] if args.no_faults else list(DEMO_BAD_RECORDS)
    lines, expected = generate(args.events, args.seed, faults, bad, ignored=0 if args.no_faults else 25)
    write_lines(args.output, lines)
    if args.expected:
        with open(args.expected, "w") as handle:
            handle.write(summary_json(expected.summary()))
    print(f"wrote {len(lines)} records to {args.output}")
    return 0


def _main_venue(args) -> int:
    from tests.tooling import synthetic_venues as sv

    faults = [] if args.no_faults else list(sv.faults_for(args.venue))
    bad = [] if args.no_faults else list(sv.BAD_VENUE_RECORDS)
    events = max(args.events, (len(faults) + 1) * 30)
    items, expected = sv.generate_venue(args.venue, events, args.seed, faults, bad)
    cryptofeed = args.venue_format == "cryptofeed"
    lines = sv.as_cryptofeed(args.venue, items) if cryptofeed else sv.as_envelopes(args.venue, items)
    write_lines(args.output, lines)
    if args.expected:
        with open(args.expected, "w") as handle:
            handle.write(summary_json(sv.expected_summary(args.venue, expected, cryptofeed)))
    print(f"wrote {len(lines)} lines to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
