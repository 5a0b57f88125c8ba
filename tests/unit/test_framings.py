"""Tests of the framings (beam_pipeline/core/framings) and the adapter registry: every recorder format
on small fixtures written here, detection from a file's first records, the contracts' registries.

Plain functions, no pipeline (tests/beam/test_formats.py runs the same formats and the shared
captures through the whole job).
"""
import sys

import pytest

from beam_pipeline.core import adapters, framing, framings
from beam_pipeline.core.adapters import ExchangeAdapter, Rejected, adapter_for, binance
from beam_pipeline.core.contracts import members, plugin_modules
from beam_pipeline.core.framings import FileContext, Framing, cryptofeed, hftbacktest, tardis
from beam_pipeline.core.framings._stamps import epoch_integer_ms, iso_ms, seconds_ms
from beam_pipeline.core.framings.base import CONNECT, HEADER
from beam_pipeline.core.model import DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT
from tests.tooling.frames import depth, js


def combined(symbol, data, stream="depth@100ms"):
    return js({"stream": f"{symbol.lower()}@{stream}", "data": data})


SNAPSHOT_BODY = js({"lastUpdateId": 5, "bids": [["100.00", "2.0"]], "asks": []})
TRADE = {"e": "trade", "E": 1_700_000_001_600, "s": "BTCUSDT", "t": 1, "p": "100.00", "q": "1"}


def decode(fmt, line, ctx=None):
    return framing.decode_record(line, ctx or FileContext(fmt), "f:1")


def reason_of(call, *args):
    with pytest.raises(Rejected) as raised:
        call(*args)
    assert raised.value.message
    return raised.value.reason


# ---- the registries -----------------------------------------------------------------------------

def test_every_framing_module_is_registered_and_satisfies_the_contract():
    assert set(framings.names()) == {"cryptofeed", "hftbacktest", "tardis", "envelope", "binance"}
    for module in framings.framings():
        assert isinstance(module, Framing), module.__name__
        assert module.looks_like(module.EXAMPLE), module.NAME
        # its example alone is detected as its own format, and decodes to a depth event
        assert framing.detect_format([module.EXAMPLE]) == module.NAME
        ctx = module.open([module.EXAMPLE], "/data/f")
        if module is cryptofeed:          # its websocket lines follow the connect line
            ctx = framing.context_from_header("cryptofeed", CONNECT_LINE)
        event = decode(module.NAME, module.EXAMPLE, ctx)
        assert event is not None and event.kind == DELTA, module.NAME


def test_the_adapter_registry_is_built_from_its_modules():
    assert adapters.exchange_names() == sorted([
        "binance", "binance_us", "bitfinex", "bitget", "bybit", "coinbase", "deribit", "gateio",
        "htx", "kraken", "kraken_futures", "kucoin", "okx"])
    assert adapter_for("binance") is adapter_for("binance_us") is binance
    assert binance in adapters.adapters() and len(adapters.adapters()) == 12
    assert all(isinstance(module, ExchangeAdapter) for module in adapters.adapters())
    assert all(module.__name__.rsplit(".", 1)[1] in module.EXCHANGES[0]
               for module in adapters.adapters())          # one module per exchange family
    assert reason_of(adapter_for, "bitmex") == "unsupported_exchange"
    assert set(members(ExchangeAdapter)) >= {"EXCHANGES", "RULES", "decode_message", "decode_delta",
                                             "decode_snapshot", "stream_of_url"}


def test_a_module_lacking_part_of_the_contract_fails_the_registry_at_once(tmp_path, monkeypatch):
    package = tmp_path / "fake_adapters"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "half.py").write_text("EXCHANGES = ('half',)\nRULES = {}\n"
                                     "def decode_message(*a): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fake_adapters
    with pytest.raises(TypeError, match="half does not satisfy ExchangeAdapter: lacks .*decode_delta"):
        plugin_modules(fake_adapters, ExchangeAdapter)
    sys.modules.pop("fake_adapters.half", None)


def test_the_registry_supplies_the_functions_a_venue_only_declares(tmp_path, monkeypatch):
    package = tmp_path / "declared_adapters"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plain.py").write_text(
        "EXCHANGES = ('plain',)\nRULES = {}\nDOMAINS = ('plain.example',)\nURL_MARKET = 'spot'\n"
        "SNAPSHOT_PATHS = ('/depth',)\nSYMBOL_PARAM = 'pair'\n"
        "def decode_message(raw, recv_time, source, market=None, exchange=None, **kw):\n"
        "    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import declared_adapters
    from beam_pipeline.core.adapters.base import complete
    (plain,) = plugin_modules(declared_adapters, ExchangeAdapter, complete)
    assert plain.stream_of_url("wss://ws.plain.example/feed") == ("plain", "spot")
    assert plain.stream_of_url("wss://plain.example.org/feed") is None
    assert plain.is_depth_snapshot_url("https://api.plain.example/depth?pair=AB")
    assert plain.symbol_from_url("https://api.plain.example/depth?pair=AB") == "AB"
    assert plain.decode_delta(b"{}", None, 1, "f:1") is None
    assert plain.connection_number(b"[]") is None
    sys.modules.pop("declared_adapters.plain", None)


# ---- exchanges and markets from URLs -----------------------------------------------------------

@pytest.mark.parametrize("url,exchange,market", [
    ("https://www.binance.com/api/v1/depth?symbol=ZILUSDT&limit=1000", "binance", "spot"),
    ("https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000", "binance", "spot"),
    ("https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000", "binance", "usdm"),
    ("https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP&limit=1000", "binance", "coinm"),
    ("https://api.binance.us/api/v3/depth?symbol=BTCUSDT&limit=1000", "binance_us", "spot"),
])
def test_rest_lines_of_every_binance_depth_endpoint(url, exchange, market):
    line = f"{url} -> 1700000000.25: ".encode() + SNAPSHOT_BODY
    event = decode("cryptofeed", line)
    assert (event.exchange, event.market, event.symbol, event.kind, event.last_id,
            event.recv_time) == (exchange, market, url.split("symbol=")[1].split("&")[0], SNAPSHOT,
                                 5, 1_700_000_000_250)
    assert event.rule == (PREVIOUS_LINK if market in ("usdm", "coinm") else RANGE_PLUS_ONE)


@pytest.mark.parametrize("url,exchange,market", [
    ("wss://stream.binance.com:9443/stream?streams=btcusdt@depth", "binance", "spot"),
    ("wss://fstream.binance.com/stream?streams=btcusdt@depth", "binance", "usdm"),
    ("wss://dstream.binance.com/stream?streams=btcusd_perp@depth", "binance", "coinm"),
    ("wss://stream.binance.us:9443/stream?streams=btcusdt@depth", "binance_us", "spot"),
    ("wss://notbinance.com/ws", None, None),
    ("wss://ws.bitmex.com/realtime", None, None),      # no adapter (yet)
])
def test_connect_lines_name_exchange_and_market(url, exchange, market):
    ctx = framing.context_from_header("cryptofeed", f"{url} <-> 1700000000.1".encode())
    assert ctx == FileContext("cryptofeed", exchange, market)


def test_binance_us_and_binance_are_different_keys_and_coinm_links_to_the_previous_id():
    us = FileContext("cryptofeed", "binance_us", "spot")
    com = FileContext("cryptofeed", "binance", "spot")
    line = b"1700000000.2: " + combined("BTCUSDT", depth("BTCUSDT", 1, 3))
    assert decode("cryptofeed", line, us).key == ("binance_us", "spot", "BTCUSDT")
    assert decode("cryptofeed", line, com).key == ("binance", "spot", "BTCUSDT")
    coinm = FileContext("cryptofeed", "binance", "coinm")
    event = decode("cryptofeed", b"1700000000.2: " + combined(
        "BTCUSD_PERP", depth("BTCUSD_PERP", 10, 12, prev=9)), coinm)
    assert (event.market, event.rule, event.prev_id) == ("coinm", PREVIOUS_LINK, 9)
    # a COIN-M delta without pu cannot be checked
    assert reason_of(decode, "cryptofeed", b"1700000000.2: " + js(depth("BTCUSD_PERP", 1, 2)),
                     coinm) == "missing_prev_id"


# ---- cryptofeed, current layout ---------------------------------------------------------------

CONFIGURATION = b'configuration: {"l2_book":["BTC-USDT"],"trades":["BTC-USDT"]}'
CONNECT_LINE = b"wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms <-> 1700000000.1"


def test_cryptofeed_current_header_and_connect_lines_are_not_records():
    for line in (CONFIGURATION, CONNECT_LINE):
        assert framing.is_header(line)
    assert cryptofeed.control(CONFIGURATION, FileContext("cryptofeed")).kind == HEADER
    assert cryptofeed.control(CONNECT_LINE, FileContext("cryptofeed")).kind == CONNECT
    ws = b"1700000000.2: " + combined("BTCUSDT", depth("BTCUSDT", 1, 3))
    assert cryptofeed.control(ws, FileContext("cryptofeed")) is None
    assert not framing.is_header(ws)


def test_detection_looks_at_the_first_records_not_one_line():
    ws = b"1700000000.2: " + combined("BTCUSDT", depth("BTCUSDT", 1, 3))
    rest = b"https://www.binance.com/api/v1/depth?symbol=BTCUSDT -> 1700000000.3: " + SNAPSHOT_BODY
    # the current recorder's file: a header the bare-JSON reading took for garbage
    assert framing.detect_format([CONFIGURATION, CONNECT_LINE, ws, rest, ws]) == "cryptofeed"
    envelope = framings.envelope.EXAMPLE
    # two garbage lines (one even looks like JSON) do not outvote five envelopes
    assert framing.detect_format([b"{{not json", b"garbage", *[envelope] * 5]) == "envelope"
    assert framing.detect_format([b"", b"  ", envelope]) == "envelope"
    # nothing any format recognises
    assert framing.detect_format([b"MIT License", b"", b"Copyright (c) 2024"]) == framings.UNKNOWN
    assert framing.detect_format([]) == framings.UNKNOWN


def test_a_file_of_unknown_format_gives_unknown_format_dead_letters_that_say_what_to_try():
    with pytest.raises(Rejected) as raised:
        decode(framings.UNKNOWN, b"MIT License")
    assert raised.value.reason == "unknown_format"
    assert "--input_format" in raised.value.message and "hftbacktest" in raised.value.message


# ---- hftbacktest ---------------------------------------------------------------------------------

def hft_line(stamp, payload: bytes) -> bytes:
    return str(stamp).encode() + b" " + payload


def test_hftbacktest_snapshot_line_belongs_to_the_symbol_of_the_files_depth_frames():
    head = [hft_line(1_700_000_000_100_000_000, combined("ETHUSDT", dict(TRADE, s="ETHUSDT"), "trade")),
            hft_line(1_700_000_000_200_000_000, combined("ETHUSDT", depth("ETHUSDT", 1, 3))),
            hft_line(1_700_000_000_300_000_000, SNAPSHOT_BODY)]
    assert framing.detect_format(head) == "hftbacktest"
    ctx = hftbacktest.open(head, "/data/anything.gz")
    assert ctx == FileContext("hftbacktest", symbol="ETHUSDT")
    snapshot = framing.decode_record(head[2], ctx, "f:3")
    assert (snapshot.key, snapshot.kind, snapshot.last_id, snapshot.recv_time) == (
        ("binance", "spot", "ETHUSDT"), SNAPSHOT, 5, 1_700_000_000_300)
    assert framing.decode_record(head[0], ctx, "f:1") is None          # a trade: ignored


def test_hftbacktest_recorder_clock_behind_the_exchange_is_kept_as_is():
    ctx = FileContext("hftbacktest", symbol="ETHUSDT")
    # recorded 1.3 s before the exchange's E: not an error, both times kept
    event = framing.decode_record(hft_line(1_700_000_000_200_000_000, combined(
        "ETHUSDT", depth("ETHUSDT", 1, 3, at=1_700_000_001_500))), ctx, "f:2")
    assert (event.recv_time, event.event_time) == (1_700_000_000_200, 1_700_000_001_500)


def test_hftbacktest_microsecond_stamps_and_futures_frames():
    ctx = FileContext("hftbacktest", symbol="ETHUSDT")
    event = framing.decode_record(hft_line(1_700_000_000_200_123, combined(
        "ETHUSDT", depth("ETHUSDT", 10, 12, prev=9))), ctx, "f:2")
    assert (event.recv_time, event.market, event.rule) == (1_700_000_000_200, "usdm", PREVIOUS_LINK)
    futures_snapshot = js({"lastUpdateId": 11, "E": 1_700_000_000_300, "T": 1_700_000_000_299,
                           "bids": [], "asks": []})
    event = framing.decode_record(hft_line(1_700_000_000_300_000, futures_snapshot), ctx, "f:3")
    assert (event.kind, event.market, event.symbol) == (SNAPSHOT, "usdm", "ETHUSDT")


def test_hftbacktest_file_symbol_from_the_name_or_unknown():
    snapshot_first = [hft_line(1_700_000_000_100_000_000, SNAPSHOT_BODY)]
    assert hftbacktest.open(snapshot_first, "/x/btcusdt_20240808.gz").symbol == "BTCUSDT"
    unknown = hftbacktest.open(snapshot_first, "/x/capture.gz")
    assert unknown.symbol is None
    assert reason_of(framing.decode_record, snapshot_first[0], unknown, "f:1") == "missing_field"
    two = [hft_line(1, b"")] + [hft_line(1_700_000_000_100_000_000, combined(s, depth(s, 1, 2)))
                                for s in ("ETHUSDT", "BTCUSDT")]
    assert hftbacktest.open(two, "/x/ethusdt_20240808.gz").symbol is None   # several: none is sure
    assert reason_of(framing.decode_record, b"1700000000 {}", unknown, "f:1") == "bad_framing"


# ---- Tardis.dev ----------------------------------------------------------------------------------

def tardis_line(stamp: str, message) -> bytes:
    return js({"localTimestamp": stamp, "message": message})


def test_tardis_replay_lines_deltas_and_in_stream_snapshots():
    ctx = FileContext("tardis")
    delta = tardis_line("2023-11-14T22:13:20.1234567Z",
                        {"stream": "btcusdt@depth@100ms", "data": depth("BTCUSDT", 4, 6)})
    snapshot = tardis_line("2023-11-14T22:13:20.05Z", {
        "stream": "btcusdt@depthSnapshot", "generated": True,
        "data": {"lastUpdateId": 5, "bids": [["100.00", "2.0"]], "asks": []}})
    trade = tardis_line("2023-11-14T22:13:21Z", {"stream": "btcusdt@trade", "data": TRADE})
    assert framing.detect_format([snapshot, delta, trade]) == "tardis"
    assert tardis.BLANK_IS_DISCONNECT
    event = framing.decode_record(delta, ctx, "f:2")
    assert (event.key, event.first_id, event.recv_time) == (("binance", "spot", "BTCUSDT"), 4,
                                                            1_700_000_000_123)
    event = framing.decode_record(snapshot, ctx, "f:1")
    assert (event.kind, event.symbol, event.last_id, event.recv_time) == (
        SNAPSHOT, "BTCUSDT", 5, 1_700_000_000_050)
    assert framing.decode_record(trade, ctx, "f:3") is None
    assert reason_of(framing.decode_record, tardis_line("yesterday", {}), ctx, "f:4") == \
        "mistyped_field"
    assert reason_of(framing.decode_record, b'{"localTimestamp":"2023-11-14T22:13:20Z"}', ctx,
                     "f:5") == "missing_field"


@pytest.mark.parametrize("text,ms", [
    (b"2023-11-14T22:13:20Z", 1_700_000_000_000), (b"2023-11-14T22:13:20.1Z", 1_700_000_000_100),
    (b"2023-11-14T22:13:20.0999999Z", 1_700_000_000_099), (b"1970-01-01T00:00:00.000Z", 0),
    (b"2023-11-14T22:13:20.5+00:00", 1_700_000_000_500)])
def test_iso_stamps_are_exact(text, ms):
    assert iso_ms(text) == ms


@pytest.mark.parametrize("text", [b"2023-13-14T22:13:20Z", b"2023-11-14 22:13:20Z",
                                  b"2023-11-14T22:13:20+02:00", b"99999-11-14T22:13:20Z"])
def test_bad_iso_stamps_are_rejected(text):
    assert reason_of(iso_ms, text) == "mistyped_field"


def test_integer_stamps_by_their_size():
    assert epoch_integer_ms(b"1723161254036052868") == 1_723_161_254_036     # ns
    assert epoch_integer_ms(b"1723161254036052") == 1_723_161_254_036        # µs
    assert epoch_integer_ms(b"1723161254036") == 1_723_161_254_036           # ms
    assert seconds_ms(b"1723161254.0360529") == 1_723_161_254_036
    assert not hftbacktest.looks_like(b"9" * 20 + b" {}")          # past any epoch stamp


# ---- bare / combined Binance lines and envelopes keep their behaviour ---------------------------

def test_bare_and_combined_lines_and_envelopes_in_a_binance_file():
    ctx = FileContext("binance")
    bare = decode("binance", js(depth("BTCUSDT", 1, 3)), ctx)
    wrapped = decode("binance", combined("BTCUSDT", depth("BTCUSDT", 1, 3)), ctx)
    assert bare == wrapped and bare.recv_time is None and bare.exchange == "binance"
    assert decode("binance", framings.envelope.EXAMPLE, ctx).recv_time == 1_700_000_000_007
    # a snapshot body in a bare-JSON file names no symbol: another stream's message, as before
    assert decode("binance", SNAPSHOT_BODY, ctx) is None


def test_pubsub_messages_keep_their_signature_and_name_binance_us_by_attribute():
    raw = combined("BTCUSDT", depth("BTCUSDT", 1, 3))
    event = framing.decode_message(raw, {"exchange": "binance_us", "recv_ts_ms": "7"}, "pubsub:s/m")
    assert (event.key, event.recv_time, event.source) == (("binance_us", "spot", "BTCUSDT"), 7,
                                                          "pubsub:s/m")
    assert framing.decode_message(raw, {}, "pubsub:s/m").exchange == "binance"
    assert reason_of(framing.decode_message, raw, {"exchange": "bitmex"}, "m") == \
        "unsupported_exchange"
