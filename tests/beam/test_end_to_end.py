"""The whole batch job through its CLI: real captures, synthetic faults, order independence."""
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.cli import main
from beam_pipeline.core.runtime import iso_ms
from tests.tooling.synthetic import BAD_RECORDS, default_faults, generate, totals, write_lines




def _ms(value):
    return None if value is None else int(value.timestamp() * 1000)


def _rows_with_ms(rows, *time_columns):
    return [{k: (_ms(v) if k in time_columns else v) for k, v in row.items()} for row in rows]


def _gap_key(row):
    return (row["exchange"], row["market"], row["symbol"], row["next_first_id"])


def _run(inputs, output, *extra):
    return main(["--input", ",".join(inputs), "--output", str(output), *extra])


def test_real_captures_are_continuous_and_bridged(captures, tmp_path, outputs):
    assert _run(captures, tmp_path / "out") == 0
    out = outputs(tmp_path / "out")
    summary = out.summary()
    assert totals(summary) == {
        "input_records": 1808, "clean_records": 929, "ignored": 859, "duplicates": 0,
        "superseded": 20, "control": 0, "dead_letters": {}, "gaps": {"small": 0, "medium": 0, "large": 0, "reset": 0},
        "corrupt_periods": 0, "symbols": 8, "reconnects": 0, "balanced": True}
    assert [(row["file"], row["format"], row["records"], row["clean"], row["ignored"],
             row["superseded"], row["dead"]) for row in summary["files"]] == [
        (captures[1], "cryptofeed", 4, 4, 0, 0, 0), (captures[0], "cryptofeed", 265, 172, 88, 5, 0),
        (captures[3], "cryptofeed", 4, 4, 0, 0, 0), (captures[2], "cryptofeed", 1535, 749, 771, 15, 0)]
    clean = out.parquet_rows("clean")
    assert len(clean) == 929
    # one clean file per symbol: USD-M runs of 100,000 ids hold ~25 messages, each run used to be
    # its own file (9 files of 6-29 rows per symbol)
    files = sorted(p.name for p in (tmp_path / "out" / "clean").glob("*.parquet"))
    assert len(files) == 8 and all(name.endswith("-000001.parquet") for name in files), files
    assert out.parquet_rows("gaps") == []
    by_symbol = {}
    for row in sorted(clean, key=lambda r: (r["market"], r["symbol"], r["last_id"], r["kind"])):
        by_symbol.setdefault((row["market"], row["symbol"]), []).append(row)
    assert len(by_symbol) == 8
    for (market, symbol), rows in by_symbol.items():
        snapshot, first_delta = rows[0], rows[1]
        # Binance's bridge: the snapshot comes first, and the first applied delta straddles it.
        assert snapshot["kind"] == "snapshot", (market, symbol)
        lid = snapshot["last_id"]
        if market == "spot":
            assert first_delta["first_id"] <= lid + 1 <= first_delta["last_id"]
        else:
            assert first_delta["first_id"] <= lid <= first_delta["last_id"] or first_delta["prev_id"] == lid
        assert all(r["anchored"] for r in rows) and len({r["segment_id"] for r in rows}) == 1
    # prices stay exact strings as sent
    nkn = next(r for r in clean if r["symbol"] == "NKNUSDT" and r["kind"] == "delta")
    assert all(isinstance(level["price"], str) for level in nkn["bids"] + nkn["asks"])


@pytest.fixture(scope="module")
def faulty_feed():
    lines, expected = generate(12_000, seed=11, faults=default_faults(), bad_records=BAD_RECORDS,
                               ignored=7)
    return lines, expected


def test_every_injected_fault_is_reported_exactly(faulty_feed, tmp_path, outputs):
    lines, expected = faulty_feed
    write_lines(str(tmp_path / "feed.jsonl.gz"), lines)
    assert _run([str(tmp_path / "feed.jsonl.gz")], tmp_path / "out") == 0
    out = outputs(tmp_path / "out")
    gaps = _rows_with_ms(out.parquet_rows("gaps"), "event_time")
    assert sorted(gaps, key=_gap_key) == sorted(expected.gaps, key=_gap_key)
    corrupt = _rows_with_ms(out.parquet_rows("corrupt_periods"), "start_time", "end_time")
    assert sorted(corrupt, key=lambda r: (r["symbol"], r["start_id"])) == sorted(
        expected.corrupt_periods, key=lambda r: (r["symbol"], r["start_id"]))
    assert totals(out.summary()) == dict(expected.summary(), balanced=True)
    letters = out.dead_letters()
    assert sorted(d["reason"] for d in letters) == sorted(expected.dead_letters.elements())
    assert all(d["stage"] == "decode" and d["source"].startswith(str(tmp_path)) for d in letters)
    # what a record yielded stays with its dead letter; its error counts are per symbol and in the
    # capture's own windows (event time), like the gaps', not at ingest time
    by_reason = {d["reason"]: d for d in letters}
    key = ("exchange", "market", "symbol")        # spelled as in clean/
    assert [tuple(by_reason[reason][k] for k in key) for reason in ("invalid_ids", "missing_prev_id")
            ] == [("binance", "spot", "BTCUSDT"), ("binance", "usdm", "BTCUSDT")]
    assert by_reason["missing_prev_id"]["first_id"] == 5 and by_reason["missing_prev_id"]["last_id"] == 6
    dead_counts = [r for r in out.parquet_rows("error_counts") if r["error_type"].startswith("dead_letter:")]
    assert sum(r["count"] for r in dead_counts) == len(letters)
    capture_days = {r["window_start"].date().isoformat() for r in out.parquet_rows("error_counts")
                    if r["error_type"].startswith("gap_")}
    dated = [r for r in dead_counts if r["symbol"] is not None]
    assert dated and {r["window_start"].date().isoformat() for r in dated} == capture_days == {"2023-11-14"}
    assert all(r["exchange"] is None for r in dead_counts if r["symbol"] is None)   # null, not "-"
    requests = out.parquet_rows("recovery_requests")
    medium = [g for g in expected.gaps if g["gap_class"] == "medium"]
    assert sorted((r["symbol"], r["market"], r["from_id"]) for r in requests) == sorted(
        (g["symbol"], g["market"], g["last_good_id"] + 1) for g in medium)
    # one time type in every table: Parquet timestamp[ms, UTC]
    assert sorted((r["symbol"], iso_ms(int(r["event_time"].timestamp() * 1000))) for r in requests
                  ) == sorted((g["symbol"], iso_ms(g["event_time"])) for g in medium)
    for name in ("clean", "gaps", "corrupt_periods", "recovery_requests", "error_counts", "alerts"):
        schema = pq.read_schema(next((tmp_path / "out" / name).glob("*.parquet")))
        times = [f for f in schema if pa.types.is_timestamp(f.type)]
        assert times and all(f.type == pa.timestamp("ms", tz="UTC") for f in times), name


def _snapshot_of(out):
    clean = sorted(out.parquet_rows("clean"),
                   key=lambda r: (r["market"], r["symbol"], r["last_id"], r["kind"], r["first_id"]))
    return {"clean": clean,
            "gaps": sorted(out.parquet_rows("gaps"), key=_gap_key),
            "corrupt": sorted(out.parquet_rows("corrupt_periods"),
                              key=lambda r: (r["market"], r["symbol"], r["start_id"])),
            "summary": totals(out.summary())}


@pytest.fixture(scope="module")
def reference_run(faulty_feed, tmp_path_factory):
    from tests.conftest import Outputs

    lines, _ = faulty_feed
    folder = tmp_path_factory.mktemp("reference")
    write_lines(str(folder / "feed.jsonl"), lines)
    # small runs so that one key spans many sorted runs
    assert _run([str(folder / "feed.jsonl")], folder / "out", "--run_span_ids=5000") == 0
    return _snapshot_of(Outputs(folder / "out"))


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), files=st.integers(1, 4), gz=st.booleans())
def test_shuffled_or_split_input_changes_nothing(faulty_feed, reference_run, tmp_path, outputs,
                                                 seed, files, gz):
    lines, _ = faulty_feed
    shuffled = list(lines)
    random.Random(seed).shuffle(shuffled)
    folder = tmp_path / f"run{seed}-{files}-{gz}"
    paths = []
    for index in range(files):
        path = str(folder / f"part{index}.jsonl{'.gz' if gz else ''}")
        write_lines(path, shuffled[index::files])
        paths.append(path)
    assert _run(paths, folder / "out", "--run_span_ids=5000") == 0
    assert _snapshot_of(outputs(folder / "out")) == reference_run


def test_cli_errors_are_one_line_and_nonzero(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "nothing*.jsonl"), "--output", str(tmp_path / "o")]) == 2
    assert "no input file matches" in capsys.readouterr().err
    feed = tmp_path / "feed.jsonl"
    feed.write_text("")
    assert main(["--input", str(feed), "--output", "/proc/forbidden/out"]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err
    assert main(["--input", str(feed), "--output", str(tmp_path / "o"), "--input_format",
                 "csv"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_help_lists_every_option(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--input", "--input_format", "--output", "--max_record_bytes", "--small_gap_max",
                   "--medium_gap_max", "--recovery_timeout", "--max_buffered_events",
                   "--reorder_timeout", "--stall_timeout", "--error_window", "--runner",
                   "--max_bad_file_rate", "--skip_files"):
        assert option in text


def test_bad_record_rate_limit_fails_the_job(tmp_path, capsys):
    lines, _ = generate(300, seed=3, bad_records=BAD_RECORDS * 10)   # 90 of ~395 records are bad
    write_lines(str(tmp_path / "feed.jsonl"), lines)
    args = ["--input", str(tmp_path / "feed.jsonl"), "--output"]
    assert main(args + [str(tmp_path / "a"), "--max_bad_record_rate", "0.5"]) == 0
    assert main(args + [str(tmp_path / "b"), "--max_bad_record_rate", "0.1"]) == 3
    assert "exceeds --max_bad_record_rate=10.00%" in capsys.readouterr().err
