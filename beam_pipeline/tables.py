"""Arrow schemas of the Parquet outputs, and the conversions from rows to Arrow tables.

Clean rows leave the sequencer as Arrow tables (one per replayed run, or per streaming firing):
a table crosses a stage boundary as a few buffers, where a list of Events was pickled one object at
a time (25 us a row, measured; bench/README.md).
"""
from __future__ import annotations

import msgspec
import pyarrow as pa

_TIME = pa.timestamp("ms", tz="UTC")
_LEVELS = pa.list_(pa.struct([("price", pa.string()), ("qty", pa.string())]))
_KEY_FIELDS = [("exchange", pa.string()), ("market", pa.string()), ("symbol", pa.string())]

CLEAN_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("kind", pa.string()), ("first_id", pa.int64()), ("last_id", pa.int64()),
    ("prev_id", pa.int64()), ("event_time", _TIME), ("recv_time", _TIME),
    ("bids", _LEVELS), ("asks", _LEVELS), ("segment_id", pa.int64()), ("anchored", pa.bool_())])
GAP_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("last_good_id", pa.int64()), ("next_first_id", pa.int64()), ("gap_size", pa.int64()),
    ("gap_class", pa.string()), ("action", pa.string()), ("resolution", pa.string()),
    ("event_time", _TIME)])
CORRUPT_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("start_id", pa.int64()), ("end_id", pa.int64()), ("start_time", _TIME), ("end_time", _TIME),
    ("reason", pa.string())])

_CLEAN_COLUMNS = ("exchange", "market", "symbol", "kind", "first_id", "last_id", "prev_id",
                  "event_time", "recv_time", "bids", "asks")


def clean_table(rows) -> pa.Table:
    """(Event, segment_id, anchored) rows -> an Arrow table, column by column."""
    columns = {name: [getattr(event, name) for event, _, _ in rows] for name in _CLEAN_COLUMNS}
    columns["segment_id"] = [segment for _, segment, _ in rows]
    columns["anchored"] = [anchored for _, _, anchored in rows]
    return pa.table(columns, schema=CLEAN_SCHEMA)


def struct_table(rows, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([msgspec.structs.asdict(row) for row in rows], schema=schema)
