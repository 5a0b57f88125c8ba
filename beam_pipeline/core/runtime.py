"""Process-wide settings for workers that do bulk work in Python.

CPython's default collector runs a young-generation pass every 700 net allocations. The bulk
stages (decoding a batch, replaying a run) allocate millions of small objects that all live until
the batch or run is done, so the collector keeps traversing objects that cannot be garbage: with
the default thresholds it took ~20 % of a batch run's CPU (bench/README.md). Nothing here creates
reference cycles at that rate, so collecting less often costs little memory.
"""
from __future__ import annotations

import datetime
import gc
import logging
import threading
import time

BULK_GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc_for_bulk_work() -> None:
    """Raise the collector's thresholds (idempotent; called from DoFn.setup). Never lowers
    thresholds someone else raised further."""
    if gc.get_threshold()[0] < BULK_GC_THRESHOLDS[0]:
        gc.set_threshold(*BULK_GC_THRESHOLDS)
        logging.getLogger(__name__).debug("gc thresholds set to %s", BULK_GC_THRESHOLDS)


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (ingest times, dead-letter stamps)."""
    return int(time.time() * 1000)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch -> ISO-8601 UTC with milliseconds, "2023-11-14T22:14:00.000Z":
    the one time format of every JSON output (Parquet outputs use timestamp[ms, UTC])."""
    moment = _EPOCH + datetime.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


_draining = threading.Event()


def begin_drain() -> None:
    """This process's streaming job was asked to stop: it reads no more input and finishes what
    it has (runners/direct.py). Processing time then runs fast, so stages that wait on it know a
    silence now is the stop, not a stalled symbol."""
    _draining.set()


def draining() -> bool:
    return _draining.is_set()


def end_drain() -> None:
    _draining.clear()
