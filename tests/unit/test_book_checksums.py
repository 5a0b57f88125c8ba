"""The venues' checksums verified inside the job's own path: the real OKX, Kraken and Bitget
captures decoded by the project's framing and adapters (which put the checksum, and Kraken's
book-N depth, on the Event), sequenced by the state machine, checked by BookWatch. Every checksum
the captures carry matches; the expected counts come from tests/unit/test_books.py's own small
reader of the raw files, not from the job. A Bitfinex `cs` message reaches the book as an Event of
kind checksum (no capture carries one: built here from the venue's documented shape)."""
import gzip
import os
import zlib
from collections import defaultdict

import pytest

from beam_pipeline.core import framing
from beam_pipeline.core.books import checksums
from beam_pipeline.core.books.watch import BookWatch
from beam_pipeline.core.model import CHECKSUM, CorruptPeriod, sort_canonically
from beam_pipeline.core.reasons import Outcome
from beam_pipeline.core.sequencer import StreamSequencer
from beam_pipeline.options import default_policy
from tests.unit.test_books import CAPTURES, EXCHANGES


def decode_capture(path):
    """The capture's Events by key, as the job decodes them (connect lines set the context)."""
    with gzip.open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    fmt = framing.detect_format([line for line in lines[:50] if line.strip()])
    ctx, keys = framing.FileContext(fmt), defaultdict(list)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if b" <-> " in line.split(b": ", 1)[0]:
            ctx = framing.context_from_header(fmt, line)
            continue
        if framing.is_header(line):
            continue                                   # what the client sent
        event = framing.decode_record(line, ctx, f"{path}:{number}")
        if event is not None and hasattr(event, "key"):
            keys[event.key].append(event)
    return {key: sort_canonically(events) for key, events in keys.items()}


def watch_all(by_key):
    """Per key: (corrupt periods, BookWatch), the batch replay's loop without Beam."""
    out = {}
    for key, events in by_key.items():
        machine, watch = StreamSequencer(key, default_policy()), BookWatch(key)
        machine.feed_all(events)
        machine.finish()
        periods = []
        for outcome, value in machine.take_output():
            if outcome == Outcome.CLEAN:
                periods += [r for r in watch.observe(value) if isinstance(r, CorruptPeriod)]
        periods += [r for r in watch.finish() if isinstance(r, CorruptPeriod)]
        out[key] = periods, watch
    return out


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_every_checksum_of_the_real_captures_is_verified_in_the_job_path(name):
    reader, _, _ = CAPTURES[name]
    expected = sum(1 for m in reader(name) if m[6] is not None and m[6] != checksums.NOT_SENT)
    watched = watch_all(decode_capture(os.path.join(EXCHANGES, name)))
    assert {key: periods for key, (periods, _) in watched.items() if periods} == {}
    verified = sum(w.counts.checksum_verified for _, w in watched.values())
    assert verified == expected and expected > 0
    if name.startswith("KRAKEN"):      # the depth came from the channel name book-1000
        assert {w.book.book.depth for _, w in watched.values()} == {1000}


def test_a_bitfinex_cs_message_is_sequenced_and_checked():
    from beam_pipeline.core.adapters import bitfinex
    channels = {17: "book|tBTCUSD|P0"}
    snapshot = b'[17,[[100.5,1,2.5],[101,2,-1.25]],1]'
    delta = b'[17,[100.5,1,3],2]'
    expected = checksums.bitfinex([("100.5", "3")], [("101", "1.25")])
    good = f'[17,"cs",{expected},3]'.encode()
    bad = f'[17,"cs",{expected ^ 1},4]'.encode()
    events = [bitfinex.decode_message(raw, 1000 + i, f"f:{i + 1}", channels=channels)
              for i, raw in enumerate((snapshot, delta, good, bad))]
    assert [e.kind for e in events] == ["snapshot", "delta", CHECKSUM, CHECKSUM]
    assert events[2].checksum == expected and events[2].bids == b"[]"
    key = events[0].key
    (periods, watch), = watch_all({key: events}).values()
    assert watch.counts.checksum_verified == 1
    assert [(p.reason, p.start_id) for p in periods] == [("checksum_mismatch", 4)]
    # the string Bitfinex documents: price:amount alternating, asks negative
    assert expected == zlib.crc32(b"100.5:3:101:-1.25") - (1 << 32) * (
        zlib.crc32(b"100.5:3:101:-1.25") >= 1 << 31)
