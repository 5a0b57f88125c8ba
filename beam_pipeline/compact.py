"""Compaction of a streaming job's closed date partitions into few files sized for query engines.

    python -m beam_pipeline compact out/live                       # every day before today (UTC)
    python -m beam_pipeline compact out/live --before 2026-05-01   # days before 1 May only
    python -m beam_pipeline compact out/live --target_file_mb 128

A streaming job writes one file per folder per flush (--output_flush_seconds, 60 s: 1,440 files a
folder a day) into <folder>/date=YYYY-MM-DD/, the UTC date of the flush. This rewrites each
partition of a day that has ended (before --before, never today's: a running job writes there)
into files of about --target_file_mb, in every folder: Parquet (every folder but dead_letter) and
Avro (dead_letter).

Rows written more than once (a restored job writes the files since its checkpoint again) are kept
once: the first written of each id, by readback's keys (beam_pipeline/readback.py KEYS, its
first_of_each; an error count's pane and an alert's level are part of their ids), so readback
reads the same rows before and after. Rows keep their order of writing; only
duplicates inside one partition are dropped (readback still drops those across days).

Atomic, per partition, in this order; a crash anywhere loses no row, and readback reads each row
once at every step:
  1. the new files are written under hidden names (.<name>.inprogress: no reader sees them);
  2. a journal, _compact.json, lists the files replaced and the new files (written hidden, renamed);
  3. the new files are renamed to their names (readback sees both copies and reads each id once);
  4. the files replaced are removed, then the journal.
The next run finds a journal and completes steps 3 and 4 first; hidden files of a compaction that
crashed before its journal are removed.
Two compactions of one output folder must not run at once.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import sys
import uuid

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline import readback
from beam_pipeline.options import add_compact_arguments
from transforms import layout
from transforms.sinks import DEAD_LETTER_SCHEMA, empty_file_bytes
from transforms.tags import ALL_FOLDER_SUFFIX

JOURNAL = "_compact.json"
ROW_GROUP_ROWS = 65536          # a Parquet row group holds at most this many rows
EXIT_OK, EXIT_USAGE = 0, 2


class UsageError(Exception):
    pass


def cutoff_date(before: datetime.datetime | None, now: datetime.datetime) -> datetime.date:
    """The first day NOT compacted: partitions of days before it have ended before `before`, and
    today's (the one a running job writes) is never among them."""
    today = now.astimezone(datetime.timezone.utc).date()
    if before is None:
        return today
    return min(before.astimezone(datetime.timezone.utc).date(), today)


def parse_time(text: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--before: not an ISO-8601 date or time: {text!r} "
                         "(e.g. 2026-05-01 or 2026-05-01T12:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


# ---- writing files of about the target size -----------------------------------------------------

class _ParquetFiles:
    """Tables in -> Parquet files of about `target` bytes (row groups of at most ROW_GROUP_ROWS
    rows, or about `target` bytes of Arrow memory)."""

    def __init__(self, schema: pa.Schema, target: int):
        self.schema, self.target, self.files = schema, target, []
        self._open_new()

    def _open_new(self):
        self.buffer, self.writer, self.pending, self.rows, self.bytes = io.BytesIO(), None, [], 0, 0

    def add(self, table: pa.Table):
        if table.num_rows:
            self.pending.append(table.cast(self.schema))
            self.rows, self.bytes = self.rows + table.num_rows, self.bytes + table.nbytes
            if self.rows >= ROW_GROUP_ROWS or self.bytes >= self.target:
                self._write_groups()

    def _write_groups(self):
        if not self.pending:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.buffer, self.schema, compression="zstd")
        self.writer.write_table(pa.concat_tables(self.pending).combine_chunks(),
                                row_group_size=ROW_GROUP_ROWS)
        self.pending, self.rows, self.bytes = [], 0, 0
        if self.buffer.tell() >= self.target:
            self._close()

    def _close(self):
        self.writer.close()
        self.files.append(self.buffer.getvalue())
        self._open_new()

    def finish(self) -> list[bytes]:
        self._write_groups()
        if self.writer is not None:
            self._close()
        return self.files


class _AvroFiles:
    """Dead letters in -> Avro files (the sink's schema and codec) of about `target` bytes."""

    def __init__(self, target: int):
        self.target, self.files, self.writer = target, [], None

    def add(self, record: dict):
        if self.writer is None:
            self.buffer = io.BytesIO()
            self.writer = fastavro.write.Writer(self.buffer, DEAD_LETTER_SCHEMA, codec="deflate")
        self.writer.write(record)
        if self.buffer.tell() >= self.target:       # blocks are flushed as they fill
            self._close()

    def _close(self):
        self.writer.flush()
        self.files.append(self.buffer.getvalue())
        self.writer = None

    def finish(self) -> list[bytes]:
        if self.writer is not None:
            self._close()
        return self.files


# ---- one folder's files: their ids, and their kept rows --------------------------------------

def _parquet(path: str, columns=None) -> pa.Table:
    """One Parquet file as written (no partition column added from its path)."""
    source = path if "://" not in path else io.BytesIO(readback.read_bytes(path))
    return pq.ParquetFile(source).read(columns=columns)


def _id_table(name: str, path: str) -> pa.Table:
    """The ids of one file's rows, in order: readback's key columns."""
    keys = readback.KEYS[name]
    if readback.parquet_schema(name) is not None:
        return _parquet(path, list(keys))
    data = readback.read_bytes(path)
    return readback.records_table(readback.records(name, data)).select(list(keys))


def _kept_rows(name: str, paths: list[str]) -> tuple[list, int]:
    """-> (per file, the indices of its rows to keep; rows in all files). The first written of
    each id is kept (readback.first_of_each over the files in write order). Only the ids of a
    partition are in memory at once, never its rows."""
    ids = [_id_table(name, path) for path in paths]
    sizes = np.array([table.num_rows for table in ids], np.int64)
    total = int(sizes.sum())
    if total == 0:
        return [np.zeros(0, np.int64) for _ in paths], 0
    keys = list(readback.KEYS[name])
    nonempty = [table for table in ids if table.num_rows]
    first = readback.first_of_each(pa.concat_tables(nonempty, promote_options="default"), keys)
    first = first.to_numpy()                                    # ascending: rows in write order
    ends = np.cumsum(sizes)
    cuts = np.searchsorted(first, np.concatenate([[0], ends]))
    return [first[cuts[i]:cuts[i + 1]] - (ends[i] - sizes[i]) for i in range(len(paths))], total


def _rewrite(name: str, paths: list[str], kept: list, target: int) -> list[bytes]:
    """The kept rows of `paths`, in order, as files of about `target` bytes."""
    schema = readback.parquet_schema(name)
    if schema is not None:
        out = _ParquetFiles(schema, target)
        for path, rows in zip(paths, kept):
            if len(rows):
                out.add(_parquet(path).take(pa.array(rows, pa.int64())))
    else:
        out = _AvroFiles(target)
        for path, rows in zip(paths, kept):
            if len(rows):
                records = readback.records(name, readback.read_bytes(path))
                for row in rows:
                    out.add(records[row])
    return out.finish()


# ---- one partition, atomically -----------------------------------------------------------------

def _write(path: str, data: bytes) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)


def _days(folder: str) -> list[str]:
    """The days of one output folder's date partitions (any holding a file, hidden ones too)."""
    folder = folder.rstrip("/")
    days = set()
    for meta in FileSystems.match([f"{folder}/**"])[0].metadata_list:
        relative = meta.path[len(folder) + 1:]
        day = layout.partition_date(relative)
        if day is not None and relative.count("/") == 1:
            days.add(day)
    return sorted(days)


def _names(partition: str) -> list[str]:
    """Every file name in one partition, hidden ones too."""
    return [meta.path.rsplit("/", 1)[1]
            for meta in FileSystems.match([f"{partition}/*"])[0].metadata_list]


def _is_own_temp(name: str) -> bool:
    """A hidden file an earlier compaction was writing (never a running job's flush)."""
    return name.startswith(".") and name.endswith(layout.IN_PROGRESS) and (
        layout.COMPACTED in name or name == layout.in_progress_name(JOURNAL))


def finish_interrupted(partition: str) -> bool:
    """Completes a compaction of `partition` that stopped after writing its journal (renames the
    new files still hidden, removes the replaced ones, then the journal); removes the hidden files
    of one that stopped before. True when a journal was found."""
    journal_path = f"{partition}/{JOURNAL}"
    found = FileSystems.exists(journal_path)
    if found:
        with FileSystems.open(journal_path) as handle:
            journal = json.loads(handle.read())
        for name in journal["outputs"]:
            temp = f"{partition}/{layout.in_progress_name(name)}"
            if FileSystems.exists(temp):
                FileSystems.rename([temp], [f"{partition}/{name}"])
        gone = [f"{partition}/{name}" for name in journal["sources"]
                if name not in journal["outputs"]]
        gone = [path for path in gone if FileSystems.exists(path)]
        if gone:
            FileSystems.delete(gone)
        FileSystems.delete([journal_path])
    strays = [f"{partition}/{name}" for name in _names(partition) if _is_own_temp(name)]
    if strays:
        FileSystems.delete(strays)
    return found


class PartitionCompaction:
    """One partition's compaction, step by step (compact_partition runs them all; a test may stop
    after any, as a crash would)."""

    def __init__(self, folder: str, name: str, day: str, target_bytes: int):
        self.folder, self.name, self.day, self.target = folder.rstrip("/"), name, day, target_bytes
        self.partition = f"{self.folder}/{layout.PARTITION_KEY}={day}"
        self.suffix = ALL_FOLDER_SUFFIX[name]
        self.sources, self.outputs, self.rows_before, self.rows_after = [], [], 0, 0

    def plan(self) -> bool:
        """The files to replace: every readable file of the partition. False when there is
        nothing to do (only compacted files and empty ones)."""
        paths = layout.data_files(self.partition, self.suffix)
        names = [path.rsplit("/", 1)[1] for path in paths]
        empty = layout.empty_file_name(self.suffix)
        if all(layout.COMPACTED in n or n == empty for n in names):
            return False
        self.sources = names
        return True

    def write_new_files(self) -> None:
        """Step 1: the kept rows as new files under hidden names."""
        paths = [f"{self.partition}/{name}" for name in self.sources]
        kept, self.rows_before = _kept_rows(self.name, paths)
        self.rows_after = sum(len(rows) for rows in kept)
        files = _rewrite(self.name, paths, kept, self.target) or [empty_file_bytes(self.name)]
        tag = uuid.uuid4().hex[:8]
        self.outputs = [layout.compacted_file_name(self.day, tag, index, self.suffix)
                        for index in range(len(files))]
        for name, data in zip(self.outputs, files):
            _write(f"{self.partition}/{layout.in_progress_name(name)}", data)

    def write_journal(self) -> None:
        """Step 2: what is replaced by what, written hidden and renamed into place."""
        temp = f"{self.partition}/{layout.in_progress_name(JOURNAL)}"
        _write(temp, json.dumps({"sources": self.sources, "outputs": self.outputs},
                                indent=1).encode())
        FileSystems.rename([temp], [f"{self.partition}/{JOURNAL}"])

    def swap(self) -> None:
        """Steps 3 and 4: the new files renamed into place, the replaced ones removed, the journal
        removed."""
        finish_interrupted(self.partition)

    def result(self) -> dict:
        return {"files_before": len(self.sources), "files_after": len(self.outputs),
                "rows_before": self.rows_before, "rows_after": self.rows_after}


def compact_partition(folder: str, name: str, day: str, target_bytes: int) -> dict | None:
    """Compacts one partition (after completing an interrupted compaction of it); None when there
    was nothing to compact."""
    job = PartitionCompaction(folder, name, day, target_bytes)
    finish_interrupted(job.partition)
    if not job.plan():
        return None
    job.write_new_files()
    job.write_journal()
    job.swap()
    return job.result()


def compact(output: str, before: datetime.datetime | None = None,
            target_bytes: int | None = None, now: datetime.datetime | None = None) -> dict:
    """Compacts every folder's partitions of days before cutoff_date(before, now). Returns, per
    folder: partitions compacted, skipped (nothing to do: already compacted, or empty) and left
    open (today's, or not before --before), files and rows before and after."""
    if target_bytes is None:
        target_bytes = int(_defaults().target_file_mb * 1_000_000)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    cutoff = cutoff_date(before, now).isoformat()
    report = {"cutoff": cutoff, "folders": {}}
    for name in ALL_FOLDER_SUFFIX:
        folder = f"{output.rstrip('/')}/{name}"
        totals = {"partitions": 0, "open_partitions": 0, "skipped_partitions": 0,
                  "files_before": 0, "files_after": 0, "rows_before": 0, "rows_after": 0}
        days = _days(folder)
        if not days:
            continue                     # no such folder, or no date partition (a batch run)
        for day in days:
            if day >= cutoff:
                totals["open_partitions"] += 1
                continue
            result = compact_partition(folder, name, day, target_bytes)
            if result is None:
                totals["skipped_partitions"] += 1
                continue
            totals["partitions"] += 1
            for key, value in result.items():
                totals[key] += value
        report["folders"][name] = totals
    return report


def _defaults():
    parser = argparse.ArgumentParser(add_help=False)
    add_compact_arguments(parser)
    return parser.parse_args(["-"])


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    result = _Parser(prog="feedcheck compact", allow_abbrev=False,
                     description="Rewrite the closed date partitions of a streaming job's output "
                                 "folders into few files of about --target_file_mb, each row "
                                 "once (readback's keys), atomically.")
    add_compact_arguments(result)
    return result


def main(argv: list[str]) -> int:
    try:
        try:
            args = parser().parse_args(argv)
        except SystemExit as done:            # --help
            return int(done.code or 0)
        before = parse_time(args.before) if args.before is not None else None
        if not args.target_file_mb > 0:
            raise UsageError(f"--target_file_mb must be > 0, not {args.target_file_mb}")
        if "://" not in args.output and not os.path.isdir(args.output):
            raise UsageError(f"no output folder {args.output}")
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    report = compact(args.output, before, int(args.target_file_mb * 1_000_000))
    print(json.dumps(report, indent=2))
    return EXIT_OK
