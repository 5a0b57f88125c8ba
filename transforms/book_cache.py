"""Streaming: each key's rebuilt book (core/books/watch.py BookWatch) lives in this process's
memory, never serialized per message; the key's stored state carries only a small version of it.

A version is (lineage, count): `lineage` is drawn at random when a key's book starts in this
process, `count` goes up by one on every element that may change it. The element's state says
which version of the book its history has; the cache answers only for exactly that version. After
a runner restore (Flink rolls state back to a checkpoint), a move of the key to another worker or
a restart, the versions differ: the cached book is dropped and the key has no book until its next
snapshot anchors it again (its deltas meanwhile are counted as unchecked: core/books/tracker.py),
so a restore can never check deltas against a book from another history. Test: tests/beam/
test_book_cache.py.
"""
from __future__ import annotations

import threading
import uuid
from typing import Optional

from beam_pipeline.core.books.watch import BookWatch

_lock = threading.Lock()
_books: dict = {}            # key -> (version, BookWatch)


def checkout(key: tuple, version: Optional[list], snapshots=None) -> tuple:
    """The key's watch at `version` (what its stored state says), and the version to store for
    it from now on. A cached watch of any other version is dropped: a new one starts unanchored."""
    key = tuple(key)
    with _lock:
        found = _books.pop(key, None)
    if found is not None and version is not None and list(found[0]) == list(version):
        watch = found[1]
        lineage, count = version
    else:
        watch = BookWatch(key, snapshots=snapshots)
        lineage, count = uuid.uuid4().hex, 0
    return watch, [lineage, count + 1]


def checkin(key: tuple, version: list, watch: BookWatch) -> None:
    """The watch after the element's outputs were observed, at the version stored for it."""
    with _lock:
        _books[tuple(key)] = (list(version), watch)


def forget(key: tuple) -> None:
    with _lock:
        _books.pop(tuple(key), None)


def clear() -> None:
    """Drops every cached book (tests: what a restart or a restore on another process does)."""
    with _lock:
        _books.clear()
