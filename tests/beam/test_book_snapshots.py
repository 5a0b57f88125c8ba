"""--book_snapshots through the whole batch job on a faulted synthetic feed (gaps of every class,
duplicates, reorders, and a crossed book injected here), checked against a reference written
here from the clean rows, independently of core/books: a plain dict per side, rebuilt from each
anchoring snapshot through the clean deltas in id order, with the rule the README states (the
best N levels a side at the end of every INTERVAL of event time in which the book changed, taken
before the first message at or after it when that message continues the segment, the book is
anchored and not crossed since its last snapshot). No book snapshot lies in a corrupt period."""
import json
from collections import defaultdict
from decimal import Decimal

import pytest

from beam_pipeline.cli import main
from tests.tooling.synthetic import default_faults, generate, write_lines

LEVELS, INTERVAL_MS = 5, 1000


def _ms(value):
    return None if value is None else int(value.timestamp() * 1000)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    lines, _ = generate(8_000, seed=11, faults=default_faults())
    eth = [i for i, line in enumerate(lines)
           if b'"ETHUSDT"' in line and b'"market":"spot"' in line and b'"delta"' in line]
    crossed_line = eth[len(eth) // 2]
    record = json.loads(lines[crossed_line])
    record["payload"]["b"].append(["150.00", "1.000"])      # far above every ask
    lines[crossed_line] = json.dumps(record, separators=(",", ":")).encode()
    folder = tmp_path_factory.mktemp("books")
    write_lines(str(folder / "feed.jsonl.gz"), lines)
    assert main(["--input", str(folder / "feed.jsonl.gz"), "--output", str(folder / "out"),
                 "--book_snapshots", f"{LEVELS}:1s"]) == 0
    return folder / "out", record["payload"]["U"]


def reference_snapshots(clean):
    """{key: [(time, segment_id, last_id, bids, asks)]} from the clean rows."""
    by_key = defaultdict(list)
    for row in clean:
        by_key[(row["exchange"], row["market"], row["symbol"])].append(row)
    expected = {}
    for key, rows in by_key.items():
        rows.sort(key=lambda r: (r["last_id"], r["kind"] == "snapshot"))
        out, bids, asks = [], {}, {}
        good = changed_at = segment = last_id = None
        for row in rows:
            time = _ms(row["event_time"]) if row["event_time"] is not None else _ms(row["recv_time"])
            continuing = row["anchored"] and row["segment_id"] == segment and (
                row["kind"] == "delta" or row["last_id"] == last_id)
            if changed_at is not None:
                due = (changed_at // INTERVAL_MS + 1) * INTERVAL_MS
                if time >= due:
                    if continuing and good:
                        out.append((due, segment, last_id,
                                    [bids[p] for p in sorted(bids, reverse=True)[:LEVELS]],
                                    [asks[p] for p in sorted(asks)[:LEVELS]]))
                    changed_at = None
            if row["kind"] == "snapshot":
                bids, asks, good, changed_at = {}, {}, True, None
            elif not row["anchored"]:
                good = False
            for side, levels in ((bids, row["bids"]), (asks, row["asks"])):
                for level in levels:
                    if Decimal(level["qty"]) == 0:
                        side.pop(Decimal(level["price"]), None)
                    else:
                        side[Decimal(level["price"])] = (level["price"], level["qty"])
            if good and bids and asks and max(bids) >= min(asks):
                good = False                                   # crossed: until the next snapshot
            if good and changed_at is None:
                changed_at = time
            segment, last_id = row["segment_id"], row["last_id"]
        expected[key] = out
    return expected


def test_book_snapshots_equal_an_independent_rebuild(run, outputs):
    out, _ = run
    result = outputs(out)
    books = defaultdict(list)
    for row in result.parquet_rows("books"):
        books[(row["exchange"], row["market"], row["symbol"])].append((
            _ms(row["time"]), row["segment_id"], row["last_id"],
            [(lv["price"], lv["qty"]) for lv in row["bids"]],
            [(lv["price"], lv["qty"]) for lv in row["asks"]]))
    expected = reference_snapshots(result.parquet_rows("clean"))
    assert sum(map(len, expected.values())) > 300
    for key in expected:
        assert sorted(books.get(key, [])) == expected[key], key
    assert set(books) <= set(expected)


def test_no_book_snapshot_in_a_corrupt_period(run, outputs):
    out, crossed_at = run
    result = outputs(out)
    periods = result.parquet_rows("corrupt_periods")
    crossed = [p for p in periods if p["reason"] == "crossed_book"]
    assert [(p["symbol"], p["start_id"]) for p in crossed] == [("ETHUSDT", crossed_at)]
    assert {p["reason"] for p in periods} == {"crossed_book", "large_gap", "recovery_timeout"}
    books = result.parquet_rows("books")
    for p in periods:
        key = (p["exchange"], p["market"], p["symbol"])
        start, end = _ms(p["start_time"]), _ms(p["end_time"])
        inside = [b for b in books if (b["exchange"], b["market"], b["symbol"]) == key
                  and (start < _ms(b["time"]) < end
                       or (p["start_id"] <= b["last_id"] < p["end_id"]))]
        assert inside == [], p
    eth = [b for b in books if b["symbol"] == "ETHUSDT" and b["market"] == "spot"]
    assert eth and all(b["last_id"] < crossed_at for b in eth)
