"""--book_snapshots in streaming, on the real Pub/Sub emulator with the defaults users get (the
60 s flush, stopped with SIGTERM): books/ and the corrupt periods equal the batch run's on the same
records, a short faulted synthetic feed (gaps resynced by a snapshot inside the stream, a large gap,
a reorder, a duplicate, a bad record, and a crossed book injected here)."""
import json
import signal

import pyarrow.parquet as pq
from beam_pipeline.cli import main
from beam_pipeline.publish import publish
from tests.integration.test_streaming_stop import (STOP_TIMEOUT_S, _counted, _log, _start, _stop,
                                                   _subscription, _wait)
from tests.tooling.streaming_job import comparable
from tests.tooling.synthetic import generate, write_lines
from transforms import layout
from transforms.tags import BOOKS, BOOKS_SUFFIX

# ETHUSDT spot (1) keeps its book from its first snapshot on: the crossed book goes there
FAULTS = [("medium_gap_resynced", 0), ("large_gap", 0), ("reorder", 1), ("duplicate", 2),
          ("medium_gap_resynced", 3)]
SNAPSHOTS = "5:1s"


def _feed(tmp_path):
    lines, _ = generate(4_000, seed=23, faults=FAULTS, bad_records=["bad_json"], spacing=300)
    eth = [i for i, line in enumerate(lines)
           if b'"ETHUSDT"' in line and b'"market":"spot"' in line and b'"delta"' in line]
    record = json.loads(lines[eth[len(eth) // 2]])
    record["payload"]["b"].append(["150.00", "1.000"])      # a bid far above every ask: crossed
    lines[eth[len(eth) // 2]] = json.dumps(record, separators=(",", ":")).encode()
    path = str(tmp_path / "feed.jsonl")
    write_lines(path, lines)
    return path, lines


def _books(folder) -> list:
    files = layout.data_files(f"{folder}/{BOOKS}", BOOKS_SUFFIX)
    return sorted(str(row) for path in files for row in pq.ParquetFile(path).read().to_pylist())


def test_streaming_book_snapshots_equal_batch(pubsub_emulator, tmp_path):
    path, lines = _feed(tmp_path)
    assert main(["--input", path, "--output", str(tmp_path / "batch"),
                 "--book_snapshots", SNAPSHOTS]) == 0
    want_books, want = _books(tmp_path / "batch"), comparable(str(tmp_path / "batch"))
    assert len(want_books) > 100
    assert "'crossed_book'" in str(want["corrupt_periods"])

    topic, subscription = _subscription(pubsub_emulator, "books")
    out = tmp_path / "stream"
    job = _start(pubsub_emulator, subscription, out, "--book_snapshots", SNAPSHOTS)
    try:
        publish(topic, [path], progress=False)
        _wait(lambda: _counted(out, len(lines)), 120, "summary.json to count the feed", out)
    except BaseException:
        job.kill()
        raise
    code, took = _stop(job, signal.SIGTERM)
    log = _log(out)
    assert code == 0 and took < STOP_TIMEOUT_S, log[-3000:]
    assert comparable(str(out)) == want, log[-3000:]
    assert _books(out) == want_books, log[-3000:]
