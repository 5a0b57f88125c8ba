"""A growing gzip file followed by a DirectRunner streaming job (--streaming --input DIR
--watch_seconds), stopped with SIGTERM while a member is still being written, more appended, then
the printed command again: the restarted job reads each file on from where the stop left it.
Both runs together hold every record once on disk, counted without readback's deduplication, and
no `restart` gap appears where the feed was continuous."""
import gzip
import os
import shlex
import signal
import subprocess
import time

from beam_pipeline.cli import main
from beam_pipeline.readback import read, read_raw
from tests.conftest import REPO
from tests.tooling.streaming_job import start_watching, stop_group, summary_of, wait_for
from tests.tooling.synthetic import generate
from transforms.cursors import FILE_PROGRESS_FOLDER

# faults that never wait for a snapshot: a stop anywhere ends no wait early, so both runs
# together must answer exactly as batch does
CONTINUOUS = [("small_gap", 0), ("large_gap", 1), ("duplicate", 2)]
BAD = ["bad_json", "mistyped_field"]
STOP_TIMEOUT_S = 25                      # --stop_timeout's default
GAP_COLUMNS = ("market", "symbol", "last_good_id", "next_first_id", "gap_size", "gap_class",
               "action", "resolution", "event_time")
CLEAN_COLUMNS = ("market", "symbol", "kind", "first_id", "last_id", "segment_id", "anchored")


def _member(lines) -> bytes:
    return gzip.compress(b"".join(line + b"\n" for line in lines))


def _append(path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def _log(out) -> str:
    with open(out + ".log") as handle:
        return handle.read()


def _counted(out, records):
    summary = summary_of(out)
    return summary if summary and summary["input_records"] >= records and summary["balanced"] \
        else None


def _rows(folder, name, columns, reader=read):
    return sorted(tuple(str(row[c]) for c in columns) for row in reader(folder, name).to_pylist())


def _stop(job) -> int:
    job.send_signal(signal.SIGTERM)
    return job.wait(timeout=STOP_TIMEOUT_S + 30)


def test_a_stopped_file_job_restarts_where_each_file_was_read_to(tmp_path):
    lines, _ = generate(4_000, seed=31, faults=CONTINUOUS, bad_records=BAD, spacing=400)
    quarter = len(lines) // 4
    first, second, torn, last = (lines[:quarter], lines[quarter:2 * quarter],
                                 lines[2 * quarter:3 * quarter], lines[3 * quarter:])
    folder, out = tmp_path / "capture", str(tmp_path / "stream")
    folder.mkdir()
    feed = str(folder / "feed.jsonl.gz")
    _append(feed, _member(first))
    job = start_watching(str(folder), out, flush_seconds=None)     # the default flush
    try:
        assert wait_for(lambda: _counted(out, len(first)), 90), _log(out)[-3000:]
        _append(feed, _member(second))                             # appended while it is read
        assert wait_for(lambda: _counted(out, 2 * quarter), 60), _log(out)[-3000:]
        member = _member(torn)                                     # a member being written
        _append(feed, member[:len(member) // 2])
        time.sleep(1.5)                  # three listings: what the half holds is read
        assert _stop(job) == 0, _log(out)[-3000:]
    finally:
        stop_group(job)
    log = _log(out)
    run1 = summary_of(out)
    assert run1["balanced"] and 2 * quarter <= run1["input_records"] < len(lines)
    assert os.listdir(os.path.join(out, FILE_PROGRESS_FOLDER))       # how far the file was read
    restart = shlex.split(log.split("Continue this job", 1)[1].split("\n", 2)[1])
    assert "--job_id" in restart and "--overwrite" not in restart

    _append(feed, member[len(member) // 2:])                       # the member completed ...
    _append(feed, _member(last))                                   # ... and another one
    job = subprocess.Popen(restart, cwd=REPO, stdout=open(out + ".log", "a"),
                           stderr=subprocess.STDOUT, start_new_session=True,
                           env=dict(os.environ, PYTHONPATH=REPO))
    try:
        assert wait_for(lambda: os.path.exists(os.path.join(out, "_runs", "1", "summary.json")),
                        60), _log(out)[-3000:]              # the first run's summary kept aside
        assert wait_for(lambda: _counted(out, len(lines) - run1["input_records"]), 90), \
            _log(out)[-3000:]
        assert _stop(job) == 0, _log(out)[-3000:]
    finally:
        stop_group(job)
    run2 = summary_of(out)
    assert run2["balanced"]
    assert run1["input_records"] + run2["input_records"] == len(lines)
    assert run2["job"]["totals"]["input_records"] == len(lines)

    batch = str(tmp_path / "batch")
    assert main(["--input", str(folder), "--output", batch]) == 0
    # on disk, as written (no deduplication): both runs together equal batch, nothing twice
    assert _rows(out, "clean", CLEAN_COLUMNS, read_raw) == _rows(batch, "clean", CLEAN_COLUMNS)
    assert _rows(out, "gaps", GAP_COLUMNS, read_raw) == _rows(batch, "gaps", GAP_COLUMNS)
    assert not [g for g in read_raw(out, "gaps").to_pylist() if g["cause"] == "restart"]
    assert read_raw(out, "dead_letter").num_rows == len(BAD)
