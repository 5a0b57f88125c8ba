"""tests/tooling/compare_runs.py: equal outputs compare equal whatever their file cut and volatile
fields; a changed, missing or extra row is reported and the exit status is 1."""
import json

import pyarrow as pa
import pyarrow.parquet as pq

from tests.tooling.compare_runs import compare, main


def write_run(root, gaps, counts, summary):
    (root / "gaps").mkdir(parents=True)
    (root / "error_counts").mkdir()
    (root / "_work").mkdir()
    (root / "_work" / "junk.bin").write_bytes(b"\x00")           # the work folder is ignored
    for i, part in enumerate(gaps):
        pq.write_table(pa.Table.from_pylist(part), root / "gaps" / f"part-{i:05d}.parquet")
    pq.write_table(pa.Table.from_pylist(counts), root / "error_counts" / "part-x.parquet")
    (root / "summary.json").write_text(json.dumps(summary))


def count(error_type, window, n):
    return {"window_start": window, "window_end": window, "error_type": error_type,
            "exchange": "e", "market": "m", "symbol": "s", "count": n, "pane": 0}


def test_same_rows_in_other_files_and_ingest_windows_compare_equal(tmp_path):
    rows = [{"gap_class": "small", "next_first_id": 5}, {"gap_class": "large", "next_first_id": 9}]
    write_run(tmp_path / "a", [rows], [count("gap_small", "w1", 1), count("dead_letter:x", "t1", 3)],
              {"balanced": True})
    write_run(tmp_path / "b", [rows[1:], rows[:1]],
              [count("gap_small", "w1", 1), count("dead_letter:x", "t7", 2),
               count("dead_letter:x", "t8", 1)], {"balanced": True})
    assert compare(str(tmp_path / "a"), str(tmp_path / "b")) == []
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0


def test_a_changed_row_or_summary_is_a_difference(tmp_path):
    write_run(tmp_path / "a", [[{"gap_class": "small", "next_first_id": 5}]],
              [count("gap_small", "w1", 1)], {"balanced": True})
    write_run(tmp_path / "b", [[{"gap_class": "medium", "next_first_id": 5}]],
              [count("gap_small", "w2", 1)], {"balanced": False})
    problems = compare(str(tmp_path / "a"), str(tmp_path / "b"))
    assert [p.split(":")[0] for p in problems if not p.startswith("  ")] == [
        "error_counts/", "gaps/", "summary.json"]
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
