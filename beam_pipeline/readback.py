"""Read a run's outputs back, each row once.

The file sinks are at-least-once after a restore: when a streaming job on Flink fails and is
restored from a checkpoint, every file its sinks wrote between that checkpoint and the failure is
written again under a new unique name (tests/test_flink_recovery.py shows it). Readers therefore
deduplicate by each output's id, which is unique in a run without a restore:

  clean/              exchange, market, symbol, kind, first_id, last_id
  gaps/               exchange, market, symbol, last_good_id, next_first_id
  corrupt_periods/    exchange, market, symbol, start_id, end_id, reason
  dead_letter/        reason, stage, source, payload
  recovery_requests/  exchange, market, symbol, from_id, reason
  error_counts/       exchange, market, symbol, error_type, window_start, pane
  alerts/             exchange, market, symbol, error_type, rule, window_start, level
  undelivered/        topic, payload
  status/             exchange, market, symbol, as_of    (read_status: the latest row per key)

Of rows with the same id the first written is kept (files in write order, transforms/layout.py:
flat files, then the date partitions by date, each by name; streaming names start with the write
time). Both layouts are read: a batch run's flat folders and a streaming job's date partitions
(<folder>/date=YYYY-MM-DD/), compacted or not (python -m beam_pipeline compact keeps the first
written of each id, by these keys). summary.json needs no deduplication: it is computed from Beam state, which a
restore rolls back exactly, and rewritten whole. An error count's pane and an alert's level are part
of their ids: streaming fires a window more than once (the highest pane is its newest count) and an
alert again when its level rises.

Every folder but dead_letter/ is Parquet with a fixed schema (transforms/tables.py), readable by
any Parquet reader even when empty. dead_letter/ is Avro; `records_table` turns its records into
an Arrow table (fastavro to Arrow) for DuckDB or Polars:

    import duckdb, polars
    letters = read("out", "dead_letter")              # pyarrow.Table
    duckdb.sql("SELECT reason, count(*) FROM letters GROUP BY reason")
    polars.from_arrow(letters)

    from beam_pipeline.readback import read_clean
    table = read_clean("out/live")                  # pyarrow.Table, one row per id

    python -m beam_pipeline.readback out/live                  # rows and unique ids per folder
    python -m beam_pipeline.readback out/live --write out/dedup  # a deduplicated copy

Any Beam filesystem works (local paths, gs://...).
"""
from __future__ import annotations

import argparse
import io
import json
import sys

import fastavro
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms import layout
from transforms.tags import ALL_FOLDER_SUFFIX

KEYS = {
    "clean": ("exchange", "market", "symbol", "kind", "first_id", "last_id"),
    "gaps": ("exchange", "market", "symbol", "last_good_id", "next_first_id"),
    "corrupt_periods": ("exchange", "market", "symbol", "start_id", "end_id", "reason"),
    "dead_letter": ("reason", "stage", "source", "payload"),
    "recovery_requests": ("exchange", "market", "symbol", "from_id", "reason"),
    "error_counts": ("exchange", "market", "symbol", "error_type", "window_start", "pane"),
    "alerts": ("exchange", "market", "symbol", "error_type", "rule", "window_start", "level"),
    "undelivered": ("topic", "payload"),
    "status": ("exchange", "market", "symbol", "as_of"),
}
_SUFFIX = ALL_FOLDER_SUFFIX


def _files(output_dir: str, name: str) -> list[str]:
    """The folder's files in write order, flat or date-partitioned (transforms/layout.py)."""
    return layout.data_files(f"{output_dir.rstrip('/')}/{name}", _SUFFIX[name])


def read_bytes(path: str) -> bytes:
    """A file's bytes, on any Beam filesystem."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        return handle.read()


def parquet_schema(name: str):
    """The Arrow schema of a Parquet folder (every folder but dead_letter), else None."""
    from transforms import sinks

    return sinks.PARQUET_SCHEMAS.get(name)


def read_raw(output_dir: str, name: str) -> pa.Table:
    """Every row of one output folder as written, duplicates included (files in write order)."""
    return read_files(name, _files(output_dir, name))


def read_files(name: str, paths) -> pa.Table:
    """Every row of these files of output folder `name`, in order, duplicates included."""
    schema = parquet_schema(name)
    if schema is not None:
        tables = [pq.read_table(io.BytesIO(read_bytes(path))) for path in paths]
        # promote: files an older version wrote lack the columns added since (null there)
        return pa.concat_tables(tables, promote_options="default") if tables else \
            schema.empty_table()
    rows = []
    for path in paths:
        rows.extend(records(name, read_bytes(path)))
    return records_table(rows)


def records(name: str, data: bytes) -> list:
    """The records of one Avro file's bytes (dead_letter), as dicts."""
    if name != "dead_letter":
        raise ValueError(f"{name}/ is Parquet: read it with read_files")
    return list(fastavro.reader(io.BytesIO(data)))


def records_table(rows: list) -> pa.Table:
    """Dead-letter records (dicts, as fastavro reads them) as an Arrow table of
    transforms/tables.py's DEAD_LETTER_ARROW_SCHEMA: the same columns with no record, too.
    Avro's timestamp-millis arrive as UTC datetimes and stay timestamp[ms, UTC]."""
    from transforms.tables import DEAD_LETTER_ARROW_SCHEMA

    names = DEAD_LETTER_ARROW_SCHEMA.names
    return pa.Table.from_pylist([{name: row.get(name) for name in names} for row in rows],
                                schema=DEAD_LETTER_ARROW_SCHEMA)


_ROW = "__row"


def first_of_each(table: pa.Table, keys) -> pa.Array:
    """Indices of the first row of each distinct `keys` value, in row order (Arrow group_by: no
    Python per row)."""
    numbered = table.select(list(keys)).append_column(
        _ROW, pa.array(range(table.num_rows), pa.int64()))
    first = numbered.group_by(list(keys), use_threads=False).aggregate([(_ROW, "min")])
    rows = first[f"{_ROW}_min"]
    return pc.take(rows, pc.sort_indices(rows))


def dedupe(table: pa.Table, keys) -> pa.Table:
    """The first row of each id (`keys`), sorted by id."""
    if table.num_rows == 0:
        return table
    unique = table.take(first_of_each(table, keys))
    return unique.sort_by([(k, "ascending") for k in keys if k != "payload"])


def _groupable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A column Arrow can group by: price levels (list<struct<price, qty>>) become one text per
    row ("price:qty;price:qty"), built from the buffers; other types are kept."""
    if not pa.types.is_list(column.type):
        return column
    chunks = []
    for chunk in column.chunks:
        levels = chunk.values
        texts = pc.binary_join_element_wise(levels.field("price"), levels.field("qty"), ":")
        rows = pa.ListArray.from_arrays(chunk.offsets, texts, mask=chunk.is_null())
        chunks.append(pc.binary_join(rows, ";"))
    return pa.chunked_array(chunks, pa.string())


def read(output_dir: str, name: str) -> pa.Table:
    """One output folder (a KEYS name), each id once."""
    return dedupe(read_raw(output_dir, name), KEYS[name])


def read_status(output_dir: str) -> pa.Table:
    """status/: the latest row (largest as_of) of each (exchange, market, symbol), sorted by key:
    where every key stands now ("what is broken right now" is a filter on it)."""
    table = read_raw(output_dir, "status")
    if table.num_rows == 0:
        return table
    newest_first = table.take(pc.sort_indices(table, [("as_of", "descending")]))
    latest = newest_first.take(first_of_each(newest_first, ["exchange", "market", "symbol"]))
    return latest.sort_by([(k, "ascending") for k in ("exchange", "market", "symbol")])


def read_clean(output_dir: str) -> pa.Table:
    """clean/ with each (exchange, market, symbol, kind, first_id, last_id) once, sorted by it."""
    return read(output_dir, "clean")


VOLATILE = {"ingest_time", "message"}     # when a dead letter was made, its stack trace


def report(output_dir: str) -> dict:
    """Per folder: rows written, unique ids, and ids written more than once with different
    contents ("conflicting"; 0 expected: a restored job recomputes the same rows)."""
    out = {}
    for name, keys in KEYS.items():
        raw = read_raw(output_dir, name)
        if raw.num_rows == 0:
            out[name] = {"rows": 0, "unique": 0, "conflicting": 0}
            continue
        body = [c for c in raw.column_names if c not in VOLATILE and c not in keys]
        comparable = pa.table({c: _groupable(raw[c]) for c in (*keys, *body)})
        distinct = comparable.group_by([*keys, *body], use_threads=False).aggregate([])
        per_key = distinct.group_by(list(keys), use_threads=False).aggregate([([], "count_all")])
        conflicting = pc.sum(pc.greater(per_key["count_all"], 1).cast(pa.int64())).as_py() or 0
        out[name] = {"rows": raw.num_rows, "unique": per_key.num_rows, "conflicting": conflicting}
    return out


def write_deduplicated(output_dir: str, destination: str) -> dict:
    """Writes each folder of `output_dir`, each id once, as one file under `destination` (same
    layout and formats, so every reader of the outputs reads it too). Returns rows per folder."""
    from apache_beam.io.filesystems import FileSystems

    from transforms import sinks

    written = {}
    for name in KEYS:
        table = read(output_dir, name)
        written[name] = table.num_rows
        if table.num_rows == 0:
            continue
        path = f"{destination.rstrip('/')}/{name}/part-00000-of-00001{_SUFFIX[name]}"
        buffer = io.BytesIO()
        if parquet_schema(name) is not None:
            pq.write_table(table.cast(parquet_schema(name)), buffer, compression="zstd")
        else:
            fastavro.writer(buffer, sinks.DEAD_LETTER_SCHEMA, table.to_pylist(), codec="deflate")
        with FileSystems.create(path) as handle:
            handle.write(buffer.getvalue())
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipeline.readback",
        description="Report (or write) a run's outputs with each row once: the file sinks are "
                    "at-least-once after a restore on Flink.")
    parser.add_argument("output", help="the run's --output folder")
    parser.add_argument("--write", metavar="DIR",
                        help="write a deduplicated copy of every output folder under DIR")
    args = parser.parse_args(argv)
    result = {"folders": report(args.output)}
    if args.write:
        result["written"] = write_deduplicated(args.output, args.write)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
