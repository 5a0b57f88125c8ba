"""Breaks in a connection's own numbers (core/connections.py), the adapters' connection_number, and
what the sequencer makes of a connection_break marker (core/sequencer.py)."""
import json

from beam_pipeline.core import adapters
from beam_pipeline.core.adapters import bitfinex, coinbase
from beam_pipeline.core.connections import ConnectionState, ConnectionWatch
from beam_pipeline.core.epochs import canonical_order
from beam_pipeline.core.model import (CONNECTION_BREAK, CONNECTION_SEQUENCE, DELTA, SNAPSHOT,
                                      Event)
from beam_pipeline.core.sequencer import (CLEAN, CONTROL, CORRUPT, GAP, RECOVERY,
                                          StreamSequencer)
from beam_pipeline.options import default_policy

CHANNELS = {7: "book|tBTCUSD|P0", 8: "book|tETHUSD|P0", 9: "trades|tBTCUSD|"}
BTC, ETH = ("spot", "tBTCUSD"), ("spot", "tETHUSD")
KEY = ("bitfinex", "spot", "tBTCUSD")


def js(value) -> bytes:
    return json.dumps(value).encode()


# ---- the adapters' numbers ----------------------------------------------------------------------

def test_bitfinex_numbers_every_frame_after_its_payload():
    number = bitfinex.connection_number
    assert number(js([7, [[100, 1, 2.0]], 1]), CHANNELS) == (1, BTC)          # a snapshot
    assert number(js([8, [100, 1, -2.0], 2]), CHANNELS) == (2, ETH)           # a delta
    assert number(js([8, [100, 1, -2.0], 3, 1618677554000]), CHANNELS) == (3, ETH)  # + TIMESTAMP
    assert number(js([7, "hb", 4]), CHANNELS) == (4, BTC)                     # a book's heartbeat
    assert number(js([7, "cs", -12345, 5]), CHANNELS) == (5, BTC)             # a checksum
    assert number(js([9, "te", [1, 2, 3.0, 4.0], 6]), CHANNELS) == (6, None)  # another channel
    assert number(js([7, [100, 1, 2.0]]), CHANNELS) is None                  # no SEQ_ALL flag
    assert number(js({"event": "info", "version": 2}), CHANNELS) is None
    assert number(b"not json", CHANNELS) is None


def test_coinbase_numbers_advanced_trade_messages_only():
    number = coinbase.connection_number
    l2 = {"channel": "l2_data", "sequence_num": 7,
          "events": [{"type": "update", "product_id": "BTC-USD", "updates": []}]}
    assert number(js(l2)) == (7, ("spot", "BTC-USD"))
    assert number(js({"channel": "heartbeats", "sequence_num": 8, "events": []})) == (8, None)
    assert number(js({"type": "l2update", "product_id": "BTC-USD", "changes": []})) is None


def test_only_venues_that_number_a_connection_are_checked():
    assert adapters.connection_numbering("bitfinex") is bitfinex.connection_number
    assert adapters.connection_numbering("coinbase") is coinbase.connection_number
    assert adapters.connection_numbering("okx") is None
    assert adapters.connection_numbering("binance") is None
    assert adapters.connection_numbering(None) is None


# ---- the watch ------------------------------------------------------------------------------------

def test_a_skipped_number_gives_one_marker_per_book_the_connection_carried():
    watch = ConnectionWatch("bitfinex")
    assert watch.see(1, BTC, 1000, "f:3") == []
    assert watch.see(2, None, 1001, "f:4") == []          # a heartbeat: numbered, no book
    assert watch.see(3, ETH, 1002, "f:5") == []
    assert watch.see(3, ETH, 1003, "f:6") == []           # written twice: not a break
    markers = watch.see(6, BTC, 1004, "f:7")              # 4 and 5 were lost
    assert [(m.exchange, m.market, m.symbol, m.kind, m.first_id, m.last_id, m.recv_time, m.source,
             m.rule) for m in markers] == [
        ("bitfinex", *key, CONNECTION_BREAK, 3, 3, 1004, "f:7", CONNECTION_SEQUENCE)
        for key in (BTC, ETH)]
    assert watch.state.breaks == 1 and watch.state.last == 6


def test_a_book_first_seen_after_the_break_gets_no_marker():
    watch = ConnectionWatch("bitfinex")
    watch.see(1, BTC, 1000, "f:1")
    assert [m.symbol for m in watch.see(3, ETH, 1001, "f:2")] == ["tBTCUSD"]


def test_the_watch_resumes_from_its_saved_state():
    first = ConnectionWatch("bitfinex")
    first.see(1, BTC, 1000, "f:1")
    first.see(2, ETH, 1001, "f:2")
    import msgspec
    saved = msgspec.msgpack.decode(msgspec.msgpack.encode(first.state), type=ConnectionState)
    again = ConnectionWatch("bitfinex", saved)
    assert again.see(3, ETH, 1002, "f:3") == []
    assert {m.symbol for m in again.see(5, BTC, 1003, "f:4")} == {"tBTCUSD", "tETHUSD"}


# ---- the sequencer ----------------------------------------------------------------------------------

def book(kind, number, at):
    return Event(*KEY, kind, number, number, None, None, at, b"[]", b"[]", CONNECTION_SEQUENCE,
                 f"f:{number}")


def marker(last, at):
    return Event(*KEY, CONNECTION_BREAK, last, last, None, None, at, b"[]", b"[]",
                 CONNECTION_SEQUENCE, "f:0")


def run(events, timeout_ms=1000):
    policy = default_policy(recovery_timeout_ms=timeout_ms)
    machine = StreamSequencer(KEY, policy)
    machine.feed_all(canonical_order(events, policy.reset_min_jump_ids))
    machine.finish()
    return machine.out


def outputs(out, tag):
    return [value for t, value in out if t == tag]


def test_the_next_delta_after_a_break_is_a_gap_of_its_cause():
    out = run([book(SNAPSHOT, 1, 100), book(DELTA, 3, 300), marker(5, 800), book(DELTA, 9, 900)])
    (gap,) = outputs(out, GAP)
    assert (gap.last_good_id, gap.next_first_id, gap.gap_size, gap.gap_class, gap.resolution,
            gap.cause) == (3, 9, None, "medium", "corrupt_period", "connection_break")
    (period,) = outputs(out, CORRUPT)
    assert (period.start_id, period.end_id, period.reason) == (4, 8, "connection_break")
    (request,) = outputs(out, RECOVERY)
    assert (request.from_id, request.reason) == (4, "connection_break")
    assert [value[0].last_id for value in outputs(out, CLEAN)] == [1, 3, 9]   # nothing lost
    assert outputs(out, CONTROL) == []       # the marker is not an input record: no output of its own


def test_a_snapshot_after_the_break_resyncs_at_once():
    out = run([book(SNAPSHOT, 1, 100), book(DELTA, 3, 300), marker(5, 800),
               book(SNAPSHOT, 9, 900), book(DELTA, 10, 1000)])
    (gap,) = outputs(out, GAP)
    assert (gap.last_good_id, gap.next_first_id, gap.resolution, gap.cause) == (
        3, 9, "resynced", "connection_break")
    assert outputs(out, CORRUPT) == [] and outputs(out, RECOVERY) == []


def test_the_message_numbered_like_the_marker_was_before_the_break_whatever_their_order():
    # the key's own message L and the marker of L sort side by side: neither order is a gap at L
    for early in (True, False):
        events = [book(SNAPSHOT, 1, 100), book(DELTA, 5, 500), marker(5, 500 if early else 900),
                  book(DELTA, 9, 900)]
        (gap,) = outputs(run(events), GAP)
        assert (gap.last_good_id, gap.next_first_id) == (5, 9)


def test_a_key_without_a_cursor_or_past_the_break_takes_nothing_from_it():
    assert outputs(run([marker(5, 100), book(SNAPSHOT, 9, 900), book(DELTA, 10, 1000)]), GAP) == []
    machine = StreamSequencer(KEY, default_policy())
    for event in (book(SNAPSHOT, 1, 100), book(DELTA, 9, 900), marker(5, 950),
                  book(DELTA, 10, 1000)):
        machine.feed(event)                  # a marker later than the key's events past it
    assert outputs(machine.take_output(), GAP) == []


def test_several_breaks_before_the_key_moves_are_one_gap():
    out = run([book(SNAPSHOT, 1, 100), marker(3, 300), marker(6, 600), book(DELTA, 8, 800)])
    (gap,) = outputs(out, GAP)
    assert (gap.last_good_id, gap.next_first_id) == (1, 8)


def test_a_batch_carries_its_markers_through_its_coder():
    from beam_pipeline.core.model import RawBatch
    from transforms.coders import RawBatchCoder
    watch = ConnectionWatch("bitfinex")
    watch.see(1, BTC, 1000, "f:1")
    markers = watch.see(3, None, 1001, "f:2")
    batch = RawBatch("f", "cryptofeed", "bitfinex", None, [(2, b"1.0: [7,\"hb\",3]")],
                     channels={7: "book|tBTCUSD|P0"}, markers=markers)
    coder = RawBatchCoder()
    assert coder.decode(coder.encode(batch)) == batch and len(markers) == 1
