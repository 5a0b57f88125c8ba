"""Where the files of an output folder live, and which of them a reader reads.

Two layouts, one reader:

  batch       <folder>/part-....<suffix>                       (flat)
  streaming   <folder>/date=YYYY-MM-DD/part-<flush time>-<tag><suffix>

A streaming job writes each flush of a folder as one file in the partition of the flush's UTC
processing-time date (transforms/sinks.py: WriteFlush); `python -m beam_pipeline compact` rewrites
the partitions of closed days (beam_pipeline/compact.py). A file is written under a hidden name
(".<name>.inprogress") and renamed when complete, and compaction keeps its journal in
"_compact.json": readers skip every path with a component that starts with "." or "_", as pyarrow's
dataset discovery does, and a hidden name never ends with a folder's suffix, so DuckDB's
read_parquet('<folder>/**/*.parquet') never sees one either.
"""
from __future__ import annotations

import re
import time
import uuid

PARTITION_KEY = "date"
PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})")
EMPTY_FILE = "part-empty"       # + the folder's suffix: the file a folder with no rows holds
COMPACTED = "-compact-"         # in the name of every file compaction wrote
IN_PROGRESS = ".inprogress"     # a file being written: "." + its final name + this


def partition_of(seconds: float) -> str:
    """The partition folder of a flush at `seconds` (epoch, UTC): "date=YYYY-MM-DD"."""
    return f"{PARTITION_KEY}={time.strftime('%Y-%m-%d', time.gmtime(seconds))}"


def _stamp(seconds: float) -> str:
    """YYYYMMDDTHHMMSSmmm, UTC: sorts as the time does."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f"{int(seconds * 1000) % 1000:03d}"


def flush_file_name(seconds: float, suffix: str) -> str:
    """part-<write time, ms>-<random tag><suffix>: unique per flush, in write order by name (the
    order readback keeps the first written of an id by)."""
    return f"part-{_stamp(seconds)}-{uuid.uuid4().hex[:8]}{suffix}"


def compacted_file_name(day: str, tag: str, index: int, suffix: str) -> str:
    """part-<day>T000000000-compact-<tag>-<n><suffix>: sorts before every flush file of its day, so a
    file that lands in the partition after its compaction (written later) still sorts after it."""
    return f"part-{day.replace('-', '')}T000000000{COMPACTED}{tag}-{index:04d}{suffix}"


def in_progress_name(name: str) -> str:
    return f".{name}{IN_PROGRESS}"


def empty_file_name(suffix: str) -> str:
    return EMPTY_FILE + suffix


def is_hidden(relative_path: str) -> bool:
    """A path (relative to its output folder) readers skip: a component starting with . or _."""
    return any(part.startswith((".", "_")) for part in relative_path.split("/") if part)


def _relative(folder: str, path: str) -> str:
    prefix = folder.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def _order(relative_path: str) -> tuple:
    """Flat files first (a batch run's, part-empty), then the date partitions, oldest first, each
    in name order (write order)."""
    return (relative_path.count("/") > 0, relative_path)


def data_files(folder: str, suffix: str) -> list[str]:
    """Every readable file of an output folder, in both layouts (flat and date-partitioned;
    found by a recursive glob), hidden paths skipped, in write order: flat files, then each
    partition by date, each by name. Any Beam filesystem."""
    from apache_beam.io.filesystems import FileSystems

    folder = folder.rstrip("/")
    try:
        matched = FileSystems.match([f"{folder}/**{suffix}"])[0].metadata_list
    except Exception:       # no such folder (local filesystems raise)
        return []
    found = {}
    for meta in matched:
        relative = _relative(folder, meta.path)
        if relative.endswith(suffix) and not is_hidden(relative):
            found[relative] = meta.path
    return [found[relative] for relative in sorted(found, key=_order)]


def partition_date(relative_path: str):
    """The partition date ("YYYY-MM-DD") of a path relative to its folder, or None (flat)."""
    head = relative_path.split("/", 1)[0]
    match = PARTITION.fullmatch(head)
    return match.group(1) if match and "/" in relative_path else None
