"""Every venue's adapter and rule, Beam-free: feeds written in each venue's own wire format (the
shapes of its documentation), decoded by its adapter and sequenced by the state machine in
canonical order, as the batch job does. Per venue: a clean feed is one anchored segment, a dropped
message is exactly one gap carrying the venue's ids, a duplicate is a duplicate, reordering is no
gap, an id reset follows the venue's rule, and a bad record is rejected with its reason. Venues
without per-key ids (Kraken spot, Coinbase level2, Bitfinex) order and deduplicate by their ids
but declare no gap: their events are unverified.
"""
import json

import pytest

from beam_pipeline.core import adapters
from beam_pipeline.core.epochs import canonical_order
from beam_pipeline.core.framing import FileContext, decode_record
from beam_pipeline.core.framings import cryptofeed
from beam_pipeline.core.model import Event, Ignored, arrival_ordinal
from beam_pipeline.core.reasons import Rejected
from beam_pipeline.core.sequencer import CLEAN, DUPLICATE, GAP, StreamSequencer
from beam_pipeline.options import default_policy
from tests.tooling.venue_frames import (FIRST, IDS, STEP, T0, VENUES, Bybit, GateIo, Kraken, KuCoin,
                                        Okx, feed, js)


def sequence(venue, items):
    events = []
    for raw, at, line, snap in items:
        result = venue.decode(raw, at, line, snap)
        assert isinstance(result, Event), (venue.exchange, raw, result)
        events.append(result)
    keys = {event.key for event in events}
    assert keys == {(venue.exchange, venue.market, venue.symbol)}, keys
    policy = default_policy()
    machine = StreamSequencer(keys.pop(), policy)
    machine.feed_all(canonical_order(events, policy.reset_min_jump_ids))
    machine.finish()
    return machine.out


def of(out, tag):
    return [value for t, value in out if t == tag]


@pytest.mark.parametrize("venue", VENUES, ids=IDS)
def test_a_clean_feed_is_one_anchored_segment(venue):
    items, ids = feed(venue)
    out = sequence(venue, items)
    clean = of(out, CLEAN)
    assert len(clean) == len(items) and not of(out, GAP) and not of(out, DUPLICATE)
    assert all(anchored for _, _, anchored in clean) and len({seg for _, seg, _ in clean}) == 1
    assert all(event.unverified is (not venue.checked) for event, _, _ in clean)
    if venue.checked:
        assert [event.last_id for event, _, _ in clean] == ids


@pytest.mark.parametrize("venue", VENUES, ids=IDS)
def test_a_dropped_message_is_one_gap_with_the_venues_ids(venue):
    items, ids = feed(venue)
    del items[6]                                   # the delta with ids[6]
    out = sequence(venue, items)
    gaps = of(out, GAP)
    if not venue.checked:
        assert gaps == [] and len(of(out, CLEAN)) == len(items)   # unverified: nothing to tell
        return
    assert [(gap.last_good_id, gap.next_first_id) for gap in gaps] == [(ids[5], ids[7])]
    assert (gaps[0].exchange, gaps[0].market, gaps[0].symbol) == (venue.exchange, venue.market,
                                                                  venue.symbol)


@pytest.mark.parametrize("venue", VENUES, ids=IDS)
def test_a_duplicate_is_a_duplicate_and_reordering_is_no_gap(venue):
    items, ids = feed(venue)
    items = items[:4] + [items[5], items[4]] + items[6:] + [items[7]]    # swapped, and one twice
    out = sequence(venue, items)
    assert of(out, GAP) == []
    assert len(of(out, DUPLICATE)) == 1
    assert len(of(out, CLEAN)) == len(items) - 1


@pytest.mark.parametrize("venue", [v for v in VENUES if v.checked], ids=[v.exchange for v in VENUES if v.checked])
def test_an_id_reset_follows_the_venues_rule(venue):
    """Ids restart far lower later on (an engine restart) with a new snapshot: one gap of class
    reset, resynced at the snapshot; the new epoch is clean. Bybit's restart is its `u == 1`
    snapshot; OKX's maintenance update (seqId < prevSeqId) is its own case below."""
    before, old = feed(venue, count=6)
    after, new = feed(venue, count=6, first=1)
    shift = STEP * 100
    after = [(raw.replace(str(T0).encode(), str(T0 + shift).encode()), at + shift, line + 100, snap)
             for raw, at, line, snap in after]
    after = [(venue.snapshot(new[0], T0 + shift) if snap else raw, at, line, snap)
             for raw, at, line, snap in after]
    out = sequence(venue, before + after)
    gaps = of(out, GAP)
    assert [(gap.gap_class, gap.resolution, gap.last_good_id, gap.next_first_id) for gap in gaps] == [
        ("reset", "resynced", old[-1], new[0])]
    assert [event.last_id for event, _, _ in of(out, CLEAN)][-len(new):] == new


def test_okx_maintenance_update_below_its_previous_id_is_an_id_reset():
    venue = Okx()
    items, ids = feed(venue, count=4)
    at = T0 + STEP * 10
    items.append((venue.delta(1000, ids[-1], at), at, 20, False))      # seqId < prevSeqId
    out = sequence(venue, items)
    assert [(gap.gap_class, gap.last_good_id, gap.next_first_id) for gap in of(out, GAP)] == [
        ("reset", ids[-1], 1000)]


def test_okx_idle_heartbeat_is_ignored_and_the_link_holds():
    venue = Okx()
    items, ids = feed(venue, count=3)
    idle = js({"arg": {"channel": "books", "instId": venue.symbol}, "action": "update",
               "data": [{"asks": [], "bids": [], "ts": str(T0), "checksum": 0,
                         "seqId": ids[-1], "prevSeqId": ids[-1]}]})
    assert venue.decode(idle, T0, 9) == Ignored("heartbeat")
    items.append((venue.delta(ids[-1] + 3, ids[-1], T0 + 900), T0 + 900, 10, False))
    out = sequence(venue, items)
    assert of(out, GAP) == [] and len(of(out, CLEAN)) == len(items)


def test_okx_channels_are_separate_sequences_in_the_key():
    venue = Okx()
    tbt = venue.delta(77, 70, T0).replace(b'"channel":"books"', b'"channel":"books-l2-tbt"')
    books = venue.delta(80, 73, T0)
    assert venue.decode(tbt, T0, 1).market == "spot@books-l2-tbt"
    assert venue.decode(books, T0, 2).market == "spot"
    swap = books.replace(b"BTC-USDT", b"BTC-USDT-SWAP")
    assert venue.decode(swap, T0, 3).key == ("okx", "swap", "BTC-USDT-SWAP")


def test_okx_captures_before_seqid_are_ordered_by_arrival_and_unverified():
    venue = Okx()
    raw = venue.delta(1, 0, T0).replace(b',"seqId":1,"prevSeqId":0', b"")
    event = venue.decode(raw, T0, 7)
    assert event.rule == "none" and event.unverified
    assert event.first_id == event.last_id == arrival_ordinal(T0, "f:7") == T0 * 1_000_000 + 7


@pytest.mark.parametrize("venue", VENUES, ids=IDS)
def test_a_bad_record_is_rejected_with_its_reason(venue):
    with pytest.raises(Rejected) as caught:
        venue.decode(venue.bad_price(FIRST + 1, FIRST, T0), T0, 3)
    assert caught.value.reason == "bad_price_level"
    assert caught.value.symbol == f"{venue.exchange}:{venue.market}:{venue.symbol}"
    with pytest.raises(Rejected) as caught:
        venue.decode(b'{"arg": [1, 2', T0, 4)
    assert caught.value.reason == "bad_json"


def test_bybit_restart_snapshot_u_1_resyncs():
    venue = Bybit()
    items, ids = feed(venue, count=4)
    later = T0 + 10_000
    items += [(venue.snapshot(1, later), later, 30, True), (venue.delta(2, 1, later + 1), later + 1, 31, False)]
    out = sequence(venue, items)
    assert [(gap.gap_class, gap.resolution, gap.next_first_id) for gap in of(out, GAP)] == [
        ("reset", "resynced", 1)]


def test_kucoin_placeholder_rows_only_advance_the_sequence():
    event = KuCoin().decode(KuCoin().delta(9, 8, T0), T0, 1)
    assert (event.first_id, event.last_id, event.bids, event.asks) == (9, 9, b"[]", b'[["100.5","1"]]')


def test_rest_snapshots_bridge_by_the_venues_rule():
    """Gate.io / KuCoin: updates at or below the REST id are superseded, the first applied one has
    first <= id+1 <= last."""
    for venue in (GateIo(), KuCoin()):
        items, ids = feed(venue, count=5)
        early = [(venue.delta(FIRST - 1, FIRST - 2, T0 - 50), T0 - 50, 0, False)]
        out = sequence(venue, early + items)
        assert [event.last_id for event in of(out, "superseded")] == [FIRST - 1]
        assert [event.last_id for event, _, _ in of(out, CLEAN)] == ids


# ---- the framing: exchanges from connect lines, sent lines, binary frames ---------------------

def test_connect_lines_name_every_venue_former_hosts_included():
    found = {url: adapters.stream_of_url(url)[1:] for url in (
        "wss://ws.okx.com:8443/ws/v5/public", "wss://real.okex.com:8443/ws/v3",
        "wss://ws.okex.com:8443/ws/v5/public", "wss://stream.bybit.com/v5/public/spot",
        "wss://stream.bybit.com/realtime_public", "wss://www.deribit.com/ws/api/v2",
        "wss://ws-feed.pro.coinbase.com", "wss://advanced-trade-ws.coinbase.com",
        "wss://ws.kraken.com", "wss://futures.kraken.com/ws/v1", "wss://api.bitfinex.com/ws/2",
        "wss://push-private.kucoin.com/endpoint?token=T", "wss://api.gateio.ws/ws/v4/",
        "wss://fx-ws.gateio.ws/v4/ws/usdt", "wss://api.huobi.pro/ws", "wss://api.htx.com/ws",
        "wss://ws.bitget.com/spot/v1/stream")}
    assert found == {
        "wss://ws.okx.com:8443/ws/v5/public": ("okx", None),
        "wss://real.okex.com:8443/ws/v3": ("okx", None),
        "wss://ws.okex.com:8443/ws/v5/public": ("okx", None),
        "wss://stream.bybit.com/v5/public/spot": ("bybit", "spot"),
        "wss://stream.bybit.com/realtime_public": ("bybit", "linear"),
        "wss://www.deribit.com/ws/api/v2": ("deribit", None),
        "wss://ws-feed.pro.coinbase.com": ("coinbase", "spot"),
        "wss://advanced-trade-ws.coinbase.com": ("coinbase", "spot"),
        "wss://ws.kraken.com": ("kraken", "spot"),
        "wss://futures.kraken.com/ws/v1": ("kraken_futures", None),
        "wss://api.bitfinex.com/ws/2": ("bitfinex", None),
        "wss://push-private.kucoin.com/endpoint?token=T": ("kucoin", "spot"),
        "wss://api.gateio.ws/ws/v4/": ("gateio", "spot"),
        "wss://fx-ws.gateio.ws/v4/ws/usdt": ("gateio", "futures"),
        "wss://api.huobi.pro/ws": ("htx", "spot"),
        "wss://api.htx.com/ws": ("htx", "spot"),
        "wss://ws.bitget.com/spot/v1/stream": ("bitget", None)}
    assert sorted(adapters.exchange_names()) == sorted(
        ["binance", "binance_us", "okx", "bybit", "deribit", "coinbase", "kraken", "kraken_futures",
         "bitfinex", "kucoin", "gateio", "htx", "bitget"])


def test_sent_lines_are_not_records():
    ctx = FileContext("cryptofeed", "okx")
    line = b'wss://ws.okx.com:8443/ws/v5/public <- 1652459225.29: {"op":"subscribe","args":[]}'
    assert cryptofeed.control(line, ctx).kind == "sent"
    assert cryptofeed.looks_like(line)


def _literal(data: bytes) -> bytes:
    return b"1618678070.9: " + repr(data).encode()


def test_binary_frames_are_inflated_without_evaluating_code_and_bounded():
    import gzip
    import zlib
    frame = js({"ch": "market.btcusdt.mbp.150", "ts": T0,
                "tick": {"seqNum": 9, "prevSeqNum": 4, "bids": [], "asks": [["100.5", 1]]}})
    ctx = FileContext("cryptofeed", "htx", "spot", max_record_bytes=4096)
    event = decode_record(_literal(gzip.compress(frame)), ctx, "f:2")
    assert (event.exchange, event.symbol, event.first_id, event.prev_id) == ("htx", "btcusdt", 9, 4)
    deflate = zlib.compressobj(wbits=-15)
    okx = Okx().delta(8, 1, T0)
    raw = deflate.compress(okx) + deflate.flush()
    assert decode_record(_literal(raw), FileContext("cryptofeed", "okx", max_record_bytes=4096),
                         "f:3").last_id == 8
    bomb = gzip.compress(b" " * 100_000)                   # inflates past --max_record_bytes
    with pytest.raises(Rejected) as caught:
        decode_record(_literal(bomb), ctx, "f:4")
    assert caught.value.reason == "record_too_large"
    for hostile in (b"1618678070.9: b'\\x1f' + __import__('os').system('true')",
                    b"1618678070.9: b'\\x1f\\x8b' if 1 else b''", b"1618678070.9: b'\\x1f\\x8b'"):
        with pytest.raises(Rejected) as caught:
            decode_record(hostile, ctx, "f:5")
        assert caught.value.reason == "bad_framing"


def test_a_book_frame_the_adapter_cannot_read_is_a_dead_letter_not_ignored():
    ctx = FileContext("cryptofeed", "okx")
    line = b'1652459225.5: {"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update"}'
    with pytest.raises(Rejected) as caught:
        decode_record(line, ctx, "f:1")
    assert caught.value.reason == "missing_field"
    trades = b'1652459225.5: {"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[]}'
    assert decode_record(trades, ctx, "f:2") == Ignored("trades")


def test_bitfinex_channel_ids_come_from_the_subscribed_reply():
    ctx = FileContext("cryptofeed", "bitfinex")
    reply = (b'1618677554.85: {"event":"subscribed","channel":"book","chanId":5,'
             b'"symbol":"tBTCUSD","prec":"P0"}')
    after = cryptofeed.observe(reply, ctx)
    assert after.channels == {5: "book|tBTCUSD|P0"}
    assert decode_record(reply, after, "f:1") == Ignored("subscription")
    event = decode_record(b"1618677554.9: [5,[101,0,-1],17]", after, "f:2")
    assert (event.symbol, event.first_id, event.asks, event.rule) == (
        "tBTCUSD", 17, b'[["101","0"]]', "connection_sequence")
    with pytest.raises(Rejected) as caught:
        decode_record(b"1618677554.9: [6,[101,1,1],18]", after, "f:3")
    assert caught.value.reason == "bad_framing"
    assert decode_record(b'1618677554.9: [6,"hb",19]', after, "f:4") == Ignored("heartbeat")


def test_envelopes_take_every_venue():
    from beam_pipeline.core.framing import decode_envelope
    for venue in VENUES:
        if venue.exchange == "bitfinex":
            continue                         # its messages need the connection's channel ids
        raw, at, _, _ = feed(venue, count=1)[0][1]
        line = js({"exchange": venue.exchange, "market": venue.market, "symbol": venue.symbol,
                   "recv_ts_ms": at, "type": "delta", "payload": json.loads(raw)})
        event = decode_envelope(line, "f:9")
        assert event.key == (venue.exchange, venue.market, venue.symbol), venue.exchange
        wrong = line.replace(f'"symbol":"{venue.symbol}"'.encode(), b'"symbol":"OTHER"', 1)
        with pytest.raises(Rejected) as caught:
            decode_envelope(wrong, "f:9")
        assert caught.value.reason == "symbol_mismatch"


def test_pubsub_raw_messages_take_every_venue():
    from beam_pipeline.core.framing import decode_message
    raw = Okx().delta(9, 2, T0)
    event = decode_message(raw, {"exchange": "okx", "recv_ts_ms": str(T0)}, "pubsub:s/77")
    assert (event.key, event.first_id, event.prev_id, event.recv_time) == (
        ("okx", "spot", "BTC-USDT"), 9, 2, T0)
    trades = b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[]}'
    assert decode_message(trades, {"exchange": "okx", "symbol": "BTC-USDT"}, "pubsub:s/78") == \
        Ignored("trades")
    with pytest.raises(Rejected) as caught:
        decode_message(raw, {"exchange": "okx", "symbol": "ETH-USDT"}, "pubsub:s/79")
    assert caught.value.reason == "symbol_mismatch"
    unverified = decode_message(Kraken().delta(0, 0, T0), {"exchange": "kraken", "recv_ts_ms": str(T0)},
                                "pubsub:s/80")
    assert unverified.first_id == T0 * 1_000_000 + 80 and unverified.unverified


# ---- hostile input: every venue's decoder returns an Event, an Ignored or None, or rejects ----

from hypothesis import given, settings, strategies as st  # noqa: E402

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.sampled_from(
                         ["arg", "channel", "instId", "action", "data", "seqId", "prevSeqId", "asks",
                          "bids", "topic", "type", "u", "s", "b", "a", "method", "params", "result",
                          "event", "feed", "product_id", "seq", "side", "price", "qty", "ch", "tick",
                          "seqNum", "prevSeqNum", "changes", "product_id", "U", "sequenceStart",
                          "sequenceEnd", "symbol", "instType", "events", "sequence_num", "updates"]),
                         inner, max_size=5), max_leaves=12)


def _only_decoded_or_rejected(venue, raw):
    """Through the guard every entry point has (invalid UTF-8, nesting too deep: rejected)."""
    from beam_pipeline.core.decoding import rejecting_the_unparseable
    try:
        result = rejecting_the_unparseable(venue.decode)(raw, T0, 1)
    except Rejected as rejected:
        assert rejected.message and rejected.reason
        return
    assert result is None or isinstance(result, (Event, Ignored)), (venue.exchange, raw, result)


@settings(max_examples=150, deadline=None)
@given(value=_JSON, index=st.integers(0, len(VENUES) - 1))
def test_arbitrary_json_is_decoded_or_rejected_cleanly(value, index):
    _only_decoded_or_rejected(VENUES[index], json.dumps(value).encode())


@settings(max_examples=150, deadline=None)
@given(index=st.integers(0, len(VENUES) - 1), cut=st.integers(0, 400), byte=st.integers(0, 255),
       snap=st.booleans())
def test_mutated_venue_messages_are_decoded_or_rejected_cleanly(index, cut, byte, snap):
    venue = VENUES[index]
    raw = venue.snapshot(FIRST, T0) if snap else venue.delta(FIRST + 1, FIRST, T0)
    cut = min(cut, len(raw) - 1)
    for mutated in (raw[:cut], raw[:cut] + bytes([byte]) + raw[cut + 1:]):
        _only_decoded_or_rejected(venue, mutated)
