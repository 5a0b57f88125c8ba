"""Chaos harness: feeds with every fault class at once, checked against what the generator knows.

Faults (tests/tooling/synthetic.py, generate_chaos): gaps of each class (small, medium resynced,
medium timed out, large), duplicates, reordering (pairs and windows), corrupt JSON, wrong types,
oversize lines, invalid UTF-8, unknown exchanges and markets, symbol mismatches, other streams'
messages, clock jumps (backwards and forwards by minutes, also inside a medium gap's wait), id resets
(Binance engine restarts: update ids start again far lower, with and without a resync snapshot), blank
lines; in every input format (envelopes; raw Binance websocket messages, bare and combined; cryptofeed
websocket logs with their header and REST logs), plain / gzip / multi-member gzip files, and one gzip
file cut inside a member.

Checks, for every seed:
  * conservation: the summary balances, and input_records equals the non-blank non-header lines a
    reader can get from the files (counted here with zlib, independently of the pipeline) plus one
    per read error;
  * every injected gap (id resets included) and corrupt period is reported with its exact ids,
    times and resolution, every recovery request with its id, and the per-symbol clean / duplicate /
    superseded counts and dead-letter reasons are as injected;
  * no clean row twice by (exchange, market, symbol, kind, first_id, last_id);
  * the same records in another order and another split into files give identical outputs.

Two levels:
  * a fast reference, many seeds: the real read and decode DoFn bodies called directly (no runner)
    and the pure state machine fed in canonical order (beam_pipeline.core.epochs.canonical_order: by id,
    epochs between id resets in time order), as the batch sequencer does;
  * the full Beam pipeline (DirectRunner, through beam_pipeline.cli.main) for a few seeds, whose
    outputs must equal the reference's exactly (rows, summary, dead letters with their sources).

CHAOS_SEEDS=1000 (fast reference seeds, default 150) and CHAOS_BEAM_SEEDS=20 (default 6) run more.

The tests at the end pin the bugs the harness found (each was a strict xfail until its fix; a new
bug found gets one again, and loses its marker once fixed).
"""
from __future__ import annotations

import glob
import gzip
import json
import os
import random
import time
from collections import Counter, defaultdict

import fastavro
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.pvalue import TaggedOutput

from beam_pipeline.cli import main
from beam_pipeline.core.epochs import canonical_order
from beam_pipeline.core.framing import is_header
from beam_pipeline.core.model import DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT, Event, decode_levels
from beam_pipeline.options import default_policy
from beam_pipeline.core.sequencer import (CLEAN, CORRUPT, DUPLICATE, ERROR, GAP, LATE, POISON,
                                          RECOVERY, SUPERSEDED, StreamSequencer)
from tests.tooling.synthetic_venues import SNAPSHOT_RESETS
from tests.tooling.synthetic import (BLANKS, totals, START_MS, TRUNCATED_KEY, _envelope, _safe_first,
                                     generate_chaos, gzip_members, readable_prefix)
from transforms.aggregate import format_summary
from transforms.decode import DecodeBatch
from transforms.read import ReadRecordBatches
from transforms.tags import DEAD_LETTER, TALLY
from transforms.sequence_state import late_letter, poison_letter

CHAOS_SEEDS = int(os.environ.get("CHAOS_SEEDS", "150"))
# Besides Binance, every seed holds one key of each of these venues with its own faults (previous-
# link with in-stream snapshots; range-plus-one ranges with REST snapshots; one id with the u == 1
# reset); the venues without per-key ids number messages by arrival, which a reshuffle changes.
CHAOS_VENUES = ("okx", "gateio", "bybit", "kucoin", "deribit")
CHAOS_BEAM_SEEDS = int(os.environ.get("CHAOS_BEAM_SEEDS", "6"))
MAX_RECORD_BYTES = 4096


# ---- the fast reference ----------------------------------------------------------------------

class Outcome(msgspec.Struct):
    """What a run produced, in comparable form."""

    summary: dict
    clean: list            # normalized clean rows
    gaps: list             # dicts as in gaps/
    corrupt: list          # dicts as in corrupt_periods/
    recovery: list         # (exchange, market, symbol, from_id)
    letters: list          # (reason, stage, source, payload or None)
    per_key: dict = {}     # key -> Counter of clean_records / duplicates / superseded / late_event

    def canonical(self):
        """Everything that must not depend on input order or file split (sources do)."""
        return (self.summary, sorted(self.clean, key=repr), sorted(map(_row_key, self.gaps), key=repr),
                sorted(map(_row_key, self.corrupt), key=repr), sorted(self.recovery),
                sorted(reason for reason, *_ in self.letters))

    def exact(self):
        return self.canonical() + (sorted(self.letters, key=repr),)


def _row_key(row: dict):
    return tuple(sorted(row.items(), key=lambda kv: kv[0]))


def _clean_row(event: Event, segment_id, anchored):
    return (event.exchange, event.market, event.symbol, event.kind, event.first_id, event.last_id,
            event.prev_id, event.event_time, event.recv_time, tuple(decode_levels(event.bids)),
            tuple(decode_levels(event.asks)), segment_id, anchored)


def read_and_decode(paths, input_format="auto", max_record_bytes=MAX_RECORD_BYTES):
    """The read and decode DoFns' bodies, called directly: -> (events, tallies, dead letters)."""
    reader, decoder = ReadRecordBatches(input_format, max_record_bytes), DecodeBatch(max_record_bytes)
    reader.setup()
    decoder.setup()
    events, tallies, letters = [], Counter(), []

    def route(output):
        if isinstance(output, TaggedOutput):
            if output.tag == TALLY:       # per-file keys (name, file) folded into their totals
                key = output.value[0]
                tallies[key if isinstance(key, str) else key[0]] += output.value[1]
            else:
                assert output.tag == DEAD_LETTER, output.tag
                letters.append(output.value)
            return None
        return output

    for path in paths:
        readable = fileio.ReadableFile(FileMetadata(path, os.path.getsize(path)))
        for output in reader.process(readable):
            batch = route(output)
            if batch is not None:
                for decoded in decoder.process(batch):
                    event_batch = route(decoded)
                    if event_batch is not None:
                        events.extend(event_batch.events)
    return events, tallies, letters


def run_reference(paths, input_format="auto", policy=default_policy(), max_record_bytes=MAX_RECORD_BYTES):
    """Read and decode, then each key's events in canonical order through the state machine."""
    events, tallies, letters = read_and_decode(paths, input_format, max_record_bytes)
    by_key = defaultdict(list)
    for event in events:
        by_key[event.key].append(event)
    clean, gaps, corrupt, recovery, per_key = [], [], [], [], {}
    counts = Counter(tallies)
    for key in sorted(by_key):
        machine = StreamSequencer(key, policy)
        machine.feed_all(canonical_order(by_key[key], policy.medium_gap_max))
        machine.finish()
        tally = per_key.setdefault(key, Counter())
        counts["symbols"] += 1
        for tag, value in machine.take_output():
            if tag == CLEAN:
                clean.append(_clean_row(*value))
                tally["clean_records"] += 1
            elif tag in (DUPLICATE, SUPERSEDED):
                tally["duplicates" if tag == DUPLICATE else "superseded"] += 1
            elif tag == LATE:
                tally["late_event"] += 1
                letters.append(late_letter(value))
            elif tag == POISON:
                tally["processing_error"] += 1
                letters.append(poison_letter(*value))
            elif tag == GAP:
                gaps.append(msgspec.structs.asdict(value))
            elif tag == CORRUPT:
                corrupt.append(msgspec.structs.asdict(value))
            elif tag == RECOVERY:
                recovery.append((value.exchange, value.market, value.symbol, value.from_id))
        for name in ("clean_records", "duplicates", "superseded"):
            counts[name] += tally[name]
    for letter in letters:
        counts[f"dead_letters.{letter.reason}"] += 1
    for gap in gaps:
        counts[f"gaps.{gap['gap_class']}"] += 1
    counts["corrupt_periods"] += len(corrupt)
    return Outcome(totals(format_summary(counts)), clean, gaps, corrupt, recovery,
                   [_letter_view(letter.reason, letter.stage, letter.source, letter.payload)
                    for letter in letters], per_key)


def _letter_view(reason, stage, source, payload):
    # a read error's payload is a traceback, a late event's is JSON: only decode payloads compare
    return (reason, stage, source, payload if stage == "decode" else None)


# ---- what the files hold, counted independently ----------------------------------------------

def readable_records(path) -> tuple:
    """(non-blank non-header lines a reader can get, read errors): zlib, not the pipeline's reader."""
    with open(path, "rb") as handle:
        data = handle.read()
    failed = False
    if path.endswith(".gz"):
        data, failed = readable_prefix(data)
    pieces = data.split(b"\n")
    if failed:
        pieces = pieces[:-1]          # the line the cut went through is lost with the rest
    records = sum(1 for piece in pieces if piece.strip() and not is_header(piece.rstrip(b"\r")))
    return records, int(failed)


def write_feed(folder, files) -> list:
    """The files, as captures at rest: modified an hour ago, so a run takes a cut gzip member or an
    unterminated last line as final (not as still being written: --quiet_seconds)."""
    os.makedirs(folder, exist_ok=True)
    paths, an_hour_ago = [], time.time() - 3600
    for name, data in files:
        path = os.path.join(str(folder), name)
        with open(path, "wb") as handle:
            handle.write(data)
        os.utime(path, (an_hour_ago, an_hour_ago))
        paths.append(path)
    return paths


def _group(name: str) -> str:
    """Files whose lines may be mixed: envelope files, raw Binance files; a cryptofeed log alone."""
    if name.startswith("part"):
        return "envelope"
    return "binance" if ".binance." in name else name


def reshuffled(files, truncated: str, rng) -> list:
    """The same records in another order, envelope and raw Binance lines split into another number
    of files; a cryptofeed log keeps its header first; the cut file as is."""
    pools, out = defaultdict(list), []
    for name, data in files:
        if name == truncated:
            out.append((name, data))
            continue
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        lines = [line for line in data.split(b"\n") if line.strip()]
        if _group(name) != name:
            pools[_group(name)] += lines
            continue
        head = lines[:1] if is_header(lines[0]) else []
        body = lines[len(head):]
        rng.shuffle(body)
        out.append((name, b"\n".join(head + body) + b"\n"))
    for group, lines in sorted(pools.items()):
        rng.shuffle(lines)
        count = rng.randint(1, 4)
        for index in range(count):
            part = lines[index::count]
            if group == "envelope":
                first = next(i for i, line in enumerate(part) if _safe_first(line))
                part[0], part[first] = part[first], part[0]
            part.insert(rng.randrange(len(part) + 1), rng.choice(BLANKS))
            name = f"shuffled{index}.{group}.jsonl"
            if rng.random() < 0.5:
                out.append((name, b"\n".join(part)))
            else:
                out.append((name + ".gz", gzip_members(part, rng, rng.randint(1, 3))[0]))
    return out


# ---- the checks ------------------------------------------------------------------------------

def _of(key, rows):
    return sorted((row for row in rows if (row["exchange"], row["market"], row["symbol"]) == key),
                  key=repr)


def check_conservation(outcome: Outcome, paths):
    summary = outcome.summary
    assert summary["balanced"], summary
    accounted = (summary["clean_records"] + summary["ignored"] + summary["duplicates"]
                 + summary["superseded"] + sum(summary["dead_letters"].values()))
    assert summary["input_records"] == accounted, summary
    records, read_errors = map(sum, zip(*(readable_records(path) for path in paths)))
    assert summary["input_records"] == records + read_errors, (summary, records, read_errors)
    assert summary["dead_letters"].get("read_error", 0) == read_errors


def check_no_clean_row_twice(outcome: Outcome):
    ids = Counter(row[:6] for row in outcome.clean)
    assert not [key for key, n in ids.items() if n > 1], [key for key, n in ids.items() if n > 1]


def check_against_expected(outcome: Outcome, feed):
    """Exact for everything the generator predicts, every symbol (id resets included)."""
    expected = feed.expected
    summary = outcome.summary
    assert summary["ignored"] == expected.counts["ignored"]
    assert summary["input_records"] == expected.counts["input_records"]
    decode_letters = Counter(reason for reason, stage, *_ in outcome.letters if stage != "sequence")
    assert decode_letters == expected.dead_letters
    keys = set(expected.per_key) | set(outcome.per_key)
    checked = sorted(keys)
    assert summary["symbols"] == len(keys)
    for key in checked:
        want, got = expected.per_key.get(key, Counter()), outcome.per_key.get(key, Counter())
        for name in ("clean_records", "duplicates", "superseded"):
            assert got[name] == want[name], (key, name, got, want, feed.faults)
        assert got["late_event"] == got["processing_error"] == 0, key
        assert _of(key, outcome.gaps) == _of(key, expected.gaps), (key, feed.faults)
        assert _of(key, outcome.corrupt) == _of(key, expected.corrupt_periods), (key, feed.faults)
        requests = sorted(r[3] for r in outcome.recovery if r[:3] == key)
        assert requests == sorted([g["last_good_id"] + 1 for g in _of(key, expected.gaps)
                                   if g["gap_class"] == "medium"]
                                  + [g["next_first_id"] for g in _of(key, expected.gaps)
                                     if g["gap_class"] == "reset"
                                     and g["exchange"] not in SNAPSHOT_RESETS]), key
    assert summary == dict(expected.summary(), balanced=True)


def check_seed(seed, folder):
    feed = generate_chaos(seed, venues=CHAOS_VENUES)
    paths = write_feed(os.path.join(folder, f"seed{seed}"), feed.files)
    outcome = run_reference(paths)
    check_conservation(outcome, paths)
    check_no_clean_row_twice(outcome)
    check_against_expected(outcome, feed)
    rng = random.Random(seed)
    other = write_feed(os.path.join(folder, f"seed{seed}-shuffled"),
                       reshuffled(feed.files, feed.truncated, rng))
    shuffled = run_reference(other)
    check_conservation(shuffled, other)
    assert shuffled.canonical() == outcome.canonical(), f"seed {seed}: order changed the outputs"
    return feed, paths, outcome


# ---- fast: many seeds through the reference --------------------------------------------------

def test_chaos_seeds_through_the_reference(tmp_path):
    faults, reasons = Counter(), Counter()
    for seed in range(CHAOS_SEEDS):
        feed, _, outcome = check_seed(seed, str(tmp_path))
        faults.update(fault for fault, _ in feed.faults)
        reasons.update(reason for reason, *_ in outcome.letters)
    if CHAOS_SEEDS >= 20:   # the seeds between them cover every fault class
        from tests.tooling.synthetic import (BAD_RECORDS, CHAOS_STREAM_FAULTS, EXTRA_BAD_RECORDS,
                                             REASON_OF, RESET_FAULTS)
        assert set(CHAOS_STREAM_FAULTS + RESET_FAULTS) <= set(faults), set(
            CHAOS_STREAM_FAULTS + RESET_FAULTS) - set(faults)
        assert {REASON_OF[k] for k in BAD_RECORDS + EXTRA_BAD_RECORDS} | {"read_error"} <= set(reasons)


def test_truncated_gzip_keeps_the_records_before_the_cut(tmp_path):
    """A .gz file cut mid-stream: the complete lines before the cut survive, plus one read_error."""
    for seed in range(10):
        feed = generate_chaos(seed)
        [cut] = [(name, data) for name, data in feed.files if name == feed.truncated]
        paths = write_feed(tmp_path / f"cut{seed}", [cut])
        events, tallies, letters = read_and_decode(paths)
        prefix, failed = readable_prefix(cut[1])
        survivors = prefix.split(b"\n")[:-1]
        assert failed and [l.reason for l in letters if l.stage == "read"] == ["read_error"]
        assert tallies["input_records"] == len(survivors) + 1
        assert [e.symbol for e in events] == ["TRUNCUSDT"] * len(events)
        [read_error] = [l for l in letters if l.stage == "read"]
        assert read_error.source == f"{paths[0]}:{len(survivors) + 1}"
        outcome = run_reference(paths)
        assert outcome.per_key.get(TRUNCATED_KEY, Counter())["clean_records"] == \
            feed.expected.per_key.get(TRUNCATED_KEY, Counter())["clean_records"]


def test_clock_jumps_follow_the_documented_rules():
    """Canonical order is by update id; event time only bounds a wait. So a jump outside a wait
    changes nothing, a backward jump inside a wait lengthens it, a forward one ends it."""
    key = ("binance", "spot", "ETHUSDT")

    def delta(first, last, at):
        return Event(*key, DELTA, first, last, None, at, at, b"[]", b"[]", RANGE_PLUS_ONE)

    snap = Event(*key, SNAPSHOT, 100, 100, None, START_MS, START_MS, b"[]", b"[]", RANGE_PLUS_ONE)
    minute = 60_000
    steady = [snap, delta(101, 101, START_MS + 1), delta(102, 102, START_MS - 30 * minute),
              delta(103, 104, START_MS + 90 * minute), delta(105, 105, START_MS + 2)]
    machine = StreamSequencer(key, default_policy())
    machine.feed_all(sorted(steady, key=Event.sort_key))
    machine.finish()
    assert [tag for tag, _ in machine.out] == [CLEAN] * 5
    # a medium gap, then the clock goes back 10 minutes: the wait goes on; a later snapshot resyncs
    waiting = [snap, delta(150, 150, START_MS + 1), delta(151, 151, START_MS - 10 * minute),
               Event(*key, SNAPSHOT, 151, 151, None, START_MS + 50_000, START_MS + 50_000, b"[]", b"[]",
                     RANGE_PLUS_ONE)]
    machine = StreamSequencer(key, default_policy())
    machine.feed_all(sorted(waiting, key=Event.sort_key))
    machine.finish()
    [gap] = [v for t, v in machine.out if t == GAP]
    assert gap.resolution == "resynced"
    # a forward jump inside the wait ends it at once, before the snapshot
    jumped = waiting[:2] + [delta(151, 151, START_MS + 2 * minute), waiting[3]]
    machine = StreamSequencer(key, default_policy())
    machine.feed_all(sorted(jumped, key=Event.sort_key))
    machine.finish()
    [gap] = [v for t, v in machine.out if t == GAP]
    [corrupt] = [v for t, v in machine.out if t == CORRUPT]
    assert (gap.resolution, corrupt.reason, corrupt.start_id, corrupt.end_id) == (
        "corrupt_period", "recovery_timeout", 101, 149)


# ---- the full pipeline, a few seeds ----------------------------------------------------------

def _ms_table(path):
    table = pq.read_table(path)
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        columns[name] = column.to_pylist()
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def beam_outcome(folder) -> Outcome:
    def rows(name):
        out = []
        for path in sorted(glob.glob(os.path.join(folder, name, "*.parquet"))):
            out += _ms_table(path)
        return out

    clean = [(r["exchange"], r["market"], r["symbol"], r["kind"], r["first_id"], r["last_id"],
              r["prev_id"], r["event_time"], r["recv_time"],
              tuple((level["price"], level["qty"]) for level in r["bids"]),
              tuple((level["price"], level["qty"]) for level in r["asks"]),
              r["segment_id"], r["anchored"]) for r in rows("clean")]
    recovery = [(r["exchange"], r["market"], r["symbol"], r["from_id"])
                for r in rows("recovery_requests")]
    letters = []
    for path in sorted(glob.glob(os.path.join(folder, "dead_letter", "*.avro"))):
        with open(path, "rb") as handle:
            letters += [_letter_view(d["reason"], d["stage"], d["source"], d["payload"])
                        for d in fastavro.reader(handle)]
    with open(os.path.join(folder, "summary.json")) as handle:
        summary = json.load(handle)
    return Outcome(totals(summary), clean, rows("gaps"), rows("corrupt_periods"), recovery, letters)


def run_beam(paths, output, *extra) -> Outcome:
    code = main(["--input", ",".join(paths), "--output", str(output),
                 f"--max_record_bytes={MAX_RECORD_BYTES}", *extra])
    assert code == 0
    return beam_outcome(str(output))


@pytest.mark.parametrize("seed", range(CHAOS_BEAM_SEEDS))
def test_chaos_seed_through_beam_matches_the_reference(seed, tmp_path):
    feed, paths, reference = check_seed(1000 + seed, str(tmp_path))
    # small sorted runs: one key spans many of them
    span = random.Random(seed).choice([997, 50_000, 1_000_000])
    outcome = run_beam(paths, tmp_path / "out", f"--run_span_ids={span}")
    check_conservation(outcome, paths)
    check_no_clean_row_twice(outcome)
    assert outcome.exact() == reference.exact()
    # the same records in another order and split: identical outputs
    other = write_feed(str(tmp_path / "shuffled"),
                       reshuffled(feed.files, feed.truncated, random.Random(seed + 1)))
    shuffled = run_beam(other, tmp_path / "out-shuffled", "--run_span_ids=4999")
    assert shuffled.canonical() == reference.canonical()


# ---- bugs found (strict xfail: each turns into a failure once fixed, then drop the marker) --------

def _feed(folder, name, lines):
    return write_feed(folder, [(name, b"\n".join(lines) + b"\n")])


@pytest.mark.parametrize("first", [b"{{not json\n", b"\xef\xbb\xbf"], ids=["garbage_line", "utf8_bom"])
def test_the_first_line_does_not_decide_the_format_of_the_whole_file(tmp_path, first):
    feed = generate_chaos(3, resets=False, files=1)
    name, data = feed.files[0]
    body = gzip.decompress(data) if name.endswith(".gz") else data
    baseline = run_reference(write_feed(str(tmp_path / "a"), [("feed.jsonl", body)]))
    paths = write_feed(str(tmp_path / "b"), [("feed.jsonl", first + body)])
    outcome = run_reference(paths)
    check_conservation(outcome, paths)
    assert outcome.summary["clean_records"] == baseline.summary["clean_records"] > 0   # today: 0
    assert sorted(outcome.clean, key=repr) == sorted(baseline.clean, key=repr)


def test_out_of_range_numbers_are_dead_letters_not_a_crash(tmp_path):
    def delta(first, last, at=START_MS):
        return {"e": "depthUpdate", "E": at, "s": "BTCUSDT", "U": first, "u": last,
                "b": [["1.00", "2.0"]], "a": []}

    snapshot = {"lastUpdateId": 10, "bids": [["1.00", "1.0"]], "asks": []}
    lines = [_envelope("spot", "BTCUSDT", START_MS, "snapshot", snapshot),
             _envelope("spot", "BTCUSDT", START_MS, "delta", delta(11, 12)),
             _envelope("spot", "BTCUSDT", START_MS, "delta", delta(13, 2**63)),
             _envelope("spot", "BTCUSDT", 2**63, "snapshot", dict(snapshot, lastUpdateId=20)),
             _envelope("spot", "BTCUSDT", START_MS, "delta", delta(21, 22, at=10**15))]
    paths = _feed(str(tmp_path), "feed.jsonl", lines)
    # 3 of the file's 5 records are dead letters: above the default --max_bad_file_rate (exit 4)
    outcome = run_beam(paths, tmp_path / "out", "--max_bad_file_rate=1")
    assert outcome.summary["clean_records"] == 2
    assert sum(outcome.summary["dead_letters"].values()) == 3


def test_a_malformed_cryptofeed_header_loses_only_itself(tmp_path):
    depth = (b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":5,"u":6,"b":[["1.0","2.0"]],"a":[]}')
    lines = [b"wss://stream.binance.com:9443/ws/btcusdt@depth <-> 1633998512.06",
             b"1633998512.07: " + depth,
             b"wss://[stream.binance.com:9443/ws/btcusdt@depth <-> 1633998513.06",
             b"1633998513.07: " + depth, b"1633998513.08: " + depth]
    paths = _feed(str(tmp_path), "BINANCE.ws.1.0", lines)
    _, tallies, letters = read_and_decode(paths)
    records, _ = readable_records(paths[0])
    assert records == 3
    assert tallies["input_records"] == records, [l.reason for l in letters]


# ---- id resets (engine restarts), once pinned by strict-xfail tests --------------------------------

def _machine_out(key, events, policy=default_policy()):
    machine = StreamSequencer(key, policy)
    machine.feed_all(events)
    machine.finish()
    return machine.out


def _outcome_view(out):
    """Everything the machine decided, comparable across input orders."""
    tags = sorted((t, v[0].last_id if t == CLEAN else getattr(v, "last_id", None))
                  for t, v in out if t in (CLEAN, DUPLICATE, SUPERSEDED, LATE))
    clean = sorted((v[0].kind, v[0].first_id, v[0].last_id, v[1], v[2]) for t, v in out if t == CLEAN)
    gaps = sorted((repr(v) for t, v in out if t == GAP))
    corrupt = sorted((repr(v) for t, v in out if t == CORRUPT))
    recovery = sorted((repr(v) for t, v in out if t == RECOVERY))
    return tags, clean, gaps, corrupt, recovery


def test_an_id_reset_gives_the_same_answer_in_arrival_and_canonical_order():
    key = ("binance", "usdm", "RSTUSDT")

    def delta(first, last, prev, at):
        return Event(*key, DELTA, first, last, prev, at, at, b"[]", b"[]", PREVIOUS_LINK)

    before = [Event(*key, SNAPSHOT, 10_000_000, 10_000_000, None, 0, 0, b"[]", b"[]", PREVIOUS_LINK),
              delta(10_000_001, 10_000_003, 10_000_000, 100),
              delta(10_000_004, 10_000_009, 10_000_003, 200)]
    after = [delta(5_001, 5_002, -1, 300), delta(5_003, 5_004, 5_002, 400),
             Event(*key, SNAPSHOT, 5_004, 5_004, None, 430, 430, b"[]", b"[]", PREVIOUS_LINK),
             delta(5_005, 5_007, 5_004, 500)]

    def tags(events):
        return _outcome_view(_machine_out(key, events))[0]

    arrival = tags(before + after)
    canonical = tags(canonical_order(before + after, default_policy().reset_min_jump_ids))
    # (before the fix the 4 records after the restart were all superseded)
    assert [t for t, _ in arrival].count(CLEAN) >= 5, arrival
    assert arrival == canonical
    # stronger: every output agrees, and is what the Gap policy documents for a reset
    out = _machine_out(key, before + after)
    assert _outcome_view(out) == _outcome_view(
        _machine_out(key, canonical_order(before + after, default_policy().reset_min_jump_ids)))
    assert arrival == sorted([(CLEAN, 10_000_000), (CLEAN, 10_000_003), (CLEAN, 10_000_009),
                              (SUPERSEDED, 5_002), (SUPERSEDED, 5_004), (CLEAN, 5_004),
                              (CLEAN, 5_007)])
    [gap] = [v for t, v in out if t == GAP]
    assert (gap.last_good_id, gap.next_first_id, gap.gap_size, gap.gap_class, gap.action,
            gap.resolution, gap.event_time) == (10_000_009, 5_001, None, "reset",
                                                "hold_for_snapshot", "resynced", 300)
    [request] = [v for t, v in out if t == RECOVERY]
    assert (request.from_id, request.reason) == (5_001, "id_reset")
    assert not [v for t, v in out if t == CORRUPT]
    # the new epoch is anchored on its own snapshot
    assert [(v[0].last_id, v[1], v[2]) for t, v in out if t == CLEAN][-2:] == [
        (5_004, 5_004, True), (5_007, 5_004, True)]


def _restart_feed(step_ms):
    """A spot key: a snapshot, then three epochs of 20 deltas, each restart to much lower ids."""
    key = ("binance", "spot", "RSTUSDT")
    events = [Event(*key, SNAPSHOT, 10_000_000, 10_000_000, None, 0, 0, b"[]", b"[]", RANGE_PLUS_ONE)]
    clock = 0
    restarts = []
    for start in (10_000_001, 20_000, 50):        # two restarts, each to much lower ids
        if events[-1].kind == DELTA:
            restarts.append((events[-1].last_id, start, events[-1].time, clock + step_ms))
        for first in range(start, start + 40, 2):
            clock += step_ms
            events.append(Event(*key, DELTA, first, first + 1, None, clock, clock, b"[]", b"[]",
                                RANGE_PLUS_ONE))
    return key, events, restarts


@pytest.mark.parametrize("step_ms", [100, 5000], ids=["short_epochs", "long_epochs"])
def test_id_resets_in_canonical_order_are_reported_where_they_happened(step_ms):
    key, events, restarts = _restart_feed(step_ms)
    out = _machine_out(key, canonical_order(events, default_policy().reset_min_jump_ids))
    superseded = [v for t, v in out if t == SUPERSEDED and v.time > 0]   # sent after the snapshot
    inverted = [v for t, v in out if t == CORRUPT and v.start_time is not None
                and v.start_time > v.end_time]
    reported = {(v.last_good_id, v.next_first_id) for t, v in out if t == GAP}
    assert not superseded, f"{len(superseded)} deltas after a restart superseded by an older snapshot"
    assert not inverted, inverted
    assert set((last, first) for last, first, *_ in restarts) <= reported, (restarts, reported)
    # stronger: exactly the two restarts, as resets; no snapshot follows either, so each wait ends
    # in a corrupt period (the first one, with short epochs, is cut short by the second restart)
    # and every record is clean exactly once
    gaps = [v for t, v in out if t == GAP]
    assert [(g.last_good_id, g.next_first_id, g.gap_size, g.gap_class, g.action, g.resolution,
             g.event_time) for g in gaps] == [
        (last, first, None, "reset", "hold_for_snapshot", "corrupt_period", at)
        for last, first, _, at in restarts]
    reasons = ["id_reset" if step_ms == 100 else "recovery_timeout", "recovery_timeout"]
    assert [(c.start_id, c.end_id, c.start_time, c.end_time, c.reason)
            for t, c in out if t == CORRUPT] == [
        (last + 1, first - 1, last_time, at, reason)
        for (last, first, last_time, at), reason in zip(restarts, reasons)]
    assert [v.from_id for t, v in out if t == RECOVERY] == [first for _, first, *_ in restarts]
    clean = [v for t, v in out if t == CLEAN]
    assert sorted(e.last_id for e, _, _ in clean) == sorted(e.last_id for e in events)
    # nothing else: 2 x (gap, corrupt period, request, errors gap_reset and corrupt_period)
    assert Counter(t for t, _ in out) == {CLEAN: len(events), GAP: 2, CORRUPT: 2, RECOVERY: 2,
                                           ERROR: 4}
    # each epoch after a restart is its own unanchored segment, in time order
    assert [(segment, anchored) for _, segment, anchored in clean] == (
        [(10_000_000, True)] * 21 + [(20_000, False)] * 20 + [(50, False)] * 20)


def _batch_outputs(events, tmp_path, span, batches):
    """The batch sequencer (SequenceFeeds, streaming=False) on `events` cut into input batches."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    from transforms.tables import read_clean_part
    from transforms.sequence import SequenceFeeds

    reference = _machine_out(events[0].key, canonical_order(events, default_policy().reset_min_jump_ids))
    clean = [(v[0].first_id, v[0].last_id, v[1], v[2]) for t, v in reference if t == CLEAN]
    with TestPipeline() as p:
        out = (p | beam.Create(batches)
               | SequenceFeeds(default_policy(), streaming=False, work_dir=str(tmp_path),
                               run_span_ids=span))
        assert_that(out.gaps, equal_to([v for t, v in reference if t == GAP]), label="gaps")
        assert_that(out.corrupt_periods, equal_to([v for t, v in reference if t == CORRUPT]),
                    label="corrupt")
        assert_that(out.recovery_requests, equal_to([v for t, v in reference if t == RECOVERY]),
                    label="requests")
        assert_that(out.clean | beam.FlatMap(lambda part: [
            (r["first_id"], r["last_id"], r["segment_id"], r["anchored"])
            for r in read_clean_part(part).to_pylist()]), equal_to(clean), label="clean")
    return reference


@pytest.mark.parametrize("span", [1_000_000, 20_000, 7], ids=[
    "later_epochs_in_one_run", "each_epoch_in_its_runs", "many_small_runs"])
def test_id_resets_through_the_batch_sequencer_match_the_reference(span, tmp_path):
    """The batch path replays runs (ids // span) in canonical order: with span 1,000,000 the two
    later epochs (ids 20,000.. and 50..) share run 0 and the reset lies inside one run; with span 7
    every epoch spans several runs. Input batches shuffled."""
    key, events, restarts = _restart_feed(100)
    rng = random.Random(span)
    shuffled = events[:]
    rng.shuffle(shuffled)
    batches = [shuffled[i::3] for i in range(3)]
    reference = _batch_outputs(events, tmp_path, span, batches)
    assert {(v.last_good_id, v.next_first_id) for t, v in reference if t == GAP} == {
        (last, first) for last, first, *_ in restarts}


def test_an_old_epoch_snapshot_never_supersedes_the_new_epoch(tmp_path):
    """A snapshot of the epoch before a restart whose receive time is after it (it was requested
    before the restart): in canonical order it belongs to the old epoch, by its id; in arrival order
    it comes after the reset and extends the old epoch. The new epoch's deltas stay clean."""
    key = ("binance", "spot", "RSTUSDT")

    def delta(first, last, at):
        return Event(*key, DELTA, first, last, None, at, at, b"[]", b"[]", RANGE_PLUS_ONE)

    old = [Event(*key, SNAPSHOT, 9_000, 9_000, None, 0, 0, b"[]", b"[]", RANGE_PLUS_ONE)] + [
        delta(9_001 + i, 9_001 + i, 100 * (i + 1)) for i in range(10)]               # .. 9_010
    late_snapshot = Event(*key, SNAPSHOT, 9_012, 9_012, None, None, 1_250, b"[]", b"[]", RANGE_PLUS_ONE)
    new = [delta(3 + i, 3 + i, 1_200 + 100 * i) for i in range(5)]                  # 3 .. 7
    arrival = old + new[:1] + [late_snapshot] + new[1:]
    canonical = canonical_order(arrival, default_policy().reset_min_jump_ids)
    assert canonical == old + [late_snapshot] + new
    for events in (arrival, canonical):
        out = _machine_out(key, events)
        assert not [v for t, v in out if t in (SUPERSEDED, DUPLICATE, LATE)]
        [gap] = [v for t, v in out if t == GAP]
        assert (gap.last_good_id, gap.next_first_id, gap.gap_class, gap.resolution) == (
            9_012, 3, "reset", "corrupt_period")
        [corrupt] = [v for t, v in out if t == CORRUPT]
        assert (corrupt.start_id, corrupt.end_id, corrupt.start_time, corrupt.end_time) == (
            9_013, 2, 1_000, 1_200)          # from the last old delta's time: never inverted
    assert _outcome_view(_machine_out(key, arrival)) == _outcome_view(_machine_out(key, canonical))
    _batch_outputs(arrival, tmp_path, 5_000, [arrival])
