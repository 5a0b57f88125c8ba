"""beam_pipeline.readback: each row once, from Arrow (no Python object per row), as fast as reading."""
from __future__ import annotations

import shutil
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from beam_pipeline import readback
from beam_pipeline.cli import main
from tests.tooling.synthetic import BAD_RECORDS, default_faults, generate, write_lines


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readback")
    lines, _ = generate(12_000, seed=4, faults=default_faults(), bad_records=BAD_RECORDS)
    write_lines(str(folder / "feed.jsonl"), lines)
    assert main(["--input", str(folder / "feed.jsonl"), "--output", str(folder / "out")]) == 0
    return folder / "out"


def reference_dedupe(table: pa.Table, keys) -> list:
    """The first row of each id, by plain Python: what readback.dedupe must equal."""
    seen, rows = set(), []
    for row in table.to_pylist():
        key = tuple(row[k] for k in keys)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    # Arrow's sort puts nulls last (the key columns of a row without a symbol are null)
    return sorted(rows, key=lambda r: tuple((r[k] is None, 0 if r[k] is None else r[k])
                                            for k in keys if k != "payload"))


def test_duplicated_files_are_read_once_and_conflicts_counted(run, tmp_path):
    copy = tmp_path / "restored"
    shutil.copytree(run, copy)
    clean_parts = sorted((copy / "clean").glob("*.parquet"))
    # a restore writes some files again under new names; one rewritten row differs (a conflict)
    shutil.copy(clean_parts[0], copy / "clean" / "part-zz-again.parquet")
    again = pq.read_table(clean_parts[1])
    changed = again.set_column(again.schema.get_field_index("segment_id"), "segment_id",
                               pc.add(again["segment_id"], 1))
    pq.write_table(changed.slice(0, 1), copy / "clean" / "part-zz-changed.parquet")
    for folder in ("gaps", "dead_letter", "recovery_requests"):
        for path in list((copy / folder).glob("part-*")):
            shutil.copy(path, path.with_name("part-zz-" + path.name[5:]))

    original, restored = readback.report(str(run)), readback.report(str(copy))
    assert all(v["rows"] == v["unique"] and v["conflicting"] == 0 for v in original.values())
    first_rows = pq.read_table(clean_parts[0]).num_rows
    assert restored["clean"] == {"rows": original["clean"]["rows"] + first_rows + 1,
                                 "unique": original["clean"]["unique"], "conflicting": 1}
    for folder in ("gaps", "dead_letter", "recovery_requests"):
        assert restored[folder]["unique"] == original[folder]["unique"] > 0, folder
        assert restored[folder]["rows"] == 2 * original[folder]["rows"], folder
        assert restored[folder]["conflicting"] == 0, folder

    for name, keys in readback.KEYS.items():
        raw = readback.read_raw(str(copy), name)
        assert readback.read(str(copy), name).to_pylist() == reference_dedupe(raw, keys), name
    assert readback.read_clean(str(copy)).equals(readback.read_clean(str(run)))


def test_the_report_costs_about_what_reading_clean_costs(run):
    readback.read_clean(str(run))                                  # warm: imports, page cache
    started = time.process_time()
    readback.read_clean(str(run))
    reading = time.process_time() - started
    started = time.process_time()
    readback.report(str(run))
    reporting = time.process_time() - started
    # generous: per-row Python (the old report) was over 50x read_clean
    assert reporting < 5 * reading + 0.5, (reporting, reading)
