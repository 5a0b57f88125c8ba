"""python -m beam_pipeline compact: a streaming job's closed date partitions become few large files,
each row once (readback's keys), atomically; today's partition is never touched."""
from __future__ import annotations

import datetime
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from beam_pipeline import compact, readback
from beam_pipeline.cli import main
from tests.tooling.flushes import write_flushes
from transforms import layout
from transforms.tags import ALL_FOLDER_SUFFIX, FOLDER_SUFFIX

TODAY = datetime.datetime.now(datetime.timezone.utc).date()
DAYS = [(TODAY - datetime.timedelta(days=n)).isoformat() for n in (2, 1, 0)]


@pytest.fixture(scope="module")
def flushed(tmp_path_factory):
    """Four flushes of every folder, written by the streaming sinks (one file per folder and
    flush), spread over three days as a job running across midnights leaves them: flushes 1-2 on
    the day before yesterday, 3 yesterday, 4 today. Then a restored job's rewrite: flush 1's
    files written again under new names (later flush times) on the same day."""
    root = tmp_path_factory.mktemp("compact")
    written = root / "written"
    write_flushes(str(written), 12, 4)
    out = root / "out"
    for name, suffix in FOLDER_SUFFIX.items():
        files = layout.data_files(str(written / name), suffix)
        assert len(files) == 4, (name, files)
        for index, path in enumerate(files):
            day = DAYS[max(index - 1, 0)]
            target = out / name / f"date={day}" / os.path.basename(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
            if index == 0:           # the rewrite after a restore: same rows, a later flush name
                again = layout.flush_file_name(datetime.datetime.fromisoformat(day).replace(
                    hour=23, tzinfo=datetime.timezone.utc).timestamp(), suffix)
                shutil.copy(path, target.with_name(again))
    (out / "summary.json").write_text("{}")
    return out


def snapshot(out) -> dict:
    """What readers see: readback's rows of every folder (each has its keys)."""
    assert set(FOLDER_SUFFIX) <= set(readback.KEYS)
    return {name: readback.read(str(out), name) for name in readback.KEYS}


def today_files(out) -> dict:
    found = {}
    for name in ALL_FOLDER_SUFFIX:
        for path in (out / name / f"date={DAYS[2]}").glob("*"):
            found[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


def rows_in(name, path) -> int:
    """Rows of one file (its size says little: a few Parquet rows are mostly footer)."""
    if name == "dead_letter":
        return len(readback.records(name, readback.read_bytes(path)))
    return pq.ParquetFile(path).metadata.num_rows


def files_of(out, name, day) -> list:
    return [os.path.basename(p) for p in layout.data_files(
        str(out / name / f"date={day}"), ALL_FOLDER_SUFFIX[name])]


def test_compaction_gives_few_large_files_the_same_rows_and_leaves_today_alone(flushed, tmp_path,
                                                                              capsys):
    out = tmp_path / "out"
    shutil.copytree(flushed, out)
    before, today = snapshot(out), today_files(out)
    assert readback.report(str(out))["clean"]["rows"] > readback.report(str(out))["clean"]["unique"]
    most = {name: max(rows_in(name, p) for p in layout.data_files(str(out / name), suffix))
            for name, suffix in FOLDER_SUFFIX.items()}

    assert main(["compact", str(out)]) == 0                  # the defaults: before today, 64 MB
    report = json.loads(capsys.readouterr().out)
    assert report["cutoff"] == DAYS[2]

    for name, suffix in FOLDER_SUFFIX.items():
        assert files_of(out, name, DAYS[0]) != [] and len(files_of(out, name, DAYS[0])) == 1
        assert len(files_of(out, name, DAYS[1])) == 1
        (first,) = layout.data_files(str(out / name / f"date={DAYS[0]}"), suffix)
        assert layout.COMPACTED in first and rows_in(name, first) > most[name], name
        folder = report["folders"][name]
        assert (folder["partitions"], folder["open_partitions"]) == (2, 1), name
        assert (folder["files_before"], folder["files_after"]) == (4, 2), name
        assert folder["rows_after"] < folder["rows_before"], name      # the rewrite's rows dropped
        assert not [p for p in (out / name).rglob("*") if p.name.startswith((".", "_"))]
    assert snapshot(out) == before                          # readback reads the same rows
    for name in readback.KEYS:                              # and nothing twice any more
        assert readback.read_raw(str(out), name).num_rows == before[name].num_rows, name
    assert today_files(out) == today                        # today's partition: untouched
    assert pq.read_table(out / "gaps").num_rows == before["gaps"].num_rows

    assert main(["compact", str(out)]) == 0                 # again: nothing left to do
    again = json.loads(capsys.readouterr().out)
    assert set(again["folders"]) == set(FOLDER_SUFFIX)     # undelivered/: none here
    assert all(f["partitions"] == 0 and f["skipped_partitions"] == 2
               for f in again["folders"].values())
    assert snapshot(out) == before and today_files(out) == today


def test_the_target_size_cuts_files_and_before_limits_the_days(flushed, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(flushed, out)
    before = snapshot(out)
    # only the day before yesterday, in files of about 500 bytes
    assert main(["compact", str(out), "--before", f"{DAYS[1]}T12:00:00Z",
                 "--target_file_mb", "0.0005"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cutoff"] == DAYS[1]
    clean = files_of(out, "clean", DAYS[0])
    assert len(clean) > 1 and all(layout.COMPACTED in name for name in clean)
    assert len(files_of(out, "clean", DAYS[1])) == 1                  # not compacted: after --before
    assert all(layout.COMPACTED not in name for name in files_of(out, "gaps", DAYS[1]))
    assert snapshot(out) == before
    # --before in the future still leaves today's partition alone
    assert main(["compact", str(out), "--before", "2999-01-01"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cutoff"] == DAYS[2]
    assert all(layout.COMPACTED not in name for name in files_of(out, "clean", DAYS[2]))
    assert snapshot(out) == before


@pytest.mark.parametrize("argv, message", [
    (["--befor", "2026-01-01"], "unrecognized arguments: --befor"),
    (["--before", "yesterday"], "not an ISO-8601 date or time"),
    (["--target_file_mb", "0"], "--target_file_mb must be > 0"),
    (["--target_file_mb", "x"], "invalid float value"),
    (["--target"], "unrecognized arguments: --target"),        # no abbreviations
])
def test_a_mistyped_option_is_a_usage_error(flushed, argv, message, capsys):
    assert main(["compact", str(flushed), *argv]) == 2
    assert message in capsys.readouterr().err
    assert main(["compact", str(flushed) + "-missing"]) == 2


def test_a_crash_at_any_step_loses_and_duplicates_nothing(flushed, tmp_path):
    """The steps a compaction takes, stopped where a crash would stop them: readback reads the
    same rows at every point, and the next compact completes (or redoes) the partition."""
    day = DAYS[0]
    for stop_after in ("new files", "journal", "one rename"):
        out = tmp_path / stop_after.replace(" ", "_")
        shutil.copytree(flushed, out)
        before = snapshot(out)
        for name in ALL_FOLDER_SUFFIX:
            if not (out / name).exists():
                continue
            job = compact.PartitionCompaction(str(out / name), name, day, 1_000)
            assert job.plan()
            job.write_new_files()                 # hidden: readers do not see them
            if stop_after != "new files":
                job.write_journal()
            if stop_after == "one rename":        # the swap began: one new file is in place
                first = job.outputs[0]
                os.rename(out / name / f"date={day}" / layout.in_progress_name(first),
                          out / name / f"date={day}" / first)
        assert snapshot(out) == before, stop_after
        for name in readback.KEYS:                # both copies visible: readback reads each once
            assert readback.read(str(out), name).equals(before[name]), (stop_after, name)

        assert main(["compact", str(out)]) == 0
        assert snapshot(out) == before, stop_after
        for name, suffix in FOLDER_SUFFIX.items():
            partition = out / name / f"date={day}"
            assert not [p for p in partition.iterdir() if p.name.startswith((".", "_"))]
            assert all(layout.COMPACTED in p for p in files_of(out, name, day)), (stop_after, name)
        for name in readback.KEYS:
            assert readback.read_raw(str(out), name).num_rows == before[name].num_rows
