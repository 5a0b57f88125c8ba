"""Synthetic Binance-style feeds in the envelope format, with injected faults and their expected
outcome: the demo's sample, the tests' ground truth and the benchmark's input.

    python -m beam_pipeline.synthetic --events 100000 --output sample/feed.jsonl.gz

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


@dataclass
class Expected:
    gaps: list = field(default_factory=list)
    corrupt_periods: list = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    dead_letters: Counter = field(default_factory=Counter)

    def summary(self) -> dict:
        c = self.counts
        return {"input_records": c["input_records"], "clean_records": c["clean_records"],
                "ignored": c["ignored"], "duplicates": c["duplicates"],
                "superseded": c["superseded"], "dead_letters": dict(sorted(self.dead_letters.items())),
                "gaps": {cls: sum(1 for g in self.gaps if g["gap_class"] == cls)
                         for cls in ("small", "medium", "large")},
                "corrupt_periods": len(self.corrupt_periods), "symbols": c["symbols"]}


def _levels(rng, mid: float, count: int):
    return [[f"{mid + rng.randint(-500, 500) / 100:.2f}", f"{rng.randint(0, 50000) / 1000:.3f}"]
            for _ in range(count)]


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
        self.out = []  # (time, line)

    def _key(self):
        return {"exchange": "binance", "market": self.market, "symbol": self.symbol}

    def snapshot(self, last_update_id: int, time_ms: int):
        payload = {"lastUpdateId": last_update_id, "bids": _levels(self.rng, 100, 20),
                   "asks": _levels(self.rng, 101, 20)}
        if self.market == "usdm":
            payload.update(E=time_ms, T=time_ms)
        self.out.append((time_ms, _envelope(self.market, self.symbol, time_ms + 5, "snapshot", payload)))
        self.expected.counts["clean_records"] += 1

    def start(self):
        self.snapshot(self.next_id - 1, self.time - 50)
        self.last_u, self.last_time = self.next_id - 1, self.time - 50
        self.expected.counts["symbols"] += 1

    def delta(self, jump: int = 0, clean: bool = True):
        """Next delta; `jump` ids are skipped before it (lost messages)."""
        first = self.next_id + jump
        last = first + self.rng.randint(0, 4)
        payload = {"e": "depthUpdate", "E": self.time, "s": self.symbol, "U": first, "u": last,
                   "b": _levels(self.rng, 100, self.rng.randint(1, 8)),
                   "a": _levels(self.rng, 101, self.rng.randint(1, 8))}
        if self.market == "usdm":
            payload.update(pu=self.last_u + jump, T=self.time - 3)
        line = _envelope(self.market, self.symbol, self.time + 7, "delta", payload)
        self.out.append((self.time, line))
        info = (first, last, self.time)
        self.last_u, self.last_time, self.next_id = last, self.time, last + 1
        self.time += self.step_ms
        if clean:
            self.expected.counts["clean_records"] += 1
        return info, line

    def gap_row(self, last_good, first, size, cls, action, resolution, time_ms):
        if self.market == "usdm":
            size = None
            cls = "medium" if cls != "large" else cls
        self.expected.gaps.append(dict(self._key(), last_good_id=last_good, next_first_id=first,
                                       gap_size=size, gap_class=cls, action=action,
                                       resolution=resolution, event_time=time_ms))

    def corrupt(self, start_id, end_id, start_time, end_time, reason):
        self.expected.corrupt_periods.append(dict(self._key(), start_id=start_id, end_id=end_id,
                                                  start_time=start_time, end_time=end_time,
                                                  reason=reason))

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
            self.expected.counts["superseded"] += 1 + held   # the snapshot covers them all
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
            self.expected.counts["duplicates"] += 1
        elif fault == "reorder":
            self.delta()
            self.delta()
            (t1, l1), (t2, l2) = self.out[-2], self.out[-1]
            self.out[-2], self.out[-1] = (t1, l2), (t2, l1)  # the later message arrives first
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
    raise ValueError(kind)


def _ignored_record(rng) -> bytes:
    trade = {"e": "aggTrade", "E": START_MS, "s": "BTCUSDT", "a": rng.randint(1, 10**9),
             "p": "100.00", "q": "0.5", "T": START_MS}
    return _envelope("spot", "BTCUSDT", START_MS, "trade", trade)


def generate(events: int = 10_000, seed: int = 0, faults=(), bad_records=(), ignored: int = 0,
             symbols=DEFAULT_SYMBOLS, spacing: int = 700, max_record_bytes: int = 1 << 20,
             start_ms: int = START_MS, step_ms: int = STEP_MS):
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


def default_faults(symbol_count: int = len(DEFAULT_SYMBOLS)):
    """Every fault class once, spread over the symbols (gaps on the spot symbols where sized)."""
    return [("small_gap", 0), ("medium_gap_resynced", 0), ("medium_gap_timeout", 0),
            ("large_gap", 0), ("duplicate", 1), ("reorder", 1), ("medium_gap_resynced", 2),
            ("medium_gap_timeout", 3 % symbol_count), ("duplicate", 2), ("reorder", 3 % symbol_count)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_pipeline.synthetic",
                                     description="Write a synthetic envelope feed with faults.")
    parser.add_argument("--events", type=int, default=100_000, help="Delta messages to generate.")
    parser.add_argument("--seed", type=int, default=7, help="Random seed.")
    parser.add_argument("--output", required=True, help="File to write (.gz compresses).")
    parser.add_argument("--no_faults", action="store_true", help="A clean feed (benchmarks).")
    parser.add_argument("--expected", default=None, help="Also write the expected summary here.")
    args = parser.parse_args(argv)
    faults = [] if args.no_faults else default_faults()
    bad = [] if args.no_faults else list(BAD_RECORDS)
    lines, expected = generate(args.events, args.seed, faults, bad, ignored=0 if args.no_faults else 25)
    write_lines(args.output, lines)
    if args.expected:
        with open(args.expected, "w") as handle:
            json.dump(expected.summary(), handle, indent=2)
    print(f"wrote {len(lines)} records to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
