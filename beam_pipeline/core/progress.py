"""Counters of a run's progress in this process: records read, clean rows and dead letters written.

Stages add to them as they work; the command line shows them as a progress line when the workers
run in its own process (DirectRunner, Flink with LOOPBACK). Elsewhere (Dataflow, remote Flink
workers) they stay in the workers and the runner's own UI shows progress.
"""
from __future__ import annotations

import threading

READ, CLEAN, DEAD = "read", "clean", "dead"
_counts = {READ: 0, CLEAN: 0, DEAD: 0}
_lock = threading.Lock()


def add(name: str, count: int) -> None:
    with _lock:
        _counts[name] += count


def snapshot() -> dict:
    with _lock:
        return dict(_counts)


def reset() -> None:
    with _lock:
        for name in _counts:
            _counts[name] = 0
