"""Counter names of the run summary, and how a count is attributed to the file it came from.

A tally is (name, n) or ((name, file), n): the second form counts towards the total of `name` and
towards that file's row of the summary's per-file table. One element per count either way, so the
per-file table costs no extra Beam element per event.
"""
from __future__ import annotations

from typing import Optional

INPUT_RECORDS = "input_records"
CLEAN_RECORDS = "clean_records"
IGNORED = "ignored"
DUPLICATES = "duplicates"
SUPERSEDED = "superseded"
CONTROL = "control"                # control records (a collector's disconnect markers)
RECONNECTS = "reconnects"          # connect lines after the first, disconnect markers: a gap may follow
DEAD_LETTERS = "dead_letters."     # + reason
FORMAT = "format."                 # + the format detected for the file (one per file read)
SYMBOLS = "symbols"
SKIPPED_FILES = "skipped_files"    # input files not read (--skip_files)


def key(name: str, file: Optional[str]):
    """The tally key of `name`, attributed to `file` when there is one."""
    return (name, file) if file else name


def file_of_source(source: str) -> Optional[str]:
    """The file of a record's source "path:line"; None for a Pub/Sub message ("pubsub:...")."""
    if source.startswith("pubsub:"):
        return None
    path, _, line = source.rpartition(":")
    return path if path and line.isdigit() else None
