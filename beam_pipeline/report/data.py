"""What the report shows, read from a run's output folder and aggregated per time bucket.

Reads a finished batch run's or a running streaming job's outputs, each row once (the rule of
beam_pipeline/readback.py: the first written of each id, files in write order), in either layout
(flat, or a streaming job's date partitions). Clean rows are read
column-wise (no price levels) and deduplicated with Arrow, so a 4M-row clean/ costs seconds; every
per-symbol figure is computed with numpy over the rows of that symbol, and kept only per bucket
(never a point per event).
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import readback
from beam_pipeline.core.books.watch import BOOK_REASONS
from beam_pipeline.options import FeedCheckOptions
from transforms import layout
from transforms.tables import row_times
from transforms.tags import (ALERTS, CLEAN, CORRUPT_PERIODS, DEAD_LETTER, ERROR_COUNTS,
                            FOLDER_SUFFIX, GAPS)

RECORD_KINDS = (("clean_records", "clean"), ("ignored", "ignored"), ("duplicates", "duplicates"),
                ("superseded", "superseded"), ("dead_letters", "dead letters"))
GAP_CLASSES = ("small", "medium", "large", "reset")
# Bucket sizes (ms) a time axis may use: the smallest that keeps the axis under a bucket limit.
BUCKETS_MS = (1_000, 10_000, 60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000)
BUCKET_NAMES = {1_000: "1 s", 10_000: "10 s", 60_000: "1 min", 300_000: "5 min",
                900_000: "15 min", 3_600_000: "1 h", 21_600_000: "6 h", 86_400_000: "1 day"}
THRESHOLD_OPTIONS = ("error_window", "alert_warning_count", "alert_critical_count",
                     "alert_gap_rate", "stall_timeout")
_CLEAN_COLUMNS = ("exchange", "market", "symbol", "kind", "first_id", "last_id", "event_time",
                  "recv_time", "segment_id", "anchored")
# readback.KEYS["clean"], the id of a clean row, as read_clean_rows turns it into numbers.
CLEAN_KEY = ("exchange", "market", "symbol", "kind", "first_id", "last_id")
UNATTRIBUTED = "-"          # the stream of rows without a symbol (most dead letters)


class NoOutputs(Exception):
    """The folder holds no summary.json: not a run's output folder, or no summary written yet."""


def choose_bucket(span_ms: int, max_buckets: int) -> int:
    for bucket in BUCKETS_MS:
        if span_ms / bucket <= max_buckets:
            return bucket
    return BUCKETS_MS[-1]


@dataclass
class Thresholds:
    error_window_s: float
    warning_count: int
    critical_count: int
    gap_rate: float
    stall_timeout_s: float
    source: str                # where they came from: the run's settings, or the defaults


def _json_file(path: str):
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


def load_thresholds(output: str, summary: dict) -> Thresholds:
    """The run's alert thresholds: from the settings the run recorded (summary.json "settings",
    beam_pipeline/settings.py, else the "settings" of its _job.json), else options.py's defaults,
    and the page says which."""
    record, source = _settings_options(summary.get("settings")), "the run's settings (summary.json)"
    if record is None:
        record = _settings_options((_json_file(_join(output, "_job.json")) or {}).get("settings"))
        source = "the run's settings (_job.json)"
    if record is None:
        record, source = {}, "the defaults of beam_pipeline/options.py (the run recorded none)"
    defaults = FeedCheckOptions.defaults()
    value = {name: record.get(name, getattr(defaults, name)) for name in THRESHOLD_OPTIONS}
    return Thresholds(float(value["error_window"]), int(value["alert_warning_count"]),
                      int(value["alert_critical_count"]), float(value["alert_gap_rate"]),
                      float(value["stall_timeout"]), source)


def _settings_options(record):
    """The feedcheck options of a settings record ({"options": {...}, "runner": ..., ...})."""
    if isinstance(record, dict) and isinstance(record.get("options"), dict):
        return record["options"]
    return None


def _join(output: str, name: str) -> str:
    return f"{output.rstrip('/')}/{name}"


def _files(output: str, folder: str) -> list[str]:
    """The folder's files in write order, flat (batch) or date-partitioned (streaming)."""
    return layout.data_files(_join(output, folder), FOLDER_SUFFIX[folder])


_DICTIONARY_COLUMNS = ("exchange", "market", "symbol", "kind")


def _parquet(path: str, columns) -> pa.Table:
    """Some columns of one Parquet file; the key's text columns as dictionaries (one value per
    file in a batch run: decoding them as strings per row was half the read time)."""
    source = path if "://" not in path else io.BytesIO(_read(path))
    dictionary = [c for c in columns if c in _DICTIONARY_COLUMNS]
    table = pq.ParquetFile(source, read_dictionary=dictionary).read(columns=list(columns))
    return table.unify_dictionaries()     # row groups may each have their own


def _read(path: str) -> bytes:
    with FileSystems.open(path) as handle:
        return handle.read()


def _stream_codes(table: pa.Table, streams: dict) -> np.ndarray:
    """Each row's stream (exchange:market:symbol) as an index into `streams` (filled as met)."""
    parts = [table[name].combine_chunks() for name in ("exchange", "market", "symbol")]
    parts = [p if pa.types.is_dictionary(p.type) else p.dictionary_encode() for p in parts]
    sizes = [len(p.dictionary) for p in parts]
    combined = np.zeros(len(table), np.int64)
    for part, size in zip(parts, sizes):
        combined = combined * size + part.indices.to_numpy(zero_copy_only=False)
    seen, inverse = np.unique(combined, return_inverse=True)
    values = [p.dictionary.to_pylist() for p in parts]
    codes = []
    for key in seen.tolist():
        index = []
        for size in reversed(sizes):
            key, rest = divmod(key, size)
            index.append(rest)
        exchange, market, symbol = (values[i][j] for i, j in enumerate(reversed(index)))
        codes.append(streams.setdefault(f"{exchange}:{market}:{symbol}", len(streams)))
    return np.array(codes, np.int32)[inverse.reshape(-1)]


@dataclass
class CleanRows:
    """clean/ without price levels, each id once: per row its stream (an index into `streams`,
    exchange:market:symbol), time (ms), segment_id (-1 when null) and anchored."""

    streams: list
    stream: np.ndarray
    time: np.ndarray
    segment_id: np.ndarray
    anchored: np.ndarray

    def __len__(self) -> int:
        return len(self.stream)


def read_clean_rows(output: str) -> CleanRows:
    """Each id of clean/ once (readback.KEYS["clean"]: exchange, market, symbol, kind, first_id,
    last_id), the first written kept (files in write order), as readback does. The key becomes
    numbers (a stream index, snapshot or not, the two ids) so the duplicates are found with one
    stable numpy sort: no Python object per row, a few columns in memory."""
    streams: dict = {}
    parts = {name: [] for name in ("stream", "snapshot", "first", "last", "time", "segment",
                                   "anchored")}
    for path in _files(output, CLEAN):
        table = _parquet(path, _CLEAN_COLUMNS)
        if table.num_rows == 0:
            continue
        parts["stream"].append(_stream_codes(table, streams))
        kind = table["kind"].combine_chunks()
        snapshot = np.array([value == "snapshot" for value in kind.dictionary.to_pylist()], bool)
        parts["snapshot"].append(snapshot[kind.indices.to_numpy(zero_copy_only=False)])
        parts["first"].append(pc.fill_null(table["first_id"], -1).to_numpy())
        parts["last"].append(pc.fill_null(table["last_id"], -1).to_numpy())
        parts["time"].append(row_times(table))
        parts["segment"].append(pc.fill_null(table["segment_id"], -1).to_numpy())
        parts["anchored"].append(pc.fill_null(table["anchored"], False).to_numpy(zero_copy_only=False))
    if not streams:
        empty = np.zeros(0, np.int64)
        return CleanRows([], empty.astype(np.int32), empty, empty, empty.astype(bool))
    column = {name: np.concatenate(values) for name, values in parts.items()}
    # lexsort is stable: among equal keys the first written stays first.
    stream_kind = column["stream"].astype(np.int64) * 2 + column["snapshot"]
    order = np.lexsort((column["last"], column["first"], stream_kind))
    first_of_key = np.zeros(len(order), bool)
    first_of_key[0] = True
    for key in (stream_kind, column["first"], column["last"]):
        sorted_key = key[order]
        first_of_key[1:] |= sorted_key[1:] != sorted_key[:-1]
    keep = order[first_of_key]
    return CleanRows(list(streams), column["stream"][keep], column["time"][keep],
                     column["segment"][keep], column["anchored"][keep])


def _rows(output: str, folder: str) -> list[dict]:
    """Every row of a Parquet output folder as dicts, times as ISO-8601 text (as the topics
    carry them)."""
    table = readback.read_raw(output, folder)
    times = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
    rows = table.to_pylist()
    for row in rows:
        for name in times:
            if row[name] is not None:
                row[name] = to_iso(row[name])
    return rows


def to_iso(value) -> str:
    """A datetime (UTC) -> ISO-8601 with milliseconds and Z."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def stream_of(row: dict) -> str:
    """exchange:market:symbol of an output row; UNATTRIBUTED when it has no symbol."""
    if not row.get("symbol"):
        return UNATTRIBUTED
    return f"{row.get('exchange') or '?'}:{row.get('market') or '?'}:{row['symbol']}"


def read_error_counts(output: str) -> list[dict]:
    """error_counts/, one row per (window, error type, key): the highest pane (the newest
    count of a window that streaming fired more than once)."""
    newest = {}
    for row in _rows(output, ERROR_COUNTS):
        key = (row["window_start"], row["error_type"], stream_of(row))
        if key not in newest or (row.get("pane") or 0) > (newest[key].get("pane") or 0):
            newest[key] = row
    return list(newest.values())


_LEVEL_RANK = {"info": 0, "warning": 1, "critical": 2}


def read_alerts(output: str) -> list[dict]:
    """alerts/, one per (rule, error type, key, window): the highest level."""
    strongest = {}
    for row in _rows(output, ALERTS):
        key = (row["rule"], row["error_type"], stream_of(row), row["window_start"])
        if key not in strongest or (_LEVEL_RANK.get(row["level"], 0)
                                    > _LEVEL_RANK.get(strongest[key]["level"], 0)):
            strongest[key] = row
    return list(strongest.values())


def iso_ms(text: str) -> int:
    """An ISO-8601 UTC time (error_counts, alerts) -> ms since the epoch."""
    return int(np.datetime64(text.replace("Z", "").replace("+00:00", ""), "ms").astype(np.int64))


def _ms(value) -> int | None:
    """A timestamp from a Parquet row (datetime) -> ms since the epoch."""
    if value is None:
        return None
    return int(value.timestamp() * 1000)


@dataclass
class StreamReport:
    """One (exchange, market, symbol): its figures and its per-bucket timeline."""

    name: str
    first_ms: int | None = None
    last_ms: int | None = None
    clean_rows: int = 0
    segments: int = 0
    anchored_segments: int = 0
    covered_ms: int = 0
    anchored_ms: int = 0
    gaps: list = field(default_factory=list)              # (time ms, class, size, resolution)
    corrupt: list = field(default_factory=list)           # (start ms, end ms, reason, start_id, end_id)
    error_counts: list = field(default_factory=list)      # rows of error_counts/
    alerts: list = field(default_factory=list)
    dead_letters: int = 0
    # per-bucket timeline over [first_ms, last_ms]
    bucket_ms: int = 0
    start_ms: int = 0
    # Per bucket: does a continuous segment (anchored / not) span it. From the segments' first and
    # last rows, so a quiet symbol between two updates of one segment is still continuous there.
    anchored_buckets: np.ndarray = None
    unanchored_buckets: np.ndarray = None
    # Each segment's first and last row time and whether it is anchored.
    segment_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    segment_ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    segment_anchored: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    events_per_window: dict = field(default_factory=dict)  # window start ms -> clean rows
    verified_ms: int = 0          # anchored time outside every corrupt period (book checks)
    status: dict | None = None    # its latest row of status/ (readback.read_status), if any

    @property
    def span_ms(self) -> int:
        if self.first_ms is None:
            return 0
        return self.last_ms - self.first_ms

    def coverage(self, anchored: bool = False) -> float:
        """Share of the symbol's time span inside continuous segments (anchored ones only)."""
        covered = self.anchored_ms if anchored else self.covered_ms
        if self.span_ms == 0:
            return 1.0 if (self.anchored_segments if anchored else self.segments) else 0.0
        return min(covered / self.span_ms, 1.0)

    def gap_counts(self) -> dict:
        counts = {cls: 0 for cls in GAP_CLASSES}
        for _, cls, _, _ in self.gaps:
            counts[cls] = counts.get(cls, 0) + 1
        return counts

    def alert_counts(self) -> dict:
        counts = {"critical": 0, "warning": 0, "info": 0}
        for alert in self.alerts:
            counts[alert["level"]] = counts.get(alert["level"], 0) + 1
        return counts

    def stalls(self) -> int:
        return sum(row["count"] for row in self.error_counts if row["error_type"] == "stall")

    def gap_rates(self) -> dict:
        """{error window start ms: gaps / clean rows in that window} (the gap-rate rule's figure;
        the windows are the run's --error_window, as error_counts/ and events_per_window are)."""
        gaps: dict = {}
        for row in self.error_counts:
            if row["error_type"].startswith("gap_"):
                start = iso_ms(row["window_start"])
                gaps[start] = gaps.get(start, 0) + row["count"]
        return {start: n / max(self.events_per_window.get(start, 0), 1) for start, n in gaps.items()}

    def verified_coverage(self) -> float:
        """Share of the span that is anchored, unbroken and outside every corrupt period (a
        book check's among them): where the rebuilt book is proven right as far as checked."""
        if self.span_ms == 0:
            return self.coverage(anchored=True) if not self.corrupt else 0.0
        return min(self.verified_ms / self.span_ms, 1.0)

    def book_checks_failed(self) -> int:
        """Corrupt periods the book checks opened (checksum_mismatch, crossed_book, ...)."""
        return sum(1 for _, _, reason, *_ in self.corrupt if reason in BOOK_REASONS)

    def checksum_verified(self) -> int | None:
        """Messages whose venue checksum matched the rebuilt book (status/), None unknown."""
        return (self.status or {}).get("checksum_verified_messages")

    def corrupt_ms(self) -> int:
        return sum(max(end - (start if start is not None else end), 0)
                   for start, end, *_ in self.corrupt)

    def trusted(self) -> float:
        """The headline: the share of the symbol's time span that is anchored and unbroken
        (inside segments that began at a snapshot, with no gap breaking them)."""
        return self.coverage(anchored=True)

    def severity(self) -> tuple:
        """Sort key, worst first: least anchored and unbroken time, least coverage, then most
        trouble."""
        alerts = self.alert_counts()
        trouble = (len(self.corrupt), alerts["critical"], self.gap_counts()["large"]
                   + self.gap_counts()["reset"], alerts["warning"], len(self.gaps),
                   self.dead_letters, self.stalls())
        return (round(self.trusted(), 6), round(self.coverage(), 6),
                tuple(-n for n in trouble), self.name)

    def _extend_span(self, *times) -> None:
        for time in times:
            if time is None:
                continue
            self.first_ms = time if self.first_ms is None else min(self.first_ms, time)
            self.last_ms = time if self.last_ms is None else max(self.last_ms, time)


def union_length(starts: np.ndarray, ends: np.ndarray) -> int:
    """Total length of the union of the intervals [start, end]."""
    if len(starts) == 0:
        return 0
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], np.maximum.accumulate(ends[order])
    # A new run of overlapping intervals begins where an interval starts after all before it end.
    new_run = np.ones(len(starts), bool)
    new_run[1:] = starts[1:] > ends[:-1]
    run_of = np.cumsum(new_run) - 1
    run_starts = starts[new_run]
    run_ends = np.zeros(len(run_starts), np.int64)
    np.maximum.at(run_ends, run_of, ends)
    return int((run_ends - run_starts).sum())


def merged(starts, ends) -> list:
    """Intervals [start, end] -> their union as sorted, disjoint (start, end) pairs."""
    out: list = []
    for start, end in sorted(zip(starts, ends)):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def overlap_length(left: list, right: list) -> int:
    """Length of the intersection of two unions of disjoint sorted intervals (merged())."""
    total, i, j = 0, 0, 0
    while i < len(left) and j < len(right):
        low, high = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        total += max(high - low, 0)
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return total


def _verified(stream: StreamReport) -> int:
    """Anchored time outside the corrupt periods: the anchored segments' union minus its overlap
    with the periods' union (a book check's period lies inside an anchored segment)."""
    anchored = merged(stream.segment_starts[stream.segment_anchored].tolist(),
                      stream.segment_ends[stream.segment_anchored].tolist())
    corrupt = merged([start if start is not None else end for start, end, *_ in stream.corrupt],
                     [end for _, end, *_ in stream.corrupt])
    return sum(b - a for a, b in anchored) - overlap_length(anchored, corrupt)


def _segment_extents(times: np.ndarray, segments: np.ndarray, anchored: np.ndarray):
    """-> per segment: start ms, end ms, anchored."""
    order = np.lexsort((times, segments))
    segs, times, anchored = segments[order], times[order], anchored[order]
    first = np.ones(len(segs), bool)
    first[1:] = segs[1:] != segs[:-1]
    starts_at = np.flatnonzero(first)
    ends_at = np.append(starts_at[1:] - 1, len(segs) - 1)
    return times[starts_at], times[ends_at], anchored[starts_at]


@dataclass
class Report:
    output: str
    summary: dict
    thresholds: Thresholds
    streams: list                     # StreamReport, worst first
    dead_letters: list               # one example per reason (read_dead_letters)
    unattributed_counts: list         # error_counts rows without a symbol (ingest time)
    clean_rows_read: int
    files: list | None                # summary.json "files", or None when the run recorded none
    settings: dict | None = None      # summary.json "settings" (beam_pipeline/settings.py)
    grid: "TrustGrid | None" = None   # symbol x hour (or day) trust, streams in report order
    book_checks: bool = False         # the run rebuilt and checked books (--book_checks)
    has_status: bool = False          # status/ has rows: where each symbol stands


def _by_stream(reports: dict, name: str) -> StreamReport:
    if name not in reports:
        reports[name] = StreamReport(name)
    return reports[name]


def _add_clean(reports: dict, clean: CleanRows, window_ms: int) -> None:
    if len(clean) == 0:
        return
    order = np.argsort(clean.stream, kind="stable")
    bounds = np.searchsorted(clean.stream[order], np.arange(len(clean.streams) + 1))
    for code, name in enumerate(clean.streams):
        rows = order[bounds[code]:bounds[code + 1]]
        if len(rows) == 0:
            continue
        stream = _by_stream(reports, name)
        t, seg, anch = clean.time[rows], clean.segment_id[rows], clean.anchored[rows]
        stream.clean_rows = len(rows)
        stream._extend_span(int(t.min()), int(t.max()))
        starts, ends, seg_anchored = _segment_extents(t, seg, anch)
        stream.segments, stream.anchored_segments = len(starts), int(seg_anchored.sum())
        stream.covered_ms = union_length(starts, ends)
        stream.anchored_ms = union_length(starts[seg_anchored], ends[seg_anchored])
        windows, counts = np.unique(t - t % window_ms, return_counts=True)
        stream.events_per_window = dict(zip(windows.tolist(), counts.tolist()))
        stream.segment_starts, stream.segment_ends = starts, ends
        stream.segment_anchored = seg_anchored


def _bucket_rows(stream: StreamReport, max_buckets: int) -> None:
    span = max(stream.span_ms, 1)
    stream.bucket_ms = choose_bucket(span, max_buckets)
    stream.start_ms = (stream.first_ms or 0) - (stream.first_ms or 0) % stream.bucket_ms
    length = (((stream.last_ms or 0) - stream.start_ms) // stream.bucket_ms) + 1
    first = (stream.segment_starts - stream.start_ms) // stream.bucket_ms
    last = (stream.segment_ends - stream.start_ms) // stream.bucket_ms
    stream.anchored_buckets = _spanned(first, last, stream.segment_anchored, length)
    stream.unanchored_buckets = _spanned(first, last, ~stream.segment_anchored, length)


def _spanned(first: np.ndarray, last: np.ndarray, which: np.ndarray, length: int) -> np.ndarray:
    """Buckets covered by any interval [first, last] (bucket indexes) of those selected."""
    steps = np.zeros(length + 1, np.int64)
    np.add.at(steps, first[which], 1)
    np.add.at(steps, last[which] + 1, -1)
    return np.cumsum(steps[:-1]) > 0


def build(output: str, max_buckets: int = 720) -> Report:
    """Everything the report shows, read from `output`."""
    summary = _json_file(_join(output, "summary.json"))
    if summary is None:
        raise NoOutputs(f"no summary.json under {output}: not a feedcheck output folder, or the "
                        f"job has not written its first summary yet")
    thresholds = load_thresholds(output, summary)
    window_ms = int(thresholds.error_window_s * 1000)
    streams: dict = {}
    clean = read_clean_rows(output)
    _add_clean(streams, clean, window_ms)
    for row in readback.read(output, GAPS).to_pylist():
        stream = _by_stream(streams, f"{row['exchange']}:{row['market']}:{row['symbol']}")
        time = _ms(row["event_time"])
        stream.gaps.append((time, row["gap_class"], row["gap_size"], row["resolution"]))
        stream._extend_span(time)
    for row in readback.read(output, CORRUPT_PERIODS).to_pylist():
        stream = _by_stream(streams, f"{row['exchange']}:{row['market']}:{row['symbol']}")
        start, end = _ms(row["start_time"]), _ms(row["end_time"])
        stream.corrupt.append((start, end, row["reason"], row["start_id"], row["end_id"]))
        stream._extend_span(start, end)
    # The symbols are the keys that had depth data (clean rows, gaps, corrupt periods). Counts of
    # records with no such key (a rejected record's unknown market or exchange, no symbol at
    # all) are errors without a symbol; their dead letters stay in the dead-letter section.
    unattributed = []
    for row in read_error_counts(output):
        if stream_of(row) in streams:
            streams[stream_of(row)].error_counts.append(row)
        else:
            unattributed.append(row)
    for alert in read_alerts(output):
        if stream_of(alert) in streams:
            streams[stream_of(alert)].alerts.append(alert)
    dead_letters, letters_by_stream = read_dead_letters(output)
    for name, count in letters_by_stream.items():
        if name in streams:
            streams[name].dead_letters += count
    has_status = False
    for row in readback.read_status(output).to_pylist():
        name = stream_of(row)
        if name in streams:
            streams[name].status = row
            has_status = True
    for stream in streams.values():
        _bucket_rows(stream, max_buckets)
        stream.verified_ms = _verified(stream)
    files = summary.get("files")
    ordered = sorted(streams.values(), key=StreamReport.severity)
    return Report(output, summary, thresholds, ordered,
                  dead_letters, unattributed, len(clean),
                  files if isinstance(files, list) else None,
                  summary.get("settings") if isinstance(summary.get("settings"), dict) else None,
                  trust_grid(ordered), isinstance(summary.get("book_checks"), dict), has_status)


def conservation(summary: dict) -> dict:
    """The conservation law, term by term: input = clean + ignored + duplicates + superseded +
    dead letters."""
    terms = {name: summary.get(name, 0) for name, _ in RECORD_KINDS if name != "dead_letters"}
    terms["dead_letters"] = sum(summary.get("dead_letters", {}).values())
    accounted = sum(terms.values())
    return {"terms": terms, "accounted": accounted, "input": summary.get("input_records", 0),
            "balanced": accounted == summary.get("input_records", 0)}


# Bytes of a dead letter's payload kept for its example (the page shows fewer).
EXAMPLE_PAYLOAD_BYTES = 1024


def read_dead_letters(output: str) -> tuple[list[dict], dict]:
    """dead_letter/, each id (readback.KEYS["dead_letter"]) once, first written kept, streamed
    file by file: -> (one example per reason, most frequent first, with its count and the first
    EXAMPLE_PAYLOAD_BYTES of its payload; dead letters per stream). A payload is remembered by its
    digest, so a run with many oversize records does not hold their bytes."""
    seen, examples, counts, by_stream = set(), {}, {}, {}
    for path in _files(output, DEAD_LETTER):
        with FileSystems.open(path) as handle:
            for letter in fastavro.reader(handle):
                payload = letter.get("payload") or b""
                key = (letter["reason"], letter["stage"], letter["source"],
                       hashlib.blake2b(payload, digest_size=16).digest())
                if key in seen:
                    continue
                seen.add(key)
                reason = letter["reason"]
                counts[reason] = counts.get(reason, 0) + 1
                if letter.get("symbol"):
                    name = stream_of(letter)
                    by_stream[name] = by_stream.get(name, 0) + 1
                if reason not in examples:
                    examples[reason] = {
                        "reason": reason, "stage": letter["stage"], "source": letter["source"],
                        "message": letter["message"], "payload": payload[:EXAMPLE_PAYLOAD_BYTES],
                        "payload_bytes": len(payload)}
    ordered = sorted(counts, key=lambda r: (-counts[r], r))
    return [dict(examples[reason], count=counts[reason]) for reason in ordered], by_stream


# ---- the trust grid: symbol x hour (or day) -----------------------------------------------------

MINUTE_MS = 60_000
HOUR_MS, DAY_MS = 3_600_000, 86_400_000
GRID_HOURS = 72                  # more active hours than this: a cell per day
GREY, GREEN, AMBER, RED = 0, 1, 2, 3     # a cell is its worst minute
TRUST_NAMES = {GREY: "grey", GREEN: "green", AMBER: "amber", RED: "red"}
# Per minute, what makes it red or amber (the reasons a cell's title lists).
RED_REASONS = ("corrupt period", "medium, large or reset gap", "no data")
AMBER_REASONS = ("unanchored", "small gap")


@dataclass
class TrustGrid:
    """Per symbol (report order) and column (a cell of cell_ms starting at columns[j], ms): its
    trust level (its worst minute) and its minutes by reason {reason: minutes}. Only the cells in
    some symbol's span are columns: captures days apart do not share a row of empty cells."""

    cell_ms: int
    columns: list                # start (ms) of each column's cell, ascending
    levels: list                 # per stream: np.ndarray of levels, one per column
    reasons: list                # per stream: per column {reason: minutes}

    @property
    def cells(self) -> int:
        return len(self.columns)


def minute_trust(stream: StreamReport):
    """-> (first minute (ms), per minute of the symbol's span: level, and per reason a bool per
    minute). Green: inside an anchored segment and clean; amber: only unanchored segments, or a
    small gap; red: a corrupt period, a medium, large or reset gap, or no segment at all."""
    first = stream.first_ms - stream.first_ms % MINUTE_MS
    length = (stream.last_ms - first) // MINUTE_MS + 1
    starts = (stream.segment_starts - first) // MINUTE_MS
    ends = (stream.segment_ends - first) // MINUTE_MS
    every = np.ones(len(starts), bool)
    covered = _spanned(starts, ends, every, length)
    flags = {"no data": ~covered,
             "unanchored": covered & ~_spanned(starts, ends, stream.segment_anchored, length)}
    corrupt = np.zeros(length, bool)
    for start, end, *_ in stream.corrupt:
        low = ((start if start is not None else end) - first) // MINUTE_MS
        corrupt[max(low, 0):min((end - first) // MINUTE_MS, length - 1) + 1] = True
    flags["corrupt period"] = corrupt
    small, big = np.zeros(length, bool), np.zeros(length, bool)
    for time, gap_class, _, _ in stream.gaps:
        if time is not None:
            (small if gap_class == "small" else big)[(time - first) // MINUTE_MS] = True
    flags["small gap"], flags["medium, large or reset gap"] = small, big
    red = flags["corrupt period"] | flags["medium, large or reset gap"] | flags["no data"]
    amber = ~red & (flags["unanchored"] | flags["small gap"])
    level = np.where(red, RED, np.where(amber, AMBER, GREEN))
    return first, level, flags


def _active_cells(timed: list, cell_ms: int) -> list:
    """Starts of the cells (of cell_ms) that some symbol's span touches, ascending."""
    found = set()
    for stream in timed:
        first = stream.first_ms - stream.first_ms % cell_ms
        found.update(range(first, stream.last_ms + 1, cell_ms))
    return sorted(found)


def trust_grid(streams: list) -> TrustGrid | None:
    """The symbol x hour grid; a cell per day when the symbols' spans touch more than
    GRID_HOURS hours."""
    timed = [s for s in streams if s.first_ms is not None]
    if not timed:
        return None
    cell_ms = HOUR_MS
    columns = _active_cells(timed, HOUR_MS)
    if len(columns) > GRID_HOURS:
        cell_ms, columns = DAY_MS, _active_cells(timed, DAY_MS)
    index = {start: j for j, start in enumerate(columns)}
    levels, reasons = [], []
    for stream in streams:
        level = np.full(len(columns), GREY, np.int64)
        why = [{} for _ in columns]
        if stream.first_ms is not None:
            first, minute_level, flags = minute_trust(stream)
            times = first + np.arange(len(minute_level), dtype=np.int64) * MINUTE_MS
            starts, inverse = np.unique(times - times % cell_ms, return_inverse=True)
            cell = np.array([index[start] for start in starts.tolist()], np.int64)[inverse.reshape(-1)]
            np.maximum.at(level, cell, minute_level)
            for name, flag in flags.items():
                counts = np.bincount(cell[flag], minlength=len(columns))
                for j in np.flatnonzero(counts):
                    why[j][name] = int(counts[j])
        levels.append(level)
        reasons.append(why)
    return TrustGrid(cell_ms, columns, levels, reasons)
