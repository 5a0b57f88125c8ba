"""Tests of the Binance adapter and the input framings (beam_pipeline/core/adapters, beam_pipeline/core/framing).

Plain functions, no pipeline: every decode path, every rejection reason code, the streams that are
ignored, and the real cryptofeed captures in ../shared/data/cryptofeed (read in place, never copied).
"""
import json
import os
from collections import defaultdict

import pytest

from beam_pipeline.core import framing
from beam_pipeline.core.adapters import Rejected, adapter_for
from beam_pipeline.core.adapters import binance
from beam_pipeline.core.model import (DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT, Event, decode_levels,
                                 encode_levels)

CAPTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        os.pardir, "shared", "data", "cryptofeed")

SPOT_DEPTH = {"e": "depthUpdate", "E": 1633998512068, "s": "NKNUSDT", "U": 499869750,
              "u": 499869752, "b": [["0.35130000", "6195.00000000"], ["0.34750000", "5548.00000000"],
                                     ["0.34640000", "6222.00000000"]],
              "a": []}
USDM_DEPTH = {"e": "depthUpdate", "E": 1626992741037, "T": 1626992741024, "s": "SUSHIUSDT",
              "U": 600859599090, "u": 600859600917, "pu": 600859598061,
              "b": [["7.5040", "813"], ["7.6090", "0"], ["7.6110", "2"]],
              "a": [["7.6150", "1563"], ["7.6220", "3284"]]}
SPOT_WS_HEADER = (b"wss://stream.binance.com:9443/stream?streams=nknusdt@depth@100ms/"
                  b"nknusdt@bookTicker <-> 1633998511.7425861")
USDM_WS_HEADER = b"wss://fstream.binance.com/stream?streams=sushiusdt@depth@100ms <-> 1626992740.8"


def js(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def envelope(payload, **fields) -> bytes:
    env = {"exchange": "binance", "market": "spot", "symbol": "NKNUSDT", "recv_ts_ms": 1633998512063,
           "type": "delta", "payload": payload}
    env.update(fields)
    return js(env)


def spot_event(**changes):
    fields = dict(exchange="binance", market="spot", symbol="NKNUSDT", kind=DELTA,
                  first_id=499869750, last_id=499869752, prev_id=None, event_time=1633998512068,
                  recv_time=1633998512063,
                  bids=encode_levels([("0.35130000", "6195.00000000"), ("0.34750000", "5548.00000000"),
                                     ("0.34640000", "6222.00000000")]), asks=b"[]",
                  rule=RANGE_PLUS_ONE, source="f:2")
    fields.update(changes)
    return Event(**fields)


def usdm_event(**changes):
    fields = dict(exchange="binance", market="usdm", symbol="SUSHIUSDT", kind=DELTA,
                  first_id=600859599090, last_id=600859600917, prev_id=600859598061,
                  event_time=1626992741037, recv_time=1626992741081,
                  bids=encode_levels([("7.5040", "813"), ("7.6090", "0"), ("7.6110", "2")]),
                  asks=encode_levels([("7.6150", "1563"), ("7.6220", "3284")]),
                  rule=PREVIOUS_LINK, source="f:3")
    fields.update(changes)
    return Event(**fields)


def reason_of(call, *args, **kwargs) -> str:
    with pytest.raises(Rejected) as raised:
        call(*args, **kwargs)
    assert raised.value.message, "a rejection must say what was wrong"
    return raised.value.reason


# ---- decoding ---------------------------------------------------------------------------------

def test_spot_depth_update_bare():
    event = binance.decode_message(js(SPOT_DEPTH), 1633998512063, "f:2")
    assert event == spot_event()
    assert event.key == ("binance", "spot", "NKNUSDT")


def test_spot_depth_update_combined_stream():
    raw = js({"stream": "nknusdt@depth@100ms", "data": SPOT_DEPTH})
    assert binance.decode_message(raw, 1633998512063, "f:2", "spot") == spot_event()


def test_combined_stream_is_recognised_whatever_its_layout():
    combined = {"stream": "nknusdt@depth@100ms", "data": SPOT_DEPTH}
    layouts = [json.dumps(combined, indent=2).encode(),                           # pretty-printed
               b"  " + js(combined),                                              # leading blanks
               js({"data": SPOT_DEPTH, "stream": "nknusdt@depth@100ms"})]         # data first
    for raw in layouts:
        assert binance.decode_message(raw, 1633998512063, "f:2") == spot_event()


def test_usdm_depth_update_combined_stream_market_given_or_inferred_from_pu():
    raw = js({"stream": "sushiusdt@depth@100ms", "data": USDM_DEPTH})
    assert binance.decode_message(raw, 1626992741081, "f:3", "usdm") == usdm_event()
    # No market known (a bare message): a delta carrying pu is a futures delta.
    assert binance.decode_message(js(USDM_DEPTH), 1626992741081, "f:3") == usdm_event()


def test_coinm_delta_uses_previous_link():
    event = binance.decode_message(js(USDM_DEPTH), None, "s", "coinm")
    assert (event.market, event.rule, event.prev_id, event.recv_time) == (
        "coinm", PREVIOUS_LINK, 600859598061, None)


def test_prices_stay_exact_strings():
    levels = [["0.00000010", "100.10000000"], ["65000.00", "0.00000001"], ["7", "0"]]
    event = binance.decode_message(js(dict(SPOT_DEPTH, b=levels, a=levels)), None, "s")
    assert decode_levels(event.bids) == [
        ("0.00000010", "100.10000000"), ("65000.00", "0.00000001"), ("7", "0")]
    assert event.asks == event.bids == b'[["0.00000010","100.10000000"],["65000.00","0.00000001"],["7","0"]]'


def test_snapshot_decode_spot_and_futures():
    body = js({"lastUpdateId": 499869752, "bids": [["0.35210000", "672.00000000"]],
               "asks": [["0.35250000", "3959.00000000"]]})
    assert binance.decode_snapshot(body, None, "NKNUSDT", 1633998512320, "f:1") == Event(
        "binance", "spot", "NKNUSDT", SNAPSHOT, 499869752, 499869752, None, None, 1633998512320,
        encode_levels([("0.35210000", "672.00000000")]),
        encode_levels([("0.35250000", "3959.00000000")]), RANGE_PLUS_ONE, "f:1")
    futures = js({"lastUpdateId": 600859605926, "E": 1626992741264, "T": 1626992741261,
                  "bids": [["7.6110", "6"]], "asks": []})
    event = binance.decode_snapshot(futures, None, "SUSHIUSDT", 1626992741301, "f:1")
    assert (event.market, event.rule, event.first_id, event.last_id, event.event_time) == (
        "usdm", PREVIOUS_LINK, 600859605926, 600859605926, 1626992741264)


def test_cryptofeed_websocket_line_takes_recv_time_from_its_stamp():
    ctx = framing.context_from_header("cryptofeed", SPOT_WS_HEADER)
    assert ctx == framing.FileContext("cryptofeed", "binance", "spot")
    line = b"1633998512.0633569: " + js({"stream": "nknusdt@depth@100ms", "data": SPOT_DEPTH})
    assert framing.decode_record(line, ctx, "f:2") == spot_event()
    usdm_ctx = framing.context_from_header("cryptofeed", USDM_WS_HEADER)
    assert usdm_ctx == framing.FileContext("cryptofeed", "binance", "usdm")
    line = b"1626992741.081672: " + js({"stream": "sushiusdt@depth@100ms", "data": USDM_DEPTH})
    assert framing.decode_record(line, usdm_ctx, "f:3") == usdm_event()


def test_cryptofeed_rest_line_symbol_and_market_from_url():
    ctx = framing.FileContext("cryptofeed")  # a REST log has no header
    body = js({"lastUpdateId": 281916627, "bids": [["0.00006547", "100.00000000"]], "asks": []})
    line = b"https://api.binance.com/api/v3/depth?symbol=blzeth&limit=1000 -> 1633998514.6462898: "
    assert framing.decode_record(line + body, ctx, "h:2") == Event(
        "binance", "spot", "BLZETH", SNAPSHOT, 281916627, 281916627, None, None, 1633998514646,
        encode_levels([("0.00006547", "100.00000000")]), b"[]", RANGE_PLUS_ONE, "h:2")
    futures = b"https://fapi.binance.com/fapi/v1/depth?symbol=CTKUSDT&limit=1000 -> 1626992742.283: "
    event = framing.decode_record(futures + body, ctx, "h:4")
    assert (event.market, event.symbol, event.rule, event.recv_time) == (
        "usdm", "CTKUSDT", PREVIOUS_LINK, 1626992742283)
    other = b"https://api.binance.com/api/v3/exchangeInfo -> 1633998514.1: {}"
    assert framing.decode_record(other, ctx, "h:5") is None  # not a depth snapshot: ignored


def test_header_detection():
    assert framing.is_header(SPOT_WS_HEADER)
    assert framing.is_header(b"wss://fstream.binance.com/stream <-> 1626992740")
    assert not framing.is_header(b"https://api.binance.com/api/v3/depth?symbol=X -> 1.5: {}")
    assert not framing.is_header(b"1633998512.0633569: {}")
    assert not framing.is_header(b"wss://x <-> soon")
    assert framing.context_from_header("cryptofeed", b"wss://dstream.binance.com/ws <-> 1") == \
        framing.FileContext("cryptofeed", "binance", "coinm")
    assert framing.context_from_header("cryptofeed", b"wss://ws.bitmex.com/realtime <-> 1") == \
        framing.FileContext("cryptofeed", None, None)


def test_envelope_delta_snapshot_and_other_types():
    assert framing.decode_envelope(envelope(SPOT_DEPTH), "e:1") == spot_event(source="e:1")
    snap = envelope({"lastUpdateId": 7, "bids": [], "asks": [["1.5", "2"]]}, type="snapshot",
                    symbol="BTCUSDT", market="usdm")
    assert framing.decode_envelope(snap, "e:2") == Event(
        "binance", "usdm", "BTCUSDT", SNAPSHOT, 7, 7, None, None, 1633998512063, b"[]",
        encode_levels([("1.5", "2")]),
        PREVIOUS_LINK, "e:2")
    trade = envelope({"e": "aggTrade", "E": 1, "s": "NKNUSDT", "p": "1.0", "q": "2"}, type="trade")
    assert framing.decode_envelope(trade, "e:3") is None


def test_pubsub_message_with_attributes_or_envelope():
    attributes = {"exchange": "binance", "market": "spot", "symbol": "NKNUSDT",
                  "recv_ts_ms": "1633998512063"}
    assert framing.decode_message(js(SPOT_DEPTH), attributes, "m") == spot_event(source="m")
    assert framing.decode_message(envelope(SPOT_DEPTH), {}, "m") == spot_event(source="m")


# ---- rejections -------------------------------------------------------------------------------

SPOT_CTX = framing.FileContext("cryptofeed", "binance", "spot")
NO_HEADER_CTX = framing.FileContext("cryptofeed")

REJECTIONS = [
    ("bad_json", lambda: binance.decode_message(js(SPOT_DEPTH)[:-9], None, "s")),
    ("bad_json", lambda: framing.decode_envelope(envelope(SPOT_DEPTH)[:-2], "s")),
    ("bad_json", lambda: binance.decode_message(b"", None, "s")),
    ("missing_field", lambda: binance.decode_message(
        js({k: v for k, v in SPOT_DEPTH.items() if k != "u"}), None, "s")),
    ("missing_field", lambda: binance.decode_message(js({"U": 5, "u": 6}), None, "s")),
    ("missing_field", lambda: binance.decode_snapshot(js({"bids": [], "asks": []}), None, "X", 1,
                                                      "s")),
    ("missing_field", lambda: framing.decode_envelope(js({"exchange": "binance"}), "s")),
    ("missing_field", lambda: framing.decode_record(
        b"https://api.binance.com/api/v3/depth?limit=1000 -> 1.5: {}", NO_HEADER_CTX, "s")),
    ("mistyped_field", lambda: binance.decode_message(js(dict(SPOT_DEPTH, U="499869750")), None,
                                                      "s")),
    ("mistyped_field", lambda: binance.decode_message(b"[1, 2]", None, "s")),
    ("mistyped_field", lambda: framing.decode_envelope(envelope(SPOT_DEPTH, recv_ts_ms="1"), "s")),
    ("mistyped_field", lambda: framing.decode_message(js(SPOT_DEPTH), {"recv_ts_ms": "soon"}, "s")),
    ("invalid_ids", lambda: binance.decode_message(js(dict(SPOT_DEPTH, U=-5)), None, "s")),
    ("invalid_ids", lambda: binance.decode_message(js(dict(SPOT_DEPTH, U=9, u=6)), None, "s")),
    ("invalid_ids", lambda: binance.decode_message(js(dict(USDM_DEPTH, pu=-2)), None, "s")),
    ("invalid_ids", lambda: binance.decode_snapshot(
        js({"lastUpdateId": -1, "bids": [], "asks": []}), None, "X", 1, "s")),
    ("missing_prev_id", lambda: framing.decode_envelope(envelope(SPOT_DEPTH, market="usdm"), "s")),
    ("missing_prev_id", lambda: binance.decode_message(js(SPOT_DEPTH), None, "s", "coinm")),
    ("bad_price_level", lambda: binance.decode_message(
        js(dict(SPOT_DEPTH, b=[["abc", "1.0"]])), None, "s")),
    ("bad_price_level", lambda: binance.decode_message(
        js(dict(SPOT_DEPTH, a=[[0.3513, "1.0"]])), None, "s")),          # a float, not a string
    ("bad_price_level", lambda: binance.decode_message(
        js(dict(SPOT_DEPTH, a=[["1e5", "1.0"]])), None, "s")),
    ("bad_price_level", lambda: binance.decode_message(
        js(dict(SPOT_DEPTH, b=[["1.0"]])), None, "s")),                 # no quantity
    ("bad_price_level", lambda: binance.decode_snapshot(
        js({"lastUpdateId": 1, "bids": [["-1.0", "2"]], "asks": []}), None, "X", 1, "s")),
    ("symbol_mismatch", lambda: framing.decode_envelope(envelope(SPOT_DEPTH, symbol="ETHUSDT"),
                                                        "s")),
    ("symbol_mismatch", lambda: framing.decode_message(js(SPOT_DEPTH), {"symbol": "ETHUSDT"}, "s")),
    ("unsupported_exchange", lambda: framing.decode_envelope(envelope(SPOT_DEPTH, exchange="bitmex"),
                                                             "s")),
    ("unsupported_exchange", lambda: framing.decode_record(
        b"https://www.bitmex.com/api/v1/orderBook/L2?symbol=XBTUSD -> 1.5: {}", NO_HEADER_CTX, "s")),
    ("unsupported_exchange", lambda: adapter_for("bitmex")),
    ("unknown_market", lambda: framing.decode_envelope(envelope(SPOT_DEPTH, market="options"), "s")),
    ("unknown_market", lambda: binance.decode_snapshot(
        js({"lastUpdateId": 1, "bids": [], "asks": []}), "margin", "X", 1, "s")),
    ("bad_framing", lambda: framing.decode_record(b"1633998512.06: " + js(SPOT_DEPTH),
                                                  NO_HEADER_CTX, "s")),
    ("bad_framing", lambda: framing.decode_record(js(SPOT_DEPTH), SPOT_CTX, "s")),
    ("bad_framing", lambda: framing.decode_record(b"1633998512.06 " + js(SPOT_DEPTH), SPOT_CTX, "s")),
]


@pytest.mark.parametrize("reason,call", REJECTIONS,
                         ids=[f"{reason}-{i}" for i, (reason, _) in enumerate(REJECTIONS)])
def test_rejection_reason_codes(reason, call):
    assert reason_of(call) == reason


def test_every_reason_code_is_covered():
    assert {reason for reason, _ in REJECTIONS} == {
        "bad_json", "missing_field", "mistyped_field", "invalid_ids", "missing_prev_id",
        "bad_price_level", "symbol_mismatch", "unsupported_exchange", "unknown_market",
        "bad_framing"}


# ---- other streams are ignored ----------------------------------------------------------------

IGNORED = {
    "aggTrade": {"e": "aggTrade", "E": 1633998523963, "s": "NKNUSDT", "a": 15683430,
                 "p": "0.35280000", "q": "58.00000000", "f": 19862790, "l": 19862790,
                 "T": 1633998523963, "m": False, "M": True},
    "kline": {"e": "kline", "E": 1633998513000, "s": "NKNUSDT",
              "k": {"t": 1633998480000, "i": "1m", "o": "0.35", "c": "0.36"}},
    "spot_bookTicker_without_e": {"u": 499869768, "s": "NKNUSDT", "b": "0.35210000",
                                  "B": "672.00000000", "a": "0.35260000", "A": "3199.00000000"},
    "futures_bookTicker": {"e": "bookTicker", "u": 600859600576, "s": "SUSHIUSDT", "b": "7.6110",
                           "B": "2", "a": "7.6120", "A": "297", "T": 1626992741012,
                           "E": 1626992741017},
}


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_other_streams_are_ignored(name):
    message = IGNORED[name]
    assert binance.decode_message(js(message), 1, "s") is None
    assert binance.decode_message(js({"stream": f"nknusdt@{name}", "data": message}), 1, "s") is None
    assert framing.decode_record(b"1633998513.377805: " + js(message), SPOT_CTX, "s") is None


def test_depth_shaped_message_on_another_stream_is_ignored():
    raw = js({"stream": "nknusdt@aggTrade", "data": SPOT_DEPTH})
    assert binance.decode_message(raw, 1, "s") is None


# ---- detect_format, parse_seconds_ms ----------------------------------------------------------

def first_line(name: str) -> bytes:
    with open(os.path.join(CAPTURES, name), "rb") as handle:
        return handle.readline().rstrip(b"\n")


@pytest.mark.parametrize("name,is_header,exchange,market", [
    ("BINANCE.ws.1.0", True, "binance", "spot"),
    ("BINANCE_FUTURES.ws.1.0", True, "binance", "usdm"),
    ("BINANCE.http.0.0", False, None, None),
    ("BINANCE_FUTURES.http.0.0", False, None, None),
])
def test_detect_format_of_captures(name, is_header, exchange, market):
    line = first_line(name)
    assert framing.detect_format(line) == "cryptofeed"
    assert framing.is_header(line) is is_header
    if is_header:
        assert framing.context_from_header("cryptofeed", line) == framing.FileContext(
            "cryptofeed", exchange, market)


def test_detect_format_envelope_and_binance():
    assert framing.detect_format(envelope(SPOT_DEPTH)) == "envelope"
    assert framing.detect_format(b"  " + envelope(SPOT_DEPTH)) == "envelope"
    assert framing.detect_format(js(SPOT_DEPTH)) == "binance"
    assert framing.detect_format(js({"stream": "nknusdt@depth", "data": SPOT_DEPTH})) == "binance"
    assert framing.detect_format(b"1633998512.0633569: {}") == "cryptofeed"


@pytest.mark.parametrize("text,ms", [
    (b"1633998512.0633569", 1633998512063),
    (b"1626992741.06217", 1626992741062),
    (b"1633998512", 1633998512000),
    (b"1633998512.5", 1633998512500),
    (b"1633998512.05", 1633998512050),
    (b"1633998512.9999999", 1633998512999),   # float(text) * 1000 gives ...513000
    (b"1633998512.0579999", 1633998512057),   # float gives ...058
])
def test_parse_seconds_ms_is_exact(text, ms):
    assert framing.parse_seconds_ms(text) == ms


# ---- the real captures ------------------------------------------------------------------------

def decode_capture(name: str):
    events, ignored = [], 0
    with open(os.path.join(CAPTURES, name), "rb") as handle:
        lines = handle.read().split(b"\n")
    ctx = framing.FileContext("cryptofeed")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if framing.is_header(line):
            ctx = framing.context_from_header("cryptofeed", line)
            continue
        event = framing.decode_record(line, ctx, f"{name}:{number}")  # raises on any rejection
        if event is None:
            ignored += 1
        else:
            events.append(event)
    return events, ignored


@pytest.mark.parametrize("name,market,deltas,ignored,symbols", [
    ("BINANCE.ws.1.0", "spot", 177, 88,
     {"NKNUSDT": 150, "BLZETH": 10, "LRCBTC": 15, "RUNEEUR": 2}),
    ("BINANCE_FUTURES.ws.1.0", "usdm", 764, 771,
     {"SUSHIUSDT": 255, "AKROUSDT": 189, "KEEPUSDT": 135, "CTKUSDT": 185}),
])
def test_capture_websocket_logs_decode_and_are_continuous(name, market, deltas, ignored, symbols):
    events, n_ignored = decode_capture(name)
    assert (len(events), n_ignored) == (deltas, ignored)
    assert {e.kind for e in events} == {DELTA} and {e.market for e in events} == {market}
    by_symbol = defaultdict(list)
    for event in events:
        by_symbol[event.symbol].append(event)
    assert {symbol: len(evs) for symbol, evs in by_symbol.items()} == symbols
    for evs in by_symbol.values():
        for previous, event in zip(evs, evs[1:]):
            if market == "spot":
                assert event.first_id == previous.last_id + 1 and event.prev_id is None
            else:
                assert event.prev_id == previous.last_id
            assert event.first_id <= event.last_id
    first = events[0]
    if market == "spot":
        assert first == spot_event(source=f"{name}:2")
    else:
        assert first == usdm_event(source=f"{name}:3")


@pytest.mark.parametrize("name,market,snapshots", [
    ("BINANCE.http.0.0", "spot", [("NKNUSDT", 499869752, 1633998512320),
                                  ("BLZETH", 281916627, 1633998514646),
                                  ("LRCBTC", 259345543, 1633998516844),
                                  ("RUNEEUR", 15602511, 1633998522743)]),
    ("BINANCE_FUTURES.http.0.0", "usdm", [("SUSHIUSDT", 600859605926, 1626992741301),
                                          ("AKROUSDT", 600859605486, 1626992741475),
                                          ("KEEPUSDT", 600859619434, 1626992742110),
                                          ("CTKUSDT", 600859618836, 1626992742283)]),
])
def test_capture_rest_logs_decode_to_snapshots(name, market, snapshots):
    events, ignored = decode_capture(name)
    assert ignored == 0
    assert [(e.symbol, e.last_id, e.recv_time) for e in events] == snapshots
    assert all(e.kind == SNAPSHOT and e.market == market and e.first_id == e.last_id
               for e in events)
    assert decode_levels(events[0].bids)[0] == (("0.35210000", "672.00000000") if market == "spot"
                                 else ("7.6110", "6"))
