"""Deltas as columns: the batch hot path's form of many Events, with no Python object per event.

The batch decoder's fast path emits the plain deltas of a RawBatch as one EventColumns (ids, times,
rule, key and source as numpy / Arrow columns; levels as one Arrow binary column each, i.e. one
buffer with offsets); every other record stays an Event. Spill files, the in-memory sort of a run,
the sequencer's bulk acceptance and the clean table all work on the columns; an Event is built only
where the state machine must look at one (a break in continuity, a tie in the sort, a dead letter).

Row i is exactly the Event `columns[i]` returns (property tests: tests/unit/test_columns.py), so
every place that cannot take columns can take the Events instead and give the same result.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import msgspec
import numpy as np
import pyarrow as pa

from beam_pipeline.core.decoding import INT64_MAX
from beam_pipeline.core.model import DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, Event, EventBatch

RANGE_PLUS_ONE_CODE, PREVIOUS_LINK_CODE = 1, 2    # a rule as int8 (0: none the sequencer knows)
RULES = {RANGE_PLUS_ONE_CODE: RANGE_PLUS_ONE, PREVIOUS_LINK_CODE: PREVIOUS_LINK}
RULE_CODES = {rule: code for code, rule in RULES.items()}
_FIELDS = ("key", "first_id", "last_id", "prev_id", "event_time", "recv_time", "rule", "path",
           "line", "bids", "asks")
SCHEMA = pa.schema([("key", pa.int32()), ("first_id", pa.int64()), ("last_id", pa.int64()),
                    ("prev_id", pa.int64()), ("event_time", pa.int64()), ("recv_time", pa.int64()),
                    ("rule", pa.int8()), ("path", pa.int32()), ("line", pa.int64()),
                    ("bids", pa.large_binary()), ("asks", pa.large_binary())])


class _Wire(msgspec.Struct, array_like=True):
    keys: list[tuple[str, str, str]]
    paths: list[str]
    ipc: bytes


_wire_decoder = msgspec.msgpack.Decoder(_Wire)
_wire_encode = msgspec.msgpack.Encoder().encode


class EventColumns:
    """Deltas (kind DELTA) as an Arrow table in SCHEMA; `keys` and `paths` are what the int columns
    `key` and `path` index. A row's source is "path:line" (line >= 1). prev_id, event_time and
    recv_time are null where the Event's field is None."""

    __slots__ = ("table", "keys", "paths", "_arrays")

    def __init__(self, table: pa.Table, keys: list, paths: list):
        self._arrays: dict = {}
        self.table, self.keys, self.paths = table, keys, paths

    # ---- building ---------------------------------------------------------------------------

    @classmethod
    def from_lists(cls, keys: list, paths: list, columns: dict) -> "EventColumns":
        """`columns`: a Python list per SCHEMA field (None for a null)."""
        arrays = [pa.array(columns[field.name], field.type) for field in SCHEMA]
        return cls(pa.Table.from_arrays(arrays, schema=SCHEMA), keys, paths)

    @classmethod
    def from_rows(cls, keys: list, paths: list, rows: list) -> "EventColumns":
        """`rows`: one tuple per row, values in SCHEMA's order."""
        return cls.from_lists(keys, paths, dict(zip(_FIELDS, map(list, zip(*rows)))))

    @classmethod
    def concat(cls, parts: Sequence["EventColumns"]) -> "EventColumns":
        """Parts of one key (a run's chunks) -> one; keys and paths re-indexed."""
        if len(parts) == 1:
            return parts[0]
        keys: dict = {}
        paths: dict = {}
        tables = []
        for part in parts:
            key_map = np.array([keys.setdefault(k, len(keys)) for k in part.keys] or [0], np.int32)
            path_map = np.array([paths.setdefault(p, len(paths)) for p in part.paths] or [0],
                                np.int32)
            table = part.table
            table = table.set_column(0, "key", pa.array(key_map[part.array("key")]))
            table = table.set_column(7, "path", pa.array(path_map[part.array("path")]))
            tables.append(table)
        return cls(pa.concat_tables(tables), list(keys), list(paths))

    @classmethod
    def from_events(cls, events: Sequence[Event]) -> Optional["EventColumns"]:
        """Events as columns, or None when one of them is not a delta columns can hold (a snapshot,
        a marker, a source that is not "path:line", a value out of range: a poison event)."""
        keys: dict = {}
        paths: dict = {}
        columns: dict[str, list] = {name: [] for name in _FIELDS}
        for event in events:
            row = _row_of(event, keys, paths)
            if row is None:
                return None
            for name, value in zip(_FIELDS, row):
                columns[name].append(value)
        try:
            return cls.from_lists(list(keys), list(paths), columns)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            return None

    # ---- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.table.num_rows

    def array(self, name: str) -> np.ndarray:
        """A non-null int column as numpy (cached: zero copy)."""
        found = self._arrays.get(name)
        if found is None:
            found = self._arrays[name] = _numpy(self.table.column(name), None)
        return found

    def filled(self, name: str, null: int) -> np.ndarray:
        """A nullable int column as numpy, nulls as `null`."""
        cache = (name, null)
        found = self._arrays.get(cache)
        if found is None:
            found = self._arrays[cache] = _numpy(self.table.column(name), null)
        return found

    def times(self) -> np.ndarray:
        """Event.time per row: the exchange's time, else the receive time, else 0."""
        found = self._arrays.get("time")
        if found is None:
            event_time = self.filled("event_time", -1)
            found = np.where(event_time >= 0, event_time, self.filled("recv_time", 0))
            self._arrays["time"] = found
        return found

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("EventColumns slices have step 1")
            return EventColumns(self.table.slice(start, stop - start), self.keys, self.paths)
        return self.events(index, index + 1)[0] if index >= 0 else self[len(self) + index]

    def __iter__(self):
        return iter(self.events())

    def events(self, start: int = 0, stop: Optional[int] = None) -> list:
        """Rows start..stop as Events (what the state machine takes)."""
        table = self.table.slice(start, (len(self) if stop is None else stop) - start)
        rows = zip(*(table.column(name).to_pylist() for name in _FIELDS))
        keys, paths = self.keys, self.paths
        return [Event(*keys[key], DELTA, first, last, prev, event_time, recv_time, bids, asks,
                      RULES[rule], f"{paths[path]}:{line}")
                for key, first, last, prev, event_time, recv_time, rule, path, line, bids, asks
                in rows]

    def take(self, indices) -> "EventColumns":
        return EventColumns(self.table.take(pa.array(indices, pa.int64())), self.keys, self.paths)

    def file_counts(self, start: int = 0, stop: Optional[int] = None) -> dict:
        """Rows per source file (path) among rows start..stop."""
        path = self.array("path")[start:stop]
        counts = np.bincount(path, minlength=len(self.paths))
        return {self.paths[index]: int(n) for index, n in enumerate(counts) if n}

    # ---- wire (coder, spill files) ----------------------------------------------------------

    def to_bytes(self) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, SCHEMA) as writer:
            writer.write_table(self.table)
        return _wire_encode(_Wire(self.keys, self.paths, sink.getvalue().to_pybytes()))

    @classmethod
    def from_bytes(cls, data: bytes) -> "EventColumns":
        wire = _wire_decoder.decode(data)
        table = pa.ipc.open_stream(pa.py_buffer(wire.ipc)).read_all()
        return cls(table, [tuple(key) for key in wire.keys], wire.paths)

    def __reduce__(self):       # pickling (Beam's fallback coder, DirectRunner's bundles)
        return (EventColumns.from_bytes, (self.to_bytes(),))


def _numpy(column: pa.ChunkedArray, null: Optional[int]) -> np.ndarray:
    if column.num_chunks != 1:
        column = column.combine_chunks()
    else:
        column = column.chunk(0)
    if column.null_count:
        column = column.fill_null(null)
    return column.to_numpy(zero_copy_only=False)


def _row_of(event: Event, keys: dict, paths: dict):
    if (type(event) is not Event or event.kind != DELTA or event.rule not in RULE_CODES
            or type(event.bids) is not bytes or type(event.asks) is not bytes
            or event.checksum is not None or event.depth is not None):    # columns hold neither
        return None
    path, _, line = event.source.rpartition(":")
    if not (path and line.isascii() and line.isdigit() and line[0] != "0"):
        return None
    for value in (event.first_id, event.last_id, event.prev_id, event.event_time, event.recv_time):
        if value is not None and (type(value) is not int or not -1 <= value <= INT64_MAX):
            return None
    if event.first_id < 0 or event.last_id < 0 or (event.event_time or 0) < 0 or (
            event.recv_time or 0) < 0:
        return None
    key = keys.setdefault(event.key, len(keys))
    return (key, event.first_id, event.last_id, event.prev_id, event.event_time, event.recv_time,
            RULE_CODES[event.rule], paths.setdefault(path, len(paths)), int(line), event.bids,
            event.asks)


def sort_order(columns: EventColumns) -> np.ndarray:
    """The permutation that puts the rows in Event.sort_key order. All rows are deltas, so by last
    id (stable), and a run of equal last ids (a duplicate, an overlap: rare) by the whole key, as
    model.sort_canonically does."""
    last = columns.array("last_id")
    order = np.argsort(last, kind="stable")
    ranked = last[order]
    bounds = np.flatnonzero(ranked[1:] != ranked[:-1]) + 1
    starts, stops = np.concatenate(([0], bounds)), np.concatenate((bounds, [len(ranked)]))
    for start, stop in zip(starts[stops - starts > 1].tolist(), stops[stops - starts > 1].tolist()):
        group = order[start:stop].tolist()
        events = columns.take(group).events()
        ranking = sorted(range(len(group)), key=lambda k: events[k].sort_key())
        order[start:stop] = [group[k] for k in ranking]
    return order


def columns_of(element) -> Optional[EventColumns]:
    """The columnar part of an EventBatch, or None."""
    data = getattr(element, "columns", None)
    return EventColumns.from_bytes(data) if data else None


def events_of(element) -> list:
    """All events of an EventBatch as Events (columns too), or a plain list of Events (tests)."""
    if not isinstance(element, EventBatch):
        return element
    columns = columns_of(element)
    return element.events + columns.events() if columns is not None else element.events


class CleanStretch(NamedTuple):
    """The sequencer's clean output for rows accepted in bulk: each row is clean, with this
    segment (what (Event, segment_id, anchored) is for one Event)."""

    columns: EventColumns
    segment_id: Optional[int]
    anchored: bool

    def rows(self) -> list:
        """As the per-event outputs: [(Event, segment_id, anchored), ...]."""
        return [(event, self.segment_id, self.anchored) for event in self.columns.events()]
