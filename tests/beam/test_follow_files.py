"""Following growing files (transforms/follow.py): the resumable pieces against their one-shot
originals, and the real command (streaming on DirectRunner, a watched folder) on a torn gzip member
and on an unterminated line, while the file is young and once it is quiet, against a batch run of
the same file."""
import gzip
import io
import json
import os
import threading
import time
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipeline.cli import main
from beam_pipeline.readback import read
from tests.beam.test_collector_files import _capture, _lines, _tear
from tests.tooling.streaming_job import (comparable, start_watching, stop_group, summary_of,
                                         wait_for, wait_written)
from transforms.follow import Torn, gzip_members
from transforms.read import LineSplitter, split_lines

QUIET = 4.0        # --quiet_seconds of the streaming runs here


# ---- the resumable pieces ---------------------------------------------------------------------

def _resume_everywhere(data: bytes):
    """Decompresses `data` the way a followed file is read: the file as it grows one byte at a
    time, each read resuming at the (offset, skip) the previous one left. Returns (bytes, torn)."""
    out, offset, skip, torn = b"", 0, 0, False
    for size in range(1, len(data) + 1):
        handle = io.BytesIO(data[:size])
        torn = False
        try:
            for kind, value in gzip_members(handle, offset, skip):
                if kind == "data":
                    out += value
                    skip += len(value)
                else:
                    offset, skip = value, 0
        except Torn:
            torn = True
    return out, torn


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4), st.integers(0, 3))
def test_gzip_members_read_as_the_file_grows_give_the_whole_file_once(members, padding):
    data = b"".join(gzip.compress(m) + b"\0" * padding for m in members)
    out, torn = _resume_everywhere(data)
    assert out == b"".join(members) and not torn
    # cut inside the last member: what it holds so far, and torn
    cut = data[:len(data) - padding - 3]
    out, torn = _resume_everywhere(cut)
    assert torn and b"".join(members).startswith(out)
    assert out == gzip_prefix(cut)


def gzip_prefix(data: bytes) -> bytes:
    """What Python's gzip gives of a cut file before its EOFError (a batch run's bytes)."""
    out = bytearray()
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
        try:
            while chunk := handle.read1(1 << 16):
                out += chunk
        except EOFError:
            pass
    return bytes(out)


def test_damage_is_an_error_not_a_torn_member():
    data = gzip.compress(b"a\n" * 100)
    damaged = data[:20] + bytes([data[20] ^ 0xFF]) + data[21:]
    with pytest.raises(zlib.error):
        list(gzip_members(io.BytesIO(damaged + gzip.compress(b"b\n")), 0, 0))
    with pytest.raises(zlib.error):                       # garbage after a member
        list(gzip_members(io.BytesIO(data + b"not gzip"), 0, 0))


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=400).map(lambda b: b.replace(b"\x00", b"\n")), st.data(),
       st.integers(4, 40))
def test_a_splitter_resumed_between_blocks_gives_split_lines(data, draw, limit):
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=6)))
    blocks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    lines, state = [], (0, b"", False)
    for block in blocks:                       # a new splitter per block, from the saved state
        splitter = LineSplitter(limit, *state)
        lines.extend(splitter.feed(block))
        state = (splitter.number, splitter.pending, splitter.oversized)
    rest = LineSplitter(limit, *state).rest()
    assert lines + ([rest] if rest else []) == list(split_lines([data], limit))


# ---- the real command on a watched folder -------------------------------------------------------

class Toucher(threading.Thread):
    """Keeps a file's mtime fresh, as a writer still writing it would."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.stopped = path, threading.Event()

    def run(self):
        while not self.stopped.wait(0.3):
            os.utime(self.path)


def _counted(out, records, **wanted):
    summary = summary_of(out)
    if summary and summary["input_records"] == records and summary["balanced"] and all(
            summary[k] == v for k, v in wanted.items()):
        return summary
    return None


def _follow_while_written_then_quiet(tmp_path, folder, path, records_young):
    """Watches `folder` while `path` is being written (young) for longer than QUIET, then lets it
    be quiet. Returns (summary while young, summary once quiet, the run's folder)."""
    out = str(tmp_path / "stream")
    toucher = Toucher(path)
    toucher.start()
    job = start_watching(str(folder), out, "--quiet_seconds", str(QUIET))
    try:
        young = wait_for(lambda: _counted(out, records_young), 90)
        assert young, (summary_of(out), open(out + ".log").read()[-3000:])
        time.sleep(QUIET + 2)                      # longer than the quiet time, still written
        still = summary_of(out)
        toucher.stopped.set()
        quiet = wait_for(lambda: _counted(out, records_young + 1), QUIET + 30)
        assert quiet, (summary_of(out), open(out + ".log").read()[-3000:])
        assert wait_written(out, 30)
    finally:
        toucher.stopped.set()
        stop_group(job)
    return still, quiet, out


def test_a_torn_member_waits_while_young_and_is_a_read_error_once_quiet(tmp_path):
    folder = tmp_path / "capture"
    path = _capture(folder)
    _tear(path, 0)
    complete = gzip_prefix(open(path, "rb").read()).count(b"\n")   # 21 + the torn member's lines
    assert complete > 21
    still, quiet, out = _follow_while_written_then_quiet(tmp_path, folder, path, complete)
    assert still["input_records"] == complete and still["dead_letters"] == {}
    assert quiet["dead_letters"] == {"read_error": 1}

    assert main(["--input", str(folder), "--output", str(tmp_path / "batch"),
                 "--quiet_seconds", str(QUIET)]) == 0
    assert comparable(out) == comparable(str(tmp_path / "batch"))
    letters = [(d["reason"], d["source"], d["payload"]) for d in read(out, "dead_letter").to_pylist()]
    assert letters == [(d["reason"], d["source"], d["payload"])
                       for d in read(str(tmp_path / "batch"), "dead_letter").to_pylist()]


def test_an_unterminated_line_waits_while_young_and_is_a_record_once_quiet(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    path = str(folder / "feed.jsonl")
    lines = _lines(100, 20)
    with open(path, "wb") as handle:               # the last line's newline not written yet
        handle.write(b"\n".join(lines))
    still, quiet, out = _follow_while_written_then_quiet(tmp_path, folder, path, len(lines) - 1)
    assert still["input_records"] == len(lines) - 1
    assert quiet["clean_records"] == len(lines) and quiet["dead_letters"] == {}

    assert main(["--input", str(folder), "--output", str(tmp_path / "batch"),
                 "--quiet_seconds", str(QUIET)]) == 0
    assert comparable(out) == comparable(str(tmp_path / "batch"))
    assert json.loads(lines[-1])["payload"]["u"] == 119


def test_a_backlog_is_read_a_bounded_piece_at_a_time(tmp_path, monkeypatch):
    """A read stops at the first member end past READ_LIMIT_BYTES (here: every member) and says it
    is behind (the member that reaches the file's end too); reads resumed from the progress give
    every record once, in order."""
    import transforms.follow as follow
    from beam_pipeline.core.model import RawBatch

    path = _capture(tmp_path / "capture")            # two members: 21 and 30 records
    monkeypatch.setattr(follow, "READ_LIMIT_BYTES", 1)
    reader = follow.FollowFiles("auto", 1 << 20, QUIET)
    progress, reads, records = follow.FileProgress(), [], []
    for _ in range(4):
        batches = [o for o in reader._read(path, progress, quiet=True) if isinstance(o, RawBatch)]
        reads.append((sum(len(b.records) for b in batches), progress.behind))
        records += [number for b in batches for number, _ in b.records]
    assert reads == [(21, True), (30, True), (0, False), (0, False)]
    assert records == list(range(1, 52))
