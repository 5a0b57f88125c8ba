"""What a data engineer would run instead of the pipeline: the same check as one DuckDB query or
one Polars lazy plan, on the same file. Bench anchors, not product code (bench/requirements.txt).

Both do the core check the pipeline does, on the envelope feed the bench generates:

  read     every line as JSON (exchange, market, symbol, type, recv_ts_ms, payload)
  validate a delta or snapshot needs its ids, first <= last, and every price and quantity a
           plain decimal (`[0-9]+(\\.[0-9]+)?`); other types are ignored, bad records counted
  order    per (exchange, market, symbol) by last id (a snapshot after a delta of the same id)
  stale    a delta whose last id <= the highest last id before it (duplicate / covered)
  check    c = the last accepted id before it: spot `U <= c+1 <= u`, usdm `pu == c` (right after
           a snapshot also Binance's bridge `U <= c <= u`); no c yet = an unanchored start
  write    gap rows (key, from, to, event time) and clean rows (key, ids, times, levels) to Parquet

Without dead letters, resyncs' superseded rows, id resets or bounded memory: the answer a user
gets from one query. It prints one JSON object like bench/baseline.py.

    python -m bench.anchors duckdb FILE.jsonl.gz OUT_DIR [--threads 2]
    python -m bench.anchors polars FILE.jsonl.gz OUT_DIR [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DECIMAL = r"^[0-9]+(\.[0-9]+)?$"
ENGINES = ("duckdb", "polars")


# ---- DuckDB --------------------------------------------------------------------------------

_DUCKDB_COLUMNS = {
    "exchange": "VARCHAR", "market": "VARCHAR", "symbol": "VARCHAR", "type": "VARCHAR",
    "recv_ts_ms": "BIGINT",
    # DuckDB's struct fields are case-insensitive (Binance's `U` and `u`): the payload is read as
    # JSON and its fields extracted by path, once per line.
    "payload": "JSON",
}


def _levels_ok_sql(column: str) -> str:
    return (f"coalesce(list_bool_and(list_transform({column}, lambda x: len(x) = 2 "
            f"AND regexp_full_match(x[1], '[0-9]+(\\.[0-9]+)?') "
            f"AND regexp_full_match(x[2], '[0-9]+(\\.[0-9]+)?'))), true)")


def run_duckdb(path: str, out: Path, threads: int) -> dict:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in _DUCKDB_COLUMNS.items()) + "}"
    con.execute(f"""
        CREATE TEMP TABLE raw AS
        SELECT exchange, market, symbol, type, recv_ts_ms,
               TRY_CAST(CASE WHEN type = 'snapshot' THEN f[5] ELSE f[1] END AS BIGINT) AS first_id,
               TRY_CAST(CASE WHEN type = 'snapshot' THEN f[5] ELSE f[2] END AS BIGINT) AS last_id,
               TRY_CAST(f[3] AS BIGINT) AS prev_id, TRY_CAST(f[4] AS BIGINT) AS event_ms,
               TRY_CAST(coalesce(j[1], j[3]) AS VARCHAR[][]) AS bids,
               TRY_CAST(coalesce(j[2], j[4]) AS VARCHAR[][]) AS asks
        FROM (SELECT *, json_extract_string(payload, ['$.U', '$.u', '$.pu', '$.E',
                                                      '$.lastUpdateId']) AS f,
                        json_extract(payload, ['$.b', '$.a', '$.bids', '$.asks']) AS j
              FROM read_ndjson(?, columns = {columns}, format = 'newline_delimited', ignore_errors = true))
    """, [path])
    con.execute(f"""
        CREATE TEMP TABLE valid AS
        SELECT *, type = 'snapshot' AS is_snapshot FROM raw
        WHERE type IN ('delta', 'snapshot') AND first_id IS NOT NULL AND last_id IS NOT NULL
          AND first_id <= last_id AND bids IS NOT NULL AND asks IS NOT NULL
          AND {_levels_ok_sql('bids')} AND {_levels_ok_sql('asks')}
    """)
    con.execute("""
        CREATE TEMP TABLE ordered AS
        SELECT *, max(last_id) OVER (PARTITION BY exchange, market, symbol
                                     ORDER BY last_id, is_snapshot
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seen
        FROM valid
    """)
    con.execute("""
        CREATE TEMP TABLE accepted AS
        SELECT *, lag(last_id) OVER w AS c, lag(is_snapshot) OVER w AS after_snapshot
        FROM ordered
        WHERE is_snapshot OR seen IS NULL OR last_id > seen
        WINDOW w AS (PARTITION BY exchange, market, symbol ORDER BY last_id, is_snapshot)
    """)
    con.execute("""
        CREATE TEMP TABLE gaps AS
        SELECT exchange, market, symbol, c AS from_id, first_id AS to_id, event_ms, recv_ts_ms
        FROM accepted
        WHERE NOT is_snapshot AND c IS NOT NULL AND NOT (
              CASE WHEN prev_id IS NOT NULL
                   THEN prev_id = c OR (after_snapshot AND first_id <= c AND c <= last_id)
                   ELSE first_id <= c + 1 AND c + 1 <= last_id END)
    """)
    out.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY gaps TO '{out / 'gaps.parquet'}' (FORMAT parquet)")
    con.execute(f"""COPY (SELECT exchange, market, symbol, type, first_id, last_id, prev_id,
                                 event_ms, recv_ts_ms, bids, asks FROM accepted)
                    TO '{out / 'clean.parquet'}' (FORMAT parquet)""")
    counts = con.execute("""
        SELECT (SELECT count(*) FROM raw),
               (SELECT count(*) FROM raw WHERE type NOT IN ('delta', 'snapshot')),
               (SELECT count(*) FROM valid),
               (SELECT count(*) FROM accepted),
               (SELECT count(*) FROM gaps),
               (SELECT count(*) FROM accepted WHERE NOT is_snapshot AND c IS NULL),
               (SELECT count(DISTINCT (exchange, market, symbol)) FROM valid)
    """).fetchone()
    return _result(*counts)


# ---- Polars --------------------------------------------------------------------------------

def run_polars(path: str, out: Path, threads: int) -> dict:
    os.environ["POLARS_MAX_THREADS"] = str(int(threads))   # read when polars is imported
    import polars as pl

    levels = pl.List(pl.List(pl.String))
    schema = {"exchange": pl.String, "market": pl.String, "symbol": pl.String, "type": pl.String,
              "recv_ts_ms": pl.Int64,
              "payload": pl.Struct({"E": pl.Int64, "U": pl.Int64, "u": pl.Int64, "pu": pl.Int64,
                                    "lastUpdateId": pl.Int64, "b": levels, "a": levels,
                                    "bids": levels, "asks": levels})}
    key = ["exchange", "market", "symbol"]
    p = pl.col("payload")
    snap = pl.col("type") == "snapshot"
    raw = pl.read_ndjson(path, schema=schema, ignore_errors=True).lazy().select(
        *key, "type", "recv_ts_ms",
        pl.when(snap).then(p.struct["lastUpdateId"]).otherwise(p.struct["U"]).alias("first_id"),
        pl.when(snap).then(p.struct["lastUpdateId"]).otherwise(p.struct["u"]).alias("last_id"),
        p.struct["pu"].alias("prev_id"), p.struct["E"].alias("event_ms"),
        pl.coalesce(p.struct["b"], p.struct["bids"]).alias("bids"),
        pl.coalesce(p.struct["a"], p.struct["asks"]).alias("asks"),
    ).collect()

    def levels_ok(column: str):
        ok = pl.element().list.len().eq(2) & pl.element().list.eval(
            pl.element().str.contains(DECIMAL)).list.all()
        return pl.col(column).list.eval(ok).list.all().fill_null(True)

    valid = raw.lazy().filter(
        pl.col("type").is_in(["delta", "snapshot"]) & pl.col("first_id").is_not_null()
        & pl.col("last_id").is_not_null() & (pl.col("first_id") <= pl.col("last_id"))
        & pl.col("bids").is_not_null() & pl.col("asks").is_not_null()
        & levels_ok("bids") & levels_ok("asks")
    ).with_columns(is_snapshot=snap).collect()
    ordered = valid.lazy().sort(key + ["last_id", "is_snapshot"]).with_columns(
        seen=pl.col("last_id").cum_max().shift(1).over(key))
    accepted = ordered.filter(
        pl.col("is_snapshot") | pl.col("seen").is_null() | (pl.col("last_id") > pl.col("seen"))
    ).with_columns(c=pl.col("last_id").shift(1).over(key),
                   after_snapshot=pl.col("is_snapshot").shift(1).over(key)).collect()
    c, first, last, prev = pl.col("c"), pl.col("first_id"), pl.col("last_id"), pl.col("prev_id")
    linked = (pl.when(prev.is_not_null())
              .then((prev == c) | (pl.col("after_snapshot") & (first <= c) & (c <= last)))
              .otherwise((first <= c + 1) & (c + 1 <= last)))
    gaps = accepted.filter(~pl.col("is_snapshot") & c.is_not_null() & ~linked).select(
        *key, c.alias("from_id"), first.alias("to_id"), "event_ms", "recv_ts_ms")
    out.mkdir(parents=True, exist_ok=True)
    gaps.write_parquet(out / "gaps.parquet")
    accepted.select(*key, "type", "first_id", "last_id", "prev_id", "event_ms", "recv_ts_ms",
                    "bids", "asks").write_parquet(out / "clean.parquet")
    return _result(raw.height, raw.filter(~pl.col("type").is_in(["delta", "snapshot"])).height,
                   valid.height, accepted.height, gaps.height,
                   accepted.filter(~pl.col("is_snapshot") & c.is_null()).height,
                   valid.select(key).unique().height)


def _result(records, ignored, valid, clean, gaps, unanchored, symbols) -> dict:
    return {"records": records, "clean": clean, "gaps": gaps, "stale": valid - clean,
            "ignored": ignored, "invalid": records - ignored - valid,
            "unanchored_starts": unanchored, "symbols": symbols}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.anchors", description=__doc__.split("\n")[0])
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("input", help="An envelope JSON Lines file (.gz or plain).")
    parser.add_argument("output", help="Folder for gaps.parquet and clean.parquet.")
    parser.add_argument("--threads", type=int, default=2, help="Engine threads (default 2).")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    run = run_duckdb if args.engine == "duckdb" else run_polars
    result = run(args.input, Path(args.output), args.threads)
    result["engine"] = args.engine
    result["threads"] = args.threads
    result["seconds_in_process"] = round(time.perf_counter() - start, 3)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
