"""Arrow schemas of the Parquet outputs, and the conversions from rows to Arrow tables.

Clean rows leave the streaming sequencer as Arrow tables: a table crosses a stage boundary as a
few buffers, where a list of Events was pickled one object at a time (25 us a row, measured;
bench/README.md). The batch sequencer writes each replayed run's clean rows to the work folder as a
Parquet part and emits only a CleanPart: a runner that holds a stage's whole output in memory
(DirectRunner does) then holds references, not a month of rows. So the sequencer's clean output
is typed by mode: CleanPart in batch, pa.Table in streaming; each has its own sink (CommitCleanParts,
clean_sink) and its own RowTimes conversion for the error counts.
"""
from __future__ import annotations

from operator import attrgetter, itemgetter
from typing import Optional

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.core.columns import CleanStretch
from beam_pipeline.core.model import DELTA

_TIME = pa.timestamp("ms", tz="UTC")
_LEVEL = pa.struct([("price", pa.string()), ("qty", pa.string())])
_LEVELS = pa.list_(_LEVEL)
_KEY_FIELDS = [("exchange", pa.string()), ("market", pa.string()), ("symbol", pa.string())]

CLEAN_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("kind", pa.string()), ("first_id", pa.int64()), ("last_id", pa.int64()),
    ("prev_id", pa.int64()), ("event_time", _TIME), ("recv_time", _TIME),
    ("bids", _LEVELS), ("asks", _LEVELS), ("segment_id", pa.int64()), ("anchored", pa.bool_())])
GAP_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("last_good_id", pa.int64()), ("next_first_id", pa.int64()), ("gap_size", pa.int64()),
    ("gap_class", pa.string()), ("action", pa.string()), ("resolution", pa.string()),
    ("event_time", _TIME), ("cause", pa.string())])
CORRUPT_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("start_id", pa.int64()), ("end_id", pa.int64()), ("start_time", _TIME), ("end_time", _TIME),
    ("reason", pa.string()), ("detail", pa.string())])

BOOKS_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("time", _TIME), ("segment_id", pa.int64()), ("last_id", pa.int64()), ("bids", _LEVELS),
    ("asks", _LEVELS)])


class BookPart(msgspec.Struct, frozen=True):
    """books/ rows of one key written as a Parquet file in the work folder (batch sequencing)."""

    path: str
    rows: int


class BookPartWriter:
    """Batch: one key's books/ rows -> one Parquet part in the work folder, written a row group at
    a time, so a key's book snapshots are never all in memory (nor in the runner's buffers between
    stages: only the part's reference travels). Named by key, so a retried replay rewrites it."""

    def __init__(self, folder: str, name: str, group_rows: int = 4096):
        self.path = f"{folder.rstrip('/')}/{name}-000001.parquet"
        self.group_rows = group_rows
        self._buffer: list = []
        self._rows = 0
        self._handle = self._writer = None

    def add(self, row) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.group_rows:
            self._write()

    def finish(self) -> Optional[BookPart]:
        """Writes what is buffered and closes the part: its BookPart, or None (no rows)."""
        if self._buffer:
            self._write()
        if self._writer is None:
            return None
        self._writer.close()
        self._handle.close()
        return BookPart(self.path, self._rows)

    def _write(self) -> None:
        if self._writer is None:
            self._handle = FileSystems.create(self.path)
            self._writer = pq.ParquetWriter(self._handle, BOOKS_SCHEMA, compression="zstd")
        self._writer.write_table(books_table(self._buffer))
        self._rows += len(self._buffer)
        self._buffer = []


def books_table(rows) -> pa.Table:
    """BookSnapshot rows (core/books/watch.py) -> a table in BOOKS_SCHEMA."""
    return pa.Table.from_pylist([
        {"exchange": r.exchange, "market": r.market, "symbol": r.symbol, "time": r.time,
         "segment_id": r.segment_id, "last_id": r.last_id,
         "bids": [{"price": p, "qty": q} for p, q in r.bids],
         "asks": [{"price": p, "qty": q} for p, q in r.asks]} for r in rows], schema=BOOKS_SCHEMA)


# The JSON-shaped outputs (dict rows, times as ISO-8601 text, as the Pub/Sub topics carry them),
# written as Parquet with these schemas: every key column null where the record yielded none.
ERROR_COUNT_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("error_type", pa.string()), ("window_start", _TIME), ("window_end", _TIME),
    ("count", pa.int64()), ("pane", pa.int64())])
ALERT_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("error_type", pa.string()), ("level", pa.string()), ("rule", pa.string()),
    ("window_start", _TIME), ("window_end", _TIME), ("count", pa.int64()),
    ("message", pa.string()), ("suggested_action", pa.string())])
RECOVERY_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("from_id", pa.int64()), ("reason", pa.string()), ("event_time", _TIME)])
UNDELIVERED_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("topic", pa.string()), ("reason", pa.string()), ("message", pa.string()),
    ("payload", pa.string())])

STATUS_SCHEMA = pa.schema(_KEY_FIELDS + [
    ("as_of", _TIME), ("last_id", pa.int64()), ("last_event_time", _TIME),
    ("segment_id", pa.int64()), ("anchored", pa.bool_()), ("held_events", pa.int64()),
    ("hold_reason", pa.string()), ("open_gap_last_good_id", pa.int64()),
    ("open_gap_next_first_id", pa.int64()), ("open_gap_size", pa.int64()),
    ("disconnected", pa.bool_()), ("book_checked_messages", pa.int64()),
    ("checksum_verified_messages", pa.int64()), ("book_checks_failed", pa.int64()),
    ("open_corrupt_reason", pa.string()), ("open_corrupt_start_id", pa.int64()),
    ("open_corrupt_start_time", _TIME)])

# dead_letter/ is Avro (beam_pipeline/schemas/dead_letter.avsc); its records as Arrow (readback).
DEAD_LETTER_ARROW_SCHEMA = pa.schema([
    ("reason", pa.string()), ("message", pa.string()), ("stage", pa.string()),
    ("payload", pa.binary()), ("source", pa.string()), ("ingest_time", _TIME)] + _KEY_FIELDS + [
    ("first_id", pa.int64()), ("last_id", pa.int64()), ("event_time", _TIME)])

_CLEAN_COLUMNS = ("exchange", "market", "symbol", "kind", "first_id", "last_id", "prev_id",
                  "event_time", "recv_time")
_QUOTE, _POINT = b'".'
# Level statistics would be min/max of decimal strings, compared as text ("10" < "9"): useless to
# a reader and a fifth of the write time (bench/README.md). Every other column keeps them.
_STATISTICS = [name for name in CLEAN_SCHEMA.names if name not in ("bids", "asks")]


_FIELD = {name: attrgetter(name) for name in _CLEAN_COLUMNS + ("bids", "asks")}
_EVENT, _SEGMENT, _ANCHORED = itemgetter(0), itemgetter(1), itemgetter(2)


def clean_table(rows, key: Optional[tuple] = None) -> pa.Table:
    """The sequencer's clean outputs -> an Arrow table in their order: (Event, segment_id,
    anchored) rows, and CleanStretches (columns, the batch fast path) taken column by column.
    `key`: the (exchange, market, symbol) every row has (a sequencer's rows are its key's),
    repeated instead of read from each row."""
    if not any(isinstance(row, CleanStretch) for row in rows):
        return _event_table(rows, key)
    tables, pending = [], []
    for row in rows:
        if isinstance(row, CleanStretch):
            if pending:
                tables.append(_event_table(pending, key))
                pending = []
            tables.append(_stretch_table(row, key))
        else:
            pending.append(row)
    if pending:
        tables.append(_event_table(pending, key))
    return pa.concat_tables(tables)


def _stretch_table(stretch: CleanStretch, key: Optional[tuple]) -> pa.Table:
    """A CleanStretch's rows as a clean table: the id and time columns are the columns' own."""
    columns, n = stretch.columns, len(stretch.columns)
    source = columns.table
    if key is None:
        keys = [columns.keys[index] for index in columns.array("key").tolist()]
        names = {name: pa.array([k[i] for k in keys], pa.string())
                 for i, name in enumerate(_CLEAN_COLUMNS[:3])}
    else:
        names = {name: pa.repeat(pa.scalar(value, pa.string()), n)
                 for name, value in zip(_CLEAN_COLUMNS[:3], key)}
    table = {**names, "kind": pa.repeat(pa.scalar(DELTA, pa.string()), n),
             "first_id": source["first_id"], "last_id": source["last_id"],
             "prev_id": source["prev_id"], "event_time": source["event_time"].cast(_TIME),
             "recv_time": source["recv_time"].cast(_TIME),
             "bids": binary_levels_array(source["bids"]), "asks": binary_levels_array(source["asks"]),
             "segment_id": pa.repeat(pa.scalar(stretch.segment_id, pa.int64()), n),
             "anchored": pa.repeat(pa.scalar(stretch.anchored, pa.bool_()), n)}
    return pa.table(table, schema=CLEAN_SCHEMA)


def _event_table(rows, key: Optional[tuple]) -> pa.Table:
    events = list(map(_EVENT, rows))
    names = _CLEAN_COLUMNS if key is None else _CLEAN_COLUMNS[3:]
    columns = {name: list(map(_FIELD[name], events)) for name in names}
    if key is not None:
        for name, value in zip(_CLEAN_COLUMNS[:3], key):
            columns[name] = pa.repeat(pa.scalar(value, pa.string()), len(events))
    columns["bids"] = levels_array(list(map(_FIELD["bids"], events)))
    columns["asks"] = levels_array(list(map(_FIELD["asks"], events)))
    columns["segment_id"] = list(map(_SEGMENT, rows))
    columns["anchored"] = list(map(_ANCHORED, rows))
    return pa.table(columns, schema=CLEAN_SCHEMA)


def levels_array(texts) -> pa.Array:
    """Canonical levels texts (model.encode_levels: [["price","qty"],...], every string a decimal)
    -> one list<struct<price, qty>> array, with numpy over all the texts at once instead of a
    Python object per level: a string is what lies between a pair of quotes, its characters are
    exactly the digits and points of the text, and a level is four quotes. Reference:
    decode_levels per text (tests/test_fast_paths.py)."""
    text_ends = np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)))
    return _levels_of_buffer(np.frombuffer(b"".join(texts), np.uint8), text_ends)


def binary_levels_array(texts: pa.ChunkedArray) -> pa.Array:
    """levels_array of a (large_)binary column of levels texts, from its buffers (no copy per text)."""
    texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    _, offsets, data = texts.buffers()
    offset_type = np.int64 if pa.types.is_large_binary(texts.type) else np.int32
    offsets = np.frombuffer(offsets, offset_type)[texts.offset:texts.offset + len(texts) + 1]
    chars = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]] if len(texts) else np.zeros(0, np.uint8)
    return _levels_of_buffer(chars, (offsets[1:] - offsets[0]).astype(np.int64))


def _levels_of_buffer(chars: np.ndarray, text_ends: np.ndarray) -> pa.Array:
    """The texts whose bytes are `chars`, text i ending at text_ends[i] -> levels_array."""
    quotes = np.flatnonzero(chars == _QUOTE)
    values = chars[chars - np.uint8(_POINT) < 12]    # '.', '/' (never sent), '0'-'9'; others wrap
    if len(values) >= 2**31:
        raise ValueError("over 2 GiB of price levels in one clean table: lower --run_span_ids")
    string_offsets = np.zeros(len(quotes) // 2 + 1, np.int32)
    np.cumsum(quotes[1::2] - quotes[0::2] - 1, out=string_offsets[1:])
    strings = pa.StringArray.from_buffers(len(string_offsets) - 1, pa.py_buffer(string_offsets),
                                          pa.py_buffer(values))
    level_offsets = np.zeros(len(text_ends) + 1, np.int32)
    level_offsets[1:] = np.searchsorted(quotes, text_ends) // 4
    levels = pa.StructArray.from_arrays([strings.take(np.arange(0, len(strings), 2)),
                                         strings.take(np.arange(1, len(strings), 2))],
                                        fields=list(_LEVEL))
    return pa.ListArray.from_arrays(pa.array(level_offsets), levels, type=_LEVELS)


def struct_table(rows, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([msgspec.structs.asdict(row) for row in rows], schema=schema)


def _epoch_ms(value):
    """A time as an output row holds it (ISO-8601 text, or ms) -> ms since the epoch."""
    if value is None or isinstance(value, int):
        return value
    return int(np.datetime64(value.replace("Z", "").replace("+00:00", ""), "ms").astype(np.int64))


def dict_table(rows, schema: pa.Schema) -> pa.Table:
    """Dict rows (or Structs) -> an Arrow table of `schema`: its columns only, ISO times as
    timestamps, a missing column null."""
    times = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    columns = {name: [] for name in schema.names}
    for row in rows:
        if isinstance(row, msgspec.Struct):
            row = msgspec.structs.asdict(row)
        for name in schema.names:
            value = row.get(name)
            columns[name].append(_epoch_ms(value) if name in times else value)
    return pa.table(columns, schema=schema)


class CleanPart(msgspec.Struct, frozen=True):
    """Clean rows of one key written as a Parquet file in the work folder (batch sequencing)."""

    path: str
    rows: int
    symbol: str                    # exchange:market:symbol
    times: bytes                   # each row's time (Event.time, ms) as int64s: windowed counts


def row_times(table: pa.Table) -> np.ndarray:
    """Each clean row's time: the exchange's where it has one, else the receive time (Event.time)."""
    times = pc.coalesce(table["event_time"].cast(pa.int64()), table["recv_time"].cast(pa.int64()),
                        pa.scalar(0, pa.int64()))
    return times.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def write_clean_part(table: pa.Table, path: str, symbol: str) -> CleanPart:
    with FileSystems.create(path) as handle:
        pq.write_table(table, handle, compression="zstd", write_statistics=_STATISTICS)
    return CleanPart(path, table.num_rows, symbol, row_times(table).tobytes())


def read_clean_part(part: CleanPart) -> pa.Table:
    """A batch clean part read back from the work folder (before the sink moves it)."""
    with FileSystems.open(part.path) as handle:
        return pq.read_table(handle)


# Clean row times: what the per-window counts need of the clean rows, one type for both modes:
# (exchange:market:symbol, each row's time as int64 bytes).
RowTimes = tuple[str, bytes]


def part_row_times(part: CleanPart) -> list:
    """Batch: a CleanPart -> [RowTimes] (the part carries its times: nothing is read back)."""
    return [(part.symbol, part.times)]


def table_row_times(table: pa.Table) -> list:
    """Streaming: a clean table -> [RowTimes], one per symbol in it."""
    times = row_times(table)
    symbols = pc.binary_join_element_wise(table["exchange"], table["market"], table["symbol"],
                                          ":").to_numpy(zero_copy_only=False)
    return [(symbol, times[symbols == symbol].tobytes()) for symbol in dict.fromkeys(symbols)]


# Clean parts of the batch sequencer: row groups of 64k rows (or 64 MB), parts of up to 16 of them,
# so a symbol gets a few files per day however small its runs are (USD-M ids advance thousands
# per message: a 100,000-id run holds ~25 messages, and each run used to be its own file).
ROW_GROUP_ROWS = 65_536
ROW_GROUP_BYTES = 64 << 20
PART_ROWS = 16 * ROW_GROUP_ROWS


class CleanPartWriter:
    """One key's clean rows -> few large Parquet parts in the work folder.

    Tables are added as the replay makes them; a row group is written once 64k rows (or 64 MB) are
    buffered, and a part is closed at PART_ROWS rows (`add` returns its CleanPart) or by `finish`.
    Memory: one row group's buffer. Parts are named by key and number, so a retried replay
    rewrites the same files."""

    def __init__(self, folder: str, name: str, symbol: str, row_group_rows: int = ROW_GROUP_ROWS,
                 row_group_bytes: int = ROW_GROUP_BYTES, part_rows: int = PART_ROWS):
        self.folder, self.name, self.symbol = folder.rstrip("/"), name, symbol
        self.row_group_rows, self.row_group_bytes = row_group_rows, row_group_bytes
        self.part_rows = part_rows
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        self._number, self._handle, self._writer = 0, None, None
        self._rows, self._times = 0, []

    def add(self, table: pa.Table):
        """Buffers the rows; returns the CleanPart of a part it closed, else None."""
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._pending_bytes += table.nbytes
        if self._pending_rows >= self.row_group_rows or self._pending_bytes >= self.row_group_bytes:
            self._write_group()
            if self._rows >= self.part_rows:
                return self._close()
        return None

    def finish(self):
        """Writes what is buffered and closes the open part: its CleanPart, or None."""
        if self._pending:
            self._write_group(everything=True)
        return self._close() if self._writer is not None else None

    def _path(self) -> str:
        return f"{self.folder}/{self.name}-{self._number:06d}.parquet"

    def _write_group(self, everything: bool = False):
        """Writes whole row groups of what is buffered (all of it when `everything`, or when the
        buffer passed the byte bound); the rest stays buffered."""
        table = pa.concat_tables(self._pending).combine_chunks()
        keep = 0
        if not everything and self._pending_bytes < self.row_group_bytes:
            keep = table.num_rows % self.row_group_rows
        table, rest = table.slice(0, table.num_rows - keep), table.slice(table.num_rows - keep)
        self._pending = [rest] if keep else []
        self._pending_rows, self._pending_bytes = keep, rest.nbytes if keep else 0
        if self._writer is None:
            self._number += 1
            self._handle = FileSystems.create(self._path())
            self._writer = pq.ParquetWriter(self._handle, CLEAN_SCHEMA, compression="zstd",
                                            write_statistics=_STATISTICS)
        self._writer.write_table(table, row_group_size=self.row_group_rows)
        self._rows += table.num_rows
        self._times.append(row_times(table))

    def _close(self) -> CleanPart:
        self._writer.close()
        self._handle.close()
        part = CleanPart(self._path(), self._rows, self.symbol,
                         np.concatenate(self._times).astype(np.int64).tobytes())
        self._handle, self._writer, self._rows, self._times = None, None, 0, []
        return part
