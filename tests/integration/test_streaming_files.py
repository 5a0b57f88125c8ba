"""A live streaming job on the Pub/Sub emulator with the default --output_flush_seconds (60 s), fed
about 1,000 records a second for about two minutes as the publisher sends them (500 records a gzip
message): at most one file per output folder per flush, in date partitions, and the rows on disk
equal the summary's counts.

The counts are taken once the flushes that hold every record are on disk; then the job is stopped
with SIGTERM, whose drain writes one last file per folder that still holds rows, and only one:
the flushes its fast processing time fires are left to the end of input's write."""
from __future__ import annotations

import calendar
import json
import math
import os
import time
from collections import Counter

from beam_pipeline import readback
from beam_pipeline.publish import publish
from tests.tooling.streaming_job import job_log, start_job, stop_job, summary_of
from tests.tooling.synthetic import BAD_RECORDS, generate, write_lines
from transforms import layout
from transforms.tags import ALL_FOLDER_SUFFIX

RATE = 1000                 # records a second
SECONDS = 110               # of publishing: the rows land in the job's first two flushes
FLUSH = 60                  # options.py's default --output_flush_seconds (checked below)
FAULTS = ([(f, 0) for f in ("small_gap", "large_gap", "duplicate", "medium_gap_resynced") * 5]
          + [(f, 1) for f in ("small_gap", "reorder", "large_gap") * 4]
          + [(f, 2) for f in ("medium_gap_resynced", "duplicate") * 5])


def _flush_files(out) -> dict:
    """{folder: [(partition, file name)]} of every file a flush wrote (not part-empty)."""
    found = {}
    for name, suffix in ALL_FOLDER_SUFFIX.items():
        folder = os.path.join(out, name)
        found[name] = [tuple(os.path.relpath(path, folder).split(os.sep))
                       for path in layout.data_files(folder, suffix)
                       if os.path.basename(path) != layout.empty_file_name(suffix)]
    return found


def _stamp_seconds(file_name: str) -> float:
    """part-<YYYYMMDDTHHMMSSmmm>-<tag>.<suffix> -> its write time, epoch seconds."""
    stamp = file_name.split("-")[1]
    return calendar.timegm(time.strptime(stamp[:15], "%Y%m%dT%H%M%S")) + int(stamp[15:]) / 1000


def _on_disk(out) -> dict:
    return {"clean": readback.read_raw(out, "clean").num_rows,
            "gaps": readback.read_raw(out, "gaps").num_rows,
            "corrupt_periods": readback.read_raw(out, "corrupt_periods").num_rows,
            "dead_letter": readback.read_raw(out, "dead_letter").num_rows}


def _counted(summary) -> dict:
    return {"clean": summary["clean_records"], "gaps": sum(summary["gaps"].values()),
            "corrupt_periods": summary["corrupt_periods"],
            "dead_letter": sum(summary["dead_letters"].values())}


def test_a_live_job_writes_one_file_per_folder_per_flush(pubsub_emulator, tmp_path):
    from beam_pipeline.options import FeedCheckOptions

    assert FeedCheckOptions.defaults().output_flush_seconds == FLUSH
    emu = pubsub_emulator
    topic = emu.create_topic(emu.unique_name("files"))
    subscription = emu.create_subscription(topic, emu.unique_name("files-sub"))
    lines, _ = generate(RATE * SECONDS, seed=21, faults=FAULTS, bad_records=BAD_RECORDS,
                        ignored=50, spacing=2000, start_ms=int(time.time() * 1000), step_ms=3)
    feed = str(tmp_path / "feed.jsonl")
    write_lines(feed, lines)

    out = str(tmp_path / "live")
    started = time.monotonic()
    job = start_job(emu.host, subscription, out, flush_seconds=None)     # the default flush
    try:
        deadline = time.monotonic() + 90
        while "streaming: writing under" not in job_log(out):
            assert job.poll() is None and time.monotonic() < deadline, job_log(out)[-3000:]
            time.sleep(0.5)
        sent = publish(topic, [feed], records_per_message=500, per_second=RATE, progress=False)
        assert sent["records"] == len(lines)

        # every record accounted for, and every row the summary counts on disk
        deadline = time.monotonic() + 2 * FLUSH + 30
        summary = None
        while time.monotonic() < deadline:
            summary = summary_of(out)
            if summary and summary["input_records"] == len(lines) and summary["balanced"] \
                    and _on_disk(out) == _counted(summary):
                break
            time.sleep(1)
        else:
            raise AssertionError(f"rows on disk {_on_disk(out)} never equalled the summary's "
                                 f"{summary and _counted(summary)}\n{job_log(out)[-3000:]}")
    finally:
        stopped, stopped_wall = time.monotonic(), time.time()
        stop_job(job)
    duration = stopped - started
    assert "stopping on SIGTERM" in job_log(out)

    files = _flush_files(out)
    bound = math.ceil(duration / FLUSH) + 1
    per_partition = {name: Counter(partition for partition, _ in found)
                     for name, found in files.items()}
    counts = {"duration_s": round(duration, 1), "records": len(lines), "bound": bound,
              "files": {name: dict(parts) for name, parts in per_partition.items()},
              "rows": _on_disk(out)}
    print("file counts:", json.dumps(counts))
    (tmp_path / "file_counts.json").write_text(json.dumps(counts, indent=2))

    for name, found in files.items():
        assert len(found) <= bound, (name, found, counts)
        stamps = sorted(_stamp_seconds(file_name) for _, file_name in found)
        at_stop = [stamp for stamp in stamps if stamp >= stopped_wall - 1]
        # the stop's drain: one last file per folder at most
        assert len(at_stop) <= 1, (name, stamps, stopped_wall)
        stamps = [stamp for stamp in stamps if stamp < stopped_wall - 1]
        # one file per flush: a folder's flushes are a flush interval apart (less the time a busy
        # runner takes to fire a timer and write)
        assert all(b - a > FLUSH - 10 for a, b in zip(stamps, stamps[1:])), (name, stamps)
        for partition, file_name in found:
            assert partition == f"date={time.strftime('%Y-%m-%d', time.gmtime(_stamp_seconds(file_name)))}"
    assert 2 <= len(files["clean"]) <= bound            # two flushes at least: 110 s of records
    for name in ("dead_letter", "gaps", "corrupt_periods", "recovery_requests", "error_counts"):
        assert files[name], name                        # every kind of row was written
    # on disk exactly what the summary counts (nothing lost, nothing twice)
    assert _on_disk(out) == _counted(summary_of(out))
    assert all(v["rows"] == v["unique"] for v in readback.report(out).values())
