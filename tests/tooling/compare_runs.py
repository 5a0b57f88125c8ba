"""Compare the outputs of two pipeline runs row for row: python -m tests.tooling.compare_runs A B

Every output folder under A and B (clean/, dead_letter/, gaps/, corrupt_periods/,
recovery_requests/, error_counts/, alerts/, undelivered/, ...) is read whole, flat or in date
partitions (date=YYYY-MM-DD/, hidden files skipped): Parquet with pyarrow, Avro with fastavro, JSON
Lines line by line; summary.json as one document. Rows are compared as multisets, so how rows are
cut into files (names, part numbers, shards, partitions) does not matter.

Ignored, because they differ from run to run by design:
  * the work folder (_work/, or any folder whose name starts with "_");
  * dead letters' ingest_time (when the pipeline saw the record), status rows' as_of, and
    summary.json's settings (each run's own --output and runner);
  * the windows of dead_letter:* error counts and alerts: those errors are stamped with their
    ingest time, so their window is the wall-clock minute of the run. Their counts are compared
    summed per (error_type, symbol), so a run that straddles a minute compares equal.

Exits 0 when the runs match, 1 listing the differences (at most --show per folder).
"""
from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import sys
from collections import Counter

import fastavro
import pyarrow.parquet as pq

from transforms.layout import PARTITION, is_hidden

READERS = {}


def reader(suffix):
    def register(fn):
        READERS[suffix] = fn
        return fn
    return register


@reader(".parquet")
def _parquet(path):
    return pq.ParquetFile(path).read().to_pylist()


@reader(".avro")
def _avro(path):
    with open(path, "rb") as handle:
        return list(fastavro.reader(handle))


@reader(".jsonl")
def _jsonl(path):
    with open(path, "rb") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _plain(value):
    """A value as JSON can hold it, the same for equal values whatever reader produced it."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return "b64:" + base64.b64encode(value).decode()
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def _is_dead_letter_error(row) -> bool:
    return str(row.get("error_type", "")).startswith("dead_letter:")


def normalize(folder: str, rows: list) -> list:
    """Rows without their volatile fields (see the module docstring)."""
    rows = [_plain(row) for row in rows]
    if folder == "dead_letter":
        for row in rows:
            row.pop("ingest_time", None)
    elif folder == "status":
        for row in rows:
            row.pop("as_of", None)           # when the run took it: wall time
    elif folder == "error_counts":
        summed, kept = Counter(), []
        for row in rows:
            if _is_dead_letter_error(row):
                summed[(row["error_type"], row["exchange"], row["market"], row["symbol"],
                        row.get("pane", 0))] += row["count"]
            else:
                kept.append(row)
        kept.extend({"error_type": t, "exchange": e, "market": m, "symbol": s, "pane": p,
                     "count": n, "window_start": "(ingest time)", "window_end": "(ingest time)"}
                    for (t, e, m, s, p), n in summed.items())
        rows = kept
    elif folder == "alerts":
        for row in rows:
            if _is_dead_letter_error(row):
                row["window_start"] = row["window_end"] = "(ingest time)"
    return rows


def read_folder(path: str) -> tuple[list, list]:
    """(rows, files it could not read) of one output folder, flat or in date partitions
    (date=YYYY-MM-DD/: a streaming run's); hidden files (in progress) are not read."""
    rows, unknown = [], []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if is_hidden(name):
            continue
        if os.path.isdir(full):
            if PARTITION.fullmatch(name):
                inner, odd = read_folder(full)
                rows.extend(inner)
                unknown.extend(f"{name}/{entry}" for entry in odd)
            else:
                unknown.append(name + "/")
            continue
        suffix = next((s for s in READERS if name.endswith(s)), None)
        if suffix is None:
            unknown.append(name)
            continue
        rows.extend(READERS[suffix](full))
    return rows, unknown


def outputs(run_dir: str) -> dict:
    found = {}
    for name in sorted(os.listdir(run_dir)):
        full = os.path.join(run_dir, name)
        if name.startswith("_"):
            continue                                    # the work folder
        if os.path.isdir(full):
            found[name] = full
        elif name.endswith(".json"):
            found[name] = full
    return found


def _key(row) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def compare(run_a: str, run_b: str, show: int = 5) -> list:
    """Differences between two runs' outputs, as lines of text (empty: identical)."""
    problems = []
    a, b = outputs(run_a), outputs(run_b)
    for name in sorted(set(a) ^ set(b)):
        problems.append(f"{name}: only in {'A' if name in a else 'B'}")
    for name in sorted(set(a) & set(b)):
        if name.endswith(".json"):
            with open(a[name]) as ha, open(b[name]) as hb:
                doc_a, doc_b = json.load(ha), json.load(hb)
            for doc in (doc_a, doc_b):          # each run's own settings (its --output, runner)
                doc.pop("settings", None)
            if doc_a != doc_b:
                problems.append(f"{name}: differs\n  A: {_key(doc_a)}\n  B: {_key(doc_b)}")
            continue
        (rows_a, unknown_a), (rows_b, unknown_b) = read_folder(a[name]), read_folder(b[name])
        for side, unknown in (("A", unknown_a), ("B", unknown_b)):
            if unknown:
                problems.append(f"{name}/: files of no known format in {side}: {unknown}")
        count_a = Counter(map(_key, normalize(name, rows_a)))
        count_b = Counter(map(_key, normalize(name, rows_b)))
        if count_a != count_b:
            only_a, only_b = count_a - count_b, count_b - count_a
            problems.append(f"{name}/: {sum(count_a.values())} rows in A, {sum(count_b.values())} "
                            f"in B; {sum(only_a.values())} only in A, {sum(only_b.values())} only in B")
            for side, only in (("A", only_a), ("B", only_b)):
                for row in list(only.elements())[:show]:
                    problems.append(f"  only in {side}: {row}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", help="output folder (--output) of the first run")
    parser.add_argument("run_b", help="output folder (--output) of the second run")
    parser.add_argument("--show", type=int, default=5, help="differing rows shown per folder")
    args = parser.parse_args(argv)
    for run in (args.run_a, args.run_b):
        if not os.path.isdir(run):
            parser.error(f"{run} is not a folder")
    problems = compare(args.run_a, args.run_b, args.show)
    names = sorted(outputs(args.run_a))
    if problems:
        print(f"{len(problems)} difference(s) between {args.run_a} and {args.run_b}:")
        print("\n".join(problems))
        return 1
    print(f"identical: {', '.join(names)} (volatile fields ignored: see --help)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
