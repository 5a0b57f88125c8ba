"""Every output folder reads as a table with its schema in DuckDB, pyarrow and Polars, on a run
with no rows and on a faulted run; every output with a symbol has the exchange, market and symbol
columns of clean/ (null where a record yielded none), so they join."""
from __future__ import annotations

import collections

import duckdb
import polars
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline import readback
from beam_pipeline.cli import main
from tests.tooling.synthetic import BAD_RECORDS, default_faults, generate, write_lines
from transforms.sinks import PARQUET_SCHEMAS
from transforms.tables import DEAD_LETTER_ARROW_SCHEMA

KEY = ["exchange", "market", "symbol"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(a run of an empty input, --allow_empty; a faulted synthetic feed's run)."""
    folder = tmp_path_factory.mktemp("tables")
    (folder / "empty.jsonl").write_bytes(b"")
    empty = folder / "empty"
    assert main(["--input", str(folder / "empty.jsonl"), "--output", str(empty),
                 "--allow_empty"]) == 0
    lines, _ = generate(12_000, seed=11, faults=default_faults(), bad_records=BAD_RECORDS)
    write_lines(str(folder / "feed.jsonl.gz"), lines)
    faulted = folder / "faulted"
    assert main(["--input", str(folder / "feed.jsonl.gz"), "--output", str(faulted),
                 "--alert_warning_count", "0"]) == 0      # alerts on any error: rows to join
    return empty, faulted


def _glob(out, name) -> str:
    return f"{out}/{name}/**/*.parquet"


@pytest.mark.parametrize("which", ["empty", "faulted"])
def test_every_parquet_folder_reads_with_its_schema_in_duckdb_pyarrow_and_polars(runs, which):
    out = runs[0] if which == "empty" else runs[1]
    for name, schema in PARQUET_SCHEMAS.items():
        table = pq.read_table(out / name)                       # the folder, as a dataset
        assert table.schema.equals(schema), name
        rows = table.num_rows
        assert (rows == 0) == (which == "empty" or name == "undelivered"), (name, rows)
        described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{_glob(out, name)}')")
        assert [row[0] for row in described.fetchall()] == schema.names, name
        assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{_glob(out, name)}')"
                          ).fetchall() == [(rows,)], name
        frame = polars.read_parquet(_glob(out, name))
        assert frame.columns == schema.names and frame.height == rows, name


@pytest.mark.parametrize("which", ["empty", "faulted"])
def test_dead_letters_go_from_avro_to_arrow_for_duckdb_and_polars(runs, which):
    """dead_letter/ is Avro (pyarrow has no Avro reader, DuckDB's Avro extension is not
    installable here): readback turns fastavro's records into Arrow, with the same schema when
    there is no record."""
    out = runs[0] if which == "empty" else runs[1]
    letters = readback.read_raw(str(out), "dead_letter")
    assert letters.schema.equals(DEAD_LETTER_ARROW_SCHEMA)
    summary_count = 0 if which == "empty" else len(readback.read(str(out), "dead_letter"))
    by_reason = duckdb.sql("SELECT reason, count(*) FROM letters GROUP BY reason").fetchall()
    assert sum(n for _, n in by_reason) == letters.num_rows >= summary_count
    frame = polars.from_arrow(letters)
    assert frame.columns == DEAD_LETTER_ARROW_SCHEMA.names and frame.height == letters.num_rows


def test_one_key_spelled_as_in_clean_in_every_output(runs):
    _, out = runs
    clean_keys = {tuple(row.values()) for row in pq.read_table(out / "clean", columns=KEY)
                  .to_pylist()}
    tables = {name: pq.read_table(out / name) for name in PARQUET_SCHEMAS}
    tables["dead_letter"] = readback.read_raw(str(out), "dead_letter")
    for name, table in tables.items():
        keys = {tuple(row.values()) for row in table.select(KEY).to_pylist()}
        for exchange, market, symbol in keys:
            assert symbol is None or (":" not in symbol and symbol != "-"), (name, symbol)
            assert exchange is None or ":" not in exchange, (name, exchange)
        if name in ("gaps", "corrupt_periods", "recovery_requests"):
            assert keys <= clean_keys, name
    # rejected records that yielded no symbol have null keys, never "-"
    letters = tables["dead_letter"].to_pylist()
    assert any(row["symbol"] is None for row in letters)
    assert any(row["symbol"] is not None for row in letters)
    counts = tables["error_counts"].to_pylist()
    assert any(row["symbol"] is None and row["error_type"].startswith("dead_letter:")
               for row in counts)
    alerts = tables["alerts"].to_pylist()
    assert alerts and all(row["error_type"] for row in alerts)
    assert {(a["exchange"], a["market"], a["symbol"], a["error_type"]) for a in alerts} <= \
        {(c["exchange"], c["market"], c["symbol"], c["error_type"]) for c in counts} | \
        {(a["exchange"], a["market"], a["symbol"], "gaps") for a in alerts if a["rule"] == "gap_rate"}


def test_dead_letters_gaps_and_alerts_join_on_the_key(runs):
    """One DuckDB query joins the three on (exchange, market, symbol); its counts per key equal
    the ones counted from each table alone."""
    _, out = runs
    letters = readback.read_raw(str(out), "dead_letter")   # noqa: F841 (DuckDB reads it by name)
    joined = duckdb.sql(f"""
        WITH g AS (SELECT exchange, market, symbol, count(*) AS gaps
                   FROM read_parquet('{_glob(out, "gaps")}') GROUP BY ALL),
             a AS (SELECT exchange, market, symbol, count(*) AS alerts
                   FROM read_parquet('{_glob(out, "alerts")}') GROUP BY ALL),
             d AS (SELECT exchange, market, symbol, count(*) AS dead FROM letters
                   WHERE symbol IS NOT NULL GROUP BY ALL)
        SELECT g.exchange, g.market, g.symbol, g.gaps, a.alerts, coalesce(d.dead, 0)
        FROM g JOIN a USING (exchange, market, symbol) LEFT JOIN d USING (exchange, market, symbol)
        ORDER BY ALL""").fetchall()
    per_key = collections.defaultdict(collections.Counter)
    for name in ("gaps", "alerts"):
        for row in pq.read_table(out / name, columns=KEY).to_pylist():
            per_key[tuple(row.values())][name] += 1
    for row in letters.select(KEY).to_pylist():
        if row["symbol"] is not None:
            per_key[tuple(row.values())]["dead"] += 1
    expected = sorted((*key, n["gaps"], n["alerts"], n["dead"]) for key, n in per_key.items()
                      if n["gaps"] and n["alerts"])
    assert joined == expected and joined
    assert any(dead for *_, dead in joined)      # a key with gaps, alerts and dead letters


def test_status_holds_where_each_key_stands_and_readback_gives_the_latest(runs, tmp_path):
    """A batch run writes one status row per key at the end: its last accepted id and time, its
    current segment and whether it is anchored, nothing held (the end closed every wait);
    readback.read_status gives the latest row of each key."""
    import shutil

    _, out = runs
    status = readback.read_status(str(out))
    clean = pq.read_table(out / "clean").to_pylist()
    keys = {(r["exchange"], r["market"], r["symbol"]) for r in clean}
    assert {(r["exchange"], r["market"], r["symbol"]) for r in status.to_pylist()} == keys
    for row in status.to_pylist():
        rows = [r for r in clean if (r["exchange"], r["market"], r["symbol"]) ==
                (row["exchange"], row["market"], row["symbol"])]
        assert row["last_id"] == max(r["last_id"] for r in rows)
        newest = max(rows, key=lambda r: (r["last_id"], r["kind"] == "delta"))
        assert (row["segment_id"], row["anchored"]) == (newest["segment_id"], newest["anchored"])
        assert row["held_events"] == 0 and row["hold_reason"] is None
    # a later snapshot of one key (as a streaming job appends per flush): readback takes it
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    later = pq.read_table(copy / "status").slice(0, 1).to_pylist()
    later[0].update(as_of=later[0]["as_of"].replace(year=2100), held_events=7, hold_reason="gap")
    pq.write_table(pa.Table.from_pylist(later, schema=PARQUET_SCHEMAS["status"]),
                   copy / "status" / "part-zz-later.parquet")
    latest = {(r["exchange"], r["market"], r["symbol"]): r
              for r in readback.read_status(str(copy)).to_pylist()}
    key = (later[0]["exchange"], later[0]["market"], later[0]["symbol"])
    assert latest[key]["held_events"] == 7 and len(latest) == len(keys)
    broken = duckdb.sql(f"SELECT symbol FROM read_parquet('{_glob(copy, 'status')}') "
                        "QUALIFY row_number() OVER (PARTITION BY exchange, market, symbol "
                        "ORDER BY as_of DESC) = 1 AND held_events > 0").fetchall()
    assert broken == [(key[2],)]
