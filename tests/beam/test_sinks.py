"""Tests of transforms/sinks.py: WriteOutputs and WriteFolder in batch write files a user can read
(Parquet with pyarrow, Avro with fastavro and schemas/dead_letter.avsc, summary.json)."""
import glob
import json
import os
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipeline.core.model import (DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT, CorruptPeriod,
                                 DeadLetter, Event, Gap, KeyStatus, RecoveryRequest, decode_levels,
                                 encode_levels)
from beam_pipeline.options import FeedCheckOptions
from transforms.sinks import CLEAN_SCHEMA, SCHEMA_DIR, ParquetSink, WriteFolder, WriteOutputs
from transforms.tables import clean_table, write_clean_part

T = 1_700_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

TIME = pa.timestamp("ms", tz="UTC")
LEVELS = pa.list_(pa.struct([("price", pa.string()), ("qty", pa.string())]))
KEY = [("exchange", pa.string()), ("market", pa.string()), ("symbol", pa.string())]
EXPECTED_SCHEMAS = {
    "clean": pa.schema(KEY + [
        ("kind", pa.string()), ("first_id", pa.int64()), ("last_id", pa.int64()),
        ("prev_id", pa.int64()), ("event_time", TIME), ("recv_time", TIME), ("bids", LEVELS),
        ("asks", LEVELS), ("segment_id", pa.int64()), ("anchored", pa.bool_())]),
    "gaps": pa.schema(KEY + [
        ("last_good_id", pa.int64()), ("next_first_id", pa.int64()), ("gap_size", pa.int64()),
        ("gap_class", pa.string()), ("action", pa.string()), ("resolution", pa.string()),
        ("event_time", TIME), ("cause", pa.string())]),
    "corrupt_periods": pa.schema(KEY + [
        ("start_id", pa.int64()), ("end_id", pa.int64()), ("start_time", TIME), ("end_time", TIME),
        ("reason", pa.string()), ("detail", pa.string())]),
    "recovery_requests": pa.schema(KEY + [
        ("from_id", pa.int64()), ("reason", pa.string()), ("event_time", TIME)]),
    "error_counts": pa.schema(KEY + [
        ("error_type", pa.string()), ("window_start", TIME), ("window_end", TIME),
        ("count", pa.int64()), ("pane", pa.int64())]),
    "alerts": pa.schema(KEY + [
        ("error_type", pa.string()), ("level", pa.string()), ("rule", pa.string()),
        ("window_start", TIME), ("window_end", TIME), ("count", pa.int64()),
        ("message", pa.string()), ("suggested_action", pa.string())]),
    "status": pa.schema(KEY + [
        ("as_of", TIME), ("last_id", pa.int64()), ("last_event_time", TIME),
        ("segment_id", pa.int64()), ("anchored", pa.bool_()), ("held_events", pa.int64()),
        ("hold_reason", pa.string()), ("open_gap_last_good_id", pa.int64()),
        ("open_gap_next_first_id", pa.int64()), ("open_gap_size", pa.int64()),
        ("disconnected", pa.bool_()), ("book_checked_messages", pa.int64()),
        ("checksum_verified_messages", pa.int64()), ("book_checks_failed", pa.int64()),
        ("open_corrupt_reason", pa.string()), ("open_corrupt_start_id", pa.int64()),
        ("open_corrupt_start_time", TIME)]),
}


def ms(value):
    return None if value is None else EPOCH + timedelta(milliseconds=value)


SPOT = Event("binance", "spot", "BTCUSDT", DELTA, 101, 105, None, T, T + 7,
             encode_levels([("65000.10", "0.00100000"), ("64999.00", "0")]), b"[]", RANGE_PLUS_ONE, "f:2")
USDM = Event("binance", "usdm", "SOLUSDT", DELTA, 201, 204, 200, T + 100, T + 103, b"[]",
             encode_levels([("20.5", "3")]), PREVIOUS_LINK, "f:3")
SNAP = Event("binance", "spot", "BTCUSDT", SNAPSHOT, 100, 100, None, None, T - 5,
             encode_levels([("65000.00", "1.5")]), encode_levels([("65000.20", "2")]),
             RANGE_PLUS_ONE, "h:1")
CLEAN = [[(SNAP, 0, True), (SPOT, 0, True)], [(USDM, 3, False)]]
LETTERS = [DeadLetter("bad_json", "Input data was truncated", "decode", b'{"e":"depthUp\xff',
                      "/in/feed.jsonl:7", T + 1),
           DeadLetter("late", "too late", "sequence", b"", "/in/feed.jsonl:9", T + 2,
                      symbol="binance:spot:BTCUSDT", first_id=3, last_id=4)]
GAPS = [Gap("binance", "spot", "BTCUSDT", 105, 111, 5, "small", "continue_with_warning",
            "continued", T + 200),
        Gap("binance", "usdm", "SOLUSDT", None, 300, None, "medium", "hold_for_snapshot",
            "resynced", T + 300)]
CORRUPT = [CorruptPeriod("binance", "spot", "BTCUSDT", 106, 5000, None, T + 400, "large_gap")]
RECOVERY = [RecoveryRequest("binance", "usdm", "SOLUSDT", 205, "medium_gap", T + 300)]
W_START, W_END = "2023-11-14T22:13:00.000Z", "2023-11-14T22:14:00.000Z"
W_MS = 1_699_999_980_000             # W_START in ms
COUNTS = [{"exchange": "binance", "market": "spot", "symbol": "BTCUSDT", "error_type": "gap_small",
           "window_start": W_START, "window_end": W_END, "count": 1, "pane": 0},
          {"exchange": None, "market": None, "symbol": None, "error_type": "dead_letter:bad_json",
           "window_start": W_START, "window_end": W_END, "count": 2, "pane": 0}]
ALERTS = [{"exchange": "binance", "market": "spot", "symbol": "BTCUSDT", "error_type": "stall",
           "level": "critical", "rule": "stall", "window_start": W_START, "window_end": W_END,
           "count": 1, "message": "silent", "suggested_action": "Check the collector."}]
STATUS = [KeyStatus("binance", "usdm", "SOLUSDT", T + 500, 204, T + 100, 201, False, 2, "gap",
                    204, 207, 2, False, 9, 8, 1, "checksum_mismatch", 203, T + 90)]
SUMMARY = {"input_records": 9, "clean_records": 3, "ignored": 1, "duplicates": 0,
           "superseded": 0, "dead_letters": {"bad_json": 1, "late": 1},
           "gaps": {"small": 1, "medium": 1, "large": 0}, "corrupt_periods": 1, "symbols": 2,
           "balanced": False}


def files(folder, suffix):
    found = sorted(glob.glob(os.path.join(folder, f"*{suffix}")))
    assert found, f"no {suffix} file in {folder}"
    return found


def parquet(folder):
    paths = files(folder, ".parquet")
    tables = [pq.read_table(path) for path in paths]
    return tables[0].schema, [row for table in tables for row in table.to_pylist()]


def clean_dict(event, segment, anchored):
    return {"exchange": event.exchange, "market": event.market, "symbol": event.symbol,
            "kind": event.kind, "first_id": event.first_id, "last_id": event.last_id,
            "prev_id": event.prev_id, "event_time": ms(event.event_time),
            "recv_time": ms(event.recv_time),
            "bids": [{"price": p, "qty": q} for p, q in decode_levels(event.bids)],
            "asks": [{"price": p, "qty": q} for p, q in decode_levels(event.asks)],
            "segment_id": segment, "anchored": anchored}


def test_write_outputs_batch(tmp_path):
    out = str(tmp_path / "out")
    options = FeedCheckOptions(["--output", out + "/"])
    # batch clean rows arrive as CleanParts the sequencer wrote to the work folder
    clean_parts = [write_clean_part(clean_table(rows), str(tmp_path / "work" / f"k-{i:06d}.parquet"),
                                    "binance:spot:BTCUSDT") for i, rows in enumerate(CLEAN)]
    with TestPipeline() as p:
        parts = {name: p | f"Create_{name}" >> beam.Create(values) for name, values in (
            ("clean", clean_parts), ("dead_letter", LETTERS), ("gaps", GAPS),
            ("corrupt_periods", CORRUPT), ("recovery_requests", RECOVERY),
            ("error_counts", COUNTS), ("alerts", ALERTS), ("status", STATUS),
            ("summary", [SUMMARY]))}
        parts | WriteOutputs(options, streaming=False)

    assert sorted(os.listdir(out)) == ["alerts", "clean", "corrupt_periods", "dead_letter",
                                       "error_counts", "gaps", "recovery_requests", "status",
                                       "summary.json"]

    schema, rows = parquet(os.path.join(out, "clean"))
    assert schema.equals(EXPECTED_SCHEMAS["clean"])
    assert sorted(rows, key=lambda r: (r["symbol"], r["first_id"])) == [
        clean_dict(SNAP, 0, True), clean_dict(SPOT, 0, True), clean_dict(USDM, 3, False)]

    schema, rows = parquet(os.path.join(out, "gaps"))
    assert schema.equals(EXPECTED_SCHEMAS["gaps"])
    assert sorted(rows, key=lambda r: r["next_first_id"]) == [
        {"exchange": "binance", "market": "spot", "symbol": "BTCUSDT", "last_good_id": 105,
         "next_first_id": 111, "gap_size": 5, "gap_class": "small",
         "action": "continue_with_warning", "resolution": "continued", "event_time": ms(T + 200),
             "cause": None},
        {"exchange": "binance", "market": "usdm", "symbol": "SOLUSDT", "last_good_id": None,
         "next_first_id": 300, "gap_size": None, "gap_class": "medium",
         "action": "hold_for_snapshot", "resolution": "resynced", "event_time": ms(T + 300),
             "cause": None}]

    schema, rows = parquet(os.path.join(out, "corrupt_periods"))
    assert schema.equals(EXPECTED_SCHEMAS["corrupt_periods"])
    assert rows == [{"exchange": "binance", "market": "spot", "symbol": "BTCUSDT",
                     "start_id": 106, "end_id": 5000, "start_time": None,
                     "end_time": ms(T + 400), "reason": "large_gap", "detail": None}]

    with open(os.path.join(SCHEMA_DIR, "dead_letter.avsc")) as handle:  # the shipped schema file
        avsc = fastavro.parse_schema(json.load(handle))
    letters = []
    for path in files(os.path.join(out, "dead_letter"), ".avro"):
        with open(path, "rb") as handle:
            reader = fastavro.reader(handle, reader_schema=avsc)
            assert [f["name"] for f in reader.writer_schema["fields"]] == [
                "reason", "message", "stage", "payload", "source", "ingest_time", "exchange",
                "market", "symbol", "first_id", "last_id", "event_time"]
            letters.extend(reader)
    assert sorted(letters, key=lambda r: r["source"]) == [
        {"reason": "bad_json", "message": "Input data was truncated", "stage": "decode",
         "payload": b'{"e":"depthUp\xff', "source": "/in/feed.jsonl:7", "ingest_time": ms(T + 1),
         "exchange": None, "market": None, "symbol": None, "first_id": None, "last_id": None,
         "event_time": None},
        {"reason": "late", "message": "too late", "stage": "sequence", "payload": b"",
         "source": "/in/feed.jsonl:9", "ingest_time": ms(T + 2), "exchange": "binance",
         "market": "spot", "symbol": "BTCUSDT", "first_id": 3, "last_id": 4, "event_time": None}]

    # the JSON-shaped rows as Parquet: their schema, times as timestamps, the key split, nulls
    schema, rows = parquet(os.path.join(out, "recovery_requests"))
    assert schema.equals(EXPECTED_SCHEMAS["recovery_requests"])
    assert rows == [{"exchange": "binance", "market": "usdm", "symbol": "SOLUSDT", "from_id": 205,
                     "reason": "medium_gap", "event_time": ms(T + 300)}]
    timed = {"window_start": ms(W_MS), "window_end": ms(W_MS + 60_000)}
    schema, rows = parquet(os.path.join(out, "error_counts"))
    assert schema.equals(EXPECTED_SCHEMAS["error_counts"])
    assert sorted(rows, key=lambda r: r["count"]) == [dict(row, **timed) for row in COUNTS]
    schema, rows = parquet(os.path.join(out, "alerts"))
    assert schema.equals(EXPECTED_SCHEMAS["alerts"])
    assert rows == [dict(row, **timed) for row in ALERTS]
    schema, rows = parquet(os.path.join(out, "status"))
    assert schema.equals(EXPECTED_SCHEMAS["status"])
    assert rows == [{"exchange": "binance", "market": "usdm", "symbol": "SOLUSDT",
                     "as_of": ms(T + 500), "last_id": 204, "last_event_time": ms(T + 100),
                     "segment_id": 201, "anchored": False, "held_events": 2, "hold_reason": "gap",
                     "open_gap_last_good_id": 204, "open_gap_next_first_id": 207,
                     "open_gap_size": 2, "disconnected": False, "book_checked_messages": 9,
                     "checksum_verified_messages": 8, "book_checks_failed": 1,
                     "open_corrupt_reason": "checksum_mismatch", "open_corrupt_start_id": 203,
                     "open_corrupt_start_time": ms(T + 90)}]
    with open(os.path.join(out, "summary.json")) as handle:
        assert json.load(handle) == SUMMARY


def test_write_folder_parquet_row_groups(tmp_path):
    """Tables of any size are accepted; a row group is written once the buffer holds
    row_group_rows rows (so at most row_group_rows - 1 + the longest table), none is lost."""
    rows = [(Event("binance", "spot", "ETHUSDT", DELTA, i, i, None, T + i, T + i, b"[]", b"[]",
                   RANGE_PLUS_ONE), 0, True) for i in range(10)]
    folder = str(tmp_path / "clean")
    with TestPipeline() as p:
        (p | beam.Create([clean_table(part) for part in (rows[:4], [rows[4]], rows[5:9], [rows[9]])])
         | WriteFolder(folder, lambda _: ParquetSink(CLEAN_SCHEMA, row_group_rows=3),
                       ".parquet", False, 60))
    paths = files(folder, ".parquet")
    sizes = [pq.ParquetFile(path).metadata.row_group(i).num_rows
             for path in paths for i in range(pq.ParquetFile(path).metadata.num_row_groups)]
    assert sum(sizes) == 10 and max(sizes) <= 3 - 1 + 4 and len(sizes) >= 2
    _, read = parquet(folder)
    assert sorted(r["first_id"] for r in read) == list(range(10))
    assert {r["event_time"] for r in read} == {ms(T + i) for i in range(10)}


def test_clean_parts_are_few_and_large(tmp_path):
    """The batch sequencer's part writer: whole row groups, parts closed at part_rows."""
    from beam_pipeline.core.model import Event
    from transforms.tables import CleanPartWriter, clean_table

    def run_of(start, count):   # one replayed run's clean rows (tiny, as USD-M runs are)
        return clean_table([(Event("binance", "usdm", "X", "delta", i, i, i - 1, 1_700_000_000_000 + i,
                                   None, b"[]", b"[]", "previous_link"), 0, False)
                            for i in range(start, start + count)])

    writer = CleanPartWriter(str(tmp_path), "binance-usdm-X", "binance:usdm:X",
                             row_group_rows=10, part_rows=30)
    closed = [writer.add(run_of(i * 3, 3)) for i in range(25)]          # 75 rows in runs of 3
    parts = [p for p in closed if p is not None] + [writer.finish()]
    assert [p.rows for p in parts] == [30, 30, 15]
    assert [os.path.basename(p.path) for p in parts] == [
        "binance-usdm-X-000001.parquet", "binance-usdm-X-000002.parquet",
        "binance-usdm-X-000003.parquet"]
    groups = [[pq.ParquetFile(p.path).metadata.row_group(g).num_rows
               for g in range(pq.ParquetFile(p.path).metadata.num_row_groups)] for p in parts]
    assert groups == [[10, 10, 10], [10, 10, 10], [10, 5]]
    ids = [i for p in parts for i in pq.read_table(p.path)["first_id"].to_pylist()]
    assert ids == list(range(75))                                       # every row once, in order
    times = [np.frombuffer(p.times, np.int64).tolist() for p in parts]
    assert sum(times, []) == [1_700_000_000_000 + i for i in range(75)]
    assert writer.finish() is None                                      # nothing left open


def test_streaming_writes_one_file_per_folder_per_firing_whatever_the_keys_and_bundles(tmp_path):
    """40 keys, each a bundle of its own (as the stateful sequencer emits them), in each of two
    firings: the processing-time flush (the default --output_flush_seconds) and the end of the
    input (the watermark to +infinity, as a bounded input or a drain ends): each folder gets ONE
    file per firing that has rows, in the flush's date partition, and every row is written."""
    from beam_pipeline import readback
    from tests.tooling.flushes import CLEAN_ROWS_PER_KEY, write_flushes
    from transforms import layout
    from transforms.sinks import OUTPUT_FOLDERS
    from transforms.tags import FOLDER_SUFFIX

    out, keys = tmp_path / "live", 40
    expected = write_flushes(str(out), keys, 2, corrupt_in={0})   # no corrupt period in firing 2

    for name in OUTPUT_FOLDERS:
        folder = out / name
        files = layout.data_files(str(folder), FOLDER_SUFFIX[name])
        assert len(files) == (1 if name == "corrupt_periods" else 2), (name, files)
        for path in files:
            partition, file_name = os.path.relpath(path, folder).split(os.sep)
            stamp = file_name.split("-")[1]            # part-<YYYYMMDDTHHMMSSmmm>-<tag>
            assert partition == f"date={stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}", path
        hidden = [p for p in folder.rglob("*") if p.name.startswith((".", "_"))]
        assert hidden == [], hidden                    # no file left in progress
        assert readback.read_raw(str(out), name).num_rows == expected[name], name
    assert len(readback.read(str(out), "clean")) == expected["clean"] == 2 * keys * CLEAN_ROWS_PER_KEY
    # a folder of date partitions reads as one dataset (pyarrow adds the partition column)
    gaps = pq.read_table(out / "gaps")
    assert gaps.num_rows == expected["gaps"] and "date" in gaps.column_names


def test_a_bounded_streaming_run_writes_every_row_when_its_input_ends(tmp_path):
    """`--streaming --input FILE` with the default flush (60 s): the input ends long before a flush
    is due, so everything is written by the end-of-input firing, one file per folder, including
    the rows the sequencer's end-of-stream timer emits (held deltas, the gaps and corrupt periods it
    closes); on disk exactly what the summary counts, and the run does not wait for the flush."""
    import time

    from beam_pipeline import readback
    from beam_pipeline.cli import main
    from tests.tooling.synthetic import BAD_RECORDS, default_faults, generate, write_lines
    from transforms import layout
    from transforms.sinks import OUTPUT_FOLDERS
    from transforms.tags import FOLDER_SUFFIX

    lines, expected = generate(12_000, seed=3, faults=default_faults(), bad_records=BAD_RECORDS)
    write_lines(str(tmp_path / "feed.jsonl"), lines)
    out = str(tmp_path / "out")
    started = time.monotonic()
    assert main(["--streaming", "--input", str(tmp_path / "feed.jsonl"), "--output", out]) == 0
    took = time.monotonic() - started
    assert took < FeedCheckOptions.defaults().output_flush_seconds, took

    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["balanced"] and summary["input_records"] == len(lines)
    on_disk = {name: readback.read_raw(out, name).num_rows
               for name in ("clean", "gaps", "corrupt_periods", "dead_letter")}
    assert on_disk == {"clean": summary["clean_records"], "gaps": sum(summary["gaps"].values()),
                       "corrupt_periods": summary["corrupt_periods"],
                       "dead_letter": sum(summary["dead_letters"].values())}
    assert on_disk["gaps"] == len(expected.gaps) > 0 and on_disk["corrupt_periods"] > 0
    for name in ("clean", "gaps", "corrupt_periods"):   # each folder reads as one dataset
        assert pq.read_table(os.path.join(out, name)).num_rows == on_disk[name], name
    for name in OUTPUT_FOLDERS:
        suffix = FOLDER_SUFFIX[name]
        written = [p for p in layout.data_files(os.path.join(out, name), suffix)
                   if os.path.basename(p) != layout.empty_file_name(suffix)]
        assert len(written) <= 1, (name, written)
