"""What this process has durably written: the ledger that lets a streaming job acknowledge its
input only once every output row it produced is on disk.

On DirectRunner the whole graph runs in this process, and its executor pulls more input only when
every bundle of the earlier pulls has been processed (Beam 2.75, executor._MonitorTask): at that
moment a pull's records are either written, waiting in an output folder's buffer for the next
flush, or held in a key's state (a reorder wait, a wait for a snapshot). This ledger sees both:

- every output folder counts the elements it was handed and the elements it has written to a
  finished file; `mark()` notes the handed counts, `is_written(mark)` says whether every folder
  has since written at least that many (a folder writes its buffer whole, in arrival order);
- the live sequencer reports, per key, the oldest publish time of the messages whose events that
  key may hold (`hold` / `release`): a pull whose newest publish time is older than every key's
  is not held anywhere.

runners/direct.py acknowledges a pull once both say so, and renews the leases of the rest. On
Flink and Dataflow the counters are kept and unused: those runners acknowledge with their own
checkpoints. Beam-free, and no Beam state: this is the process's own memory, reset per job."""
from __future__ import annotations

import threading
from collections import Counter
from typing import Optional

_lock = threading.Lock()
_handed: Counter = Counter()      # folder -> elements handed to its writer
_written: Counter = Counter()     # folder -> elements in files that are finished
_held: dict = {}                  # key -> oldest publish time (ms) of messages it may hold events of


def handed(folder: str, count: int = 1) -> None:
    with _lock:
        _handed[folder] += count


def written(folder: str, count: int) -> None:
    with _lock:
        _written[folder] += count


def mark() -> dict:
    """The handed counts now: what must be written before what was handed so far is on disk."""
    with _lock:
        return dict(_handed)


def is_written(noted: dict) -> bool:
    with _lock:
        return all(_written[folder] >= count for folder, count in noted.items())


def unwritten() -> int:
    """Elements handed to a folder and not yet in a finished file."""
    with _lock:
        return sum(max(0, _handed[folder] - _written[folder]) for folder in _handed)


def hold(key, published_ms: int) -> None:
    """`key` holds events, possibly from a message published at `published_ms`."""
    if not published_ms:
        return                    # input without publish times is not acknowledged by this ledger
    with _lock:
        before = _held.get(key)
        _held[key] = published_ms if before is None else min(before, published_ms)


def release(key) -> None:
    """`key` holds no event any more."""
    with _lock:
        _held.pop(key, None)


def oldest_held() -> Optional[int]:
    with _lock:
        return min(_held.values()) if _held else None


def held_keys() -> int:
    with _lock:
        return len(_held)


def reset() -> None:
    with _lock:
        _handed.clear()
        _written.clear()
        _held.clear()
