"""Counter names of the run summary, and how a count is attributed to the file it came from.

A tally is (name, n) or ((name, file), n): the second form counts towards the total of `name` and
towards that file's row of the summary's per-file table. One element per count either way, so the
per-file table costs no extra Beam element per event.
"""
from __future__ import annotations

from collections import Counter
from itertools import repeat
from typing import Optional

INPUT_RECORDS = "input_records"
CLEAN_RECORDS = "clean_records"
IGNORED = "ignored"
IGNORED_BY = "ignored."            # + the reason (model.Ignored): ignored records by reason, per file
UNVERIFIED = "unverified_records"  # decoded events whose continuity no rule checks (model.UNVERIFIED_RULES)
DUPLICATES = "duplicates"
SUPERSEDED = "superseded"
CONTROL = "control"                # control records (a collector's disconnect markers)
RECONNECTS = "reconnects"          # connect lines after the first, disconnect markers: a gap may follow
CONNECTION_BREAKS = "connection_breaks"  # skips in a connection's own numbers (core/connections.py):
                                   # not records, outside the conservation law
DEAD_LETTERS = "dead_letters."     # + reason
FORMAT = "format."                 # + the format detected for the file (one per file read)
SYMBOLS = "symbols"
BOOK_CHECKS = "book_checks."       # + what the book checks counted (core/books: BookWatch.tallies):
                                   # not record outcomes, outside the conservation law
SKIPPED_FILES = "skipped_files"    # input files not read (--skip_files)
STILL_BEING_WRITTEN = "still_being_written"   # files whose young torn tail was left out (--quiet_seconds)


def key(name: str, file: Optional[str]):
    """The tally key of `name`, attributed to `file` when there is one."""
    return (name, file) if file else name


def file_of_source(source: str) -> Optional[str]:
    """The file of a record's source "path:line"; None for a Pub/Sub message ("pubsub:...")."""
    if source.startswith("pubsub:"):
        return None
    path, _, line = source.rpartition(":")
    return path if path and line.isdigit() else None


_DIGITS = "0123456789"
_FEW_PREFIXES = 16


def counts_by_file(name: str, sources: list) -> Counter:
    """Counter of key(name, file_of_source(s)) over `sources`, in bulk for sources that share a few
    "path:" prefixes (a run's clean rows: one line number each, mostly one file), where it costs a
    C-level strip and a Counter per source instead of a Python call (bench/README.md).

    Exact: s minus its trailing ASCII digits is k; if digits were stripped, file_of_source(s) is
    file_of_source(k + "0") (the line keeps or loses isdigit() alike), else it is file_of_source(k).
    Sources without such prefixes (Pub/Sub ids) are attributed one by one."""
    prefixes = Counter(map(str.rstrip, sources, repeat(_DIGITS)))
    if len(prefixes) > _FEW_PREFIXES:
        return Counter(key(name, file_of_source(source)) for source in sources)
    counts: Counter = Counter()
    for prefix, n in prefixes.items():
        bare = sources.count(prefix)          # sources that had no digits to strip
        if n > bare:
            counts[key(name, file_of_source(prefix + "0"))] += n - bare
        if bare:
            counts[key(name, file_of_source(prefix))] += bare
    return counts
