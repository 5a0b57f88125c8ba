"""Every recorder format through the whole batch job (beam_pipeline.cli.main, in process): small
fixtures written here, the shared captures as they are, and a file no format recognises (exit 4).

The shared captures' expectations are the facts measured in their README files
(../shared/data/hftbacktest/README.md, ../shared/data/cryptofeed-current/README.md).
"""
import gzip
import json
import os
from collections import Counter


from beam_pipeline.cli import main
from tests.conftest import REPO, Outputs
from tests.tooling.frames import depth, js

SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
NO_GAPS = {"small": 0, "medium": 0, "large": 0, "reset": 0}


def combined(symbol, data, stream="depth@100ms") -> bytes:
    return js({"stream": f"{symbol.lower()}@{stream}", "data": data})


def trade(symbol):
    return {"e": "trade", "E": 1_700_000_001_600, "s": symbol, "t": 1, "p": "100.00", "q": "1"}


def snapshot(last_id, **extra) -> bytes:
    return js(dict({"lastUpdateId": last_id, "bids": [["100.00", "2.0"]], "asks": []}, **extra))


def write(folder, name, lines) -> str:
    path = os.path.join(str(folder), name)
    data = b"\n".join(lines) + b"\n"
    with open(path, "wb") as handle:
        handle.write(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def run(tmp_path, inputs, *extra, name="out"):
    code = main(["--input", ",".join(inputs), "--output", str(tmp_path / name), *extra])
    return code, Outputs(tmp_path / name)


def rows_by_file(summary):
    return {os.path.basename(row["file"]): row for row in summary["files"]}


# ---- the shared captures, as they are -----------------------------------------------------------

def test_hftbacktest_capture_gives_the_measured_counts(tmp_path):
    code, out = run(tmp_path, [os.path.join(SHARED, "hftbacktest", "*")])
    assert code == 0
    summary = out.summary()
    # 33,618 lines: 3,434 depthUpdate + 1 snapshot, 30,183 other-stream frames; continuous
    assert (summary["input_records"], summary["ignored"], summary["symbols"]) == (33_618, 30_183, 1)
    assert summary["clean_records"] + summary["superseded"] == 3_434 + 1
    assert summary["duplicates"] == 0 and summary["dead_letters"] == {}
    assert summary["gaps"] == NO_GAPS and summary["corrupt_periods"] == 0 and summary["balanced"]
    assert [(row["format"], row["records"], row["dead"]) for row in summary["files"]] == [
        ("hftbacktest", 33_618, 0)]
    assert sorted(os.path.basename(path) for path in summary["skipped_files"]) == [
        "LICENSE", "README.md"]
    clean = out.parquet_rows("clean")
    deltas = [row for row in clean if row["kind"] == "delta"]
    snapshots = [row for row in clean if row["kind"] == "snapshot"]
    assert [(row["symbol"], row["last_id"]) for row in snapshots] == [("ETHUSDT", 35346513512)]
    assert {row["symbol"] for row in clean} == {"ETHUSDT"}
    assert max(row["last_id"] for row in deltas) == 35346671849
    assert all(row["anchored"] for row in clean) and len({row["segment_id"] for row in clean}) == 1
    # the recorder's clock ran ~1.3 s behind the exchange's E: kept as recorded, no error
    behind = [row["event_time"] - row["recv_time"] for row in deltas]
    assert all(delta.total_seconds() > 0 for delta in behind)
    assert out.parquet_rows("gaps") == []


def test_cryptofeed_current_capture_gives_the_measured_counts(tmp_path):
    code, out = run(tmp_path, [os.path.join(SHARED, "cryptofeed-current", "*")])
    assert code == 0
    summary = out.summary()
    # 11,369 lines: 2 header lines, 4,709 depthUpdate, 10 snapshots, 6,648 other-stream frames
    assert (summary["input_records"], summary["ignored"], summary["symbols"]) == (11_367, 6_648, 10)
    assert summary["clean_records"] + summary["superseded"] == 4_709 + 10
    assert summary["duplicates"] == 0 and summary["dead_letters"] == {}
    assert summary["gaps"] == NO_GAPS and summary["corrupt_periods"] == 0 and summary["balanced"]
    assert summary["reconnects"] == 0
    assert [(row["format"], row["records"], row["dead"]) for row in summary["files"]] == [
        ("cryptofeed", 11_367, 0)]
    clean = out.parquet_rows("clean")
    per_symbol = Counter(row["symbol"] for row in clean)
    assert set(per_symbol) == {"ZILUSDT", "MANAUSDT", "DENTUSDT", "AXSBNB", "ETHBRL", "BTCSTUSDT",
                               "QTUMETH", "BTCAUD", "RENBTCETH", "NEOUSDC"}
    by_symbol = {}
    for row in sorted(clean, key=lambda r: (r["symbol"], r["last_id"], r["kind"])):
        by_symbol.setdefault(row["symbol"], []).append(row)
    for symbol, rows in by_symbol.items():
        # every snapshot bridges (spot: first applied delta has U <= lastUpdateId+1 <= u)
        first, applied = rows[0], rows[1]
        assert first["kind"] == "snapshot", symbol
        assert applied["first_id"] <= first["last_id"] + 1 <= applied["last_id"], symbol
        assert all(row["anchored"] and row["exchange"] == "binance" and row["market"] == "spot"
                   for row in rows)
    assert out.parquet_rows("gaps") == []


# ---- every format, small fixtures -----------------------------------------------------------------

def formats_feed(folder):
    """One file per format (and layout), with what the run must make of it."""
    spot = "BTCUSDT"
    files, expected = [], {}

    # cryptofeed, current layout: header, connect line, ws and REST lines in one file; a reconnect
    files.append(write(folder, "BINANCE-current.0", [
        b'configuration: {"l2_book":["BTC-USDT"],"trades":["BTC-USDT"]}',
        b"wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade"
        b" <-> 1700000000.1",
        b"1700000000.2: " + combined(spot, depth(spot, 1, 3)),
        b"1700000000.3: " + combined(spot, trade(spot), "trade"),
        b"https://www.binance.com/api/v1/depth?symbol=BTCUSDT&limit=1000 -> 1700000000.4: "
        + snapshot(3),
        b"1700000000.5: " + combined(spot, depth(spot, 4, 6)),
        b"wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms <-> 1700000001.0",
        b"1700000001.1: " + combined(spot, depth(spot, 7, 9)),
    ]))
    expected["BINANCE-current.0"] = dict(format="cryptofeed", records=5, clean=3, ignored=1,
                                         superseded=1)
    # Binance.US, same symbol: its own key
    files.append(write(folder, "BINANCE_US-current.0", [
        b'configuration: {"l2_book":["BTC-USDT"]}',
        b"wss://stream.binance.us:9443/stream?streams=btcusdt@depth@100ms <-> 1700000000.1",
        b"1700000000.2: " + combined(spot, depth(spot, 50, 52)),
        b"https://api.binance.us/api/v3/depth?symbol=BTCUSDT&limit=1000 -> 1700000000.3: "
        + snapshot(51),
        b"1700000000.4: " + combined(spot, depth(spot, 53, 55)),
    ]))
    expected["BINANCE_US-current.0"] = dict(format="cryptofeed", records=3, clean=3, ignored=0,
                                            superseded=0)
    # cryptofeed, old layout, COIN-M: ws and http files
    coin = "BTCUSD_PERP"
    files.append(write(folder, "BINANCE_DELIVERY.ws.1.0", [
        b"wss://dstream.binance.com/stream?streams=btcusd_perp@depth@100ms <-> 1700000000.1",
        b"1700000000.2: " + combined(coin, depth(coin, 10, 12, prev=9)),
        b"",
        b"1700000000.3: " + combined(coin, depth(coin, 13, 15, prev=12)),
    ]))
    files.append(write(folder, "BINANCE_DELIVERY.http.0.0", [
        b"https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP&limit=1000 -> 1700000000.25: "
        + snapshot(11, E=1_700_000_000_240, T=1_700_000_000_239)]))
    expected["BINANCE_DELIVERY.ws.1.0"] = dict(format="cryptofeed", records=2, clean=2, ignored=0,
                                               superseded=0)
    expected["BINANCE_DELIVERY.http.0.0"] = dict(format="cryptofeed", records=1, clean=1,
                                                 ignored=0, superseded=0)
    # hftbacktest, µs stamps, the snapshot after the delta that bridges it, clock behind E
    eth = "ETHUSDT"
    files.append(write(folder, "ethusdt_20231114.gz", [
        b"1700000000100000 " + combined(eth, {"u": 5, "s": eth, "b": "1.0", "B": "1", "a": "1.1",
                                              "A": "1"}, "bookTicker"),
        b"1700000000200000 " + combined(eth, depth(eth, 1, 3)),
        b"1700000000300000 " + combined(eth, depth(eth, 4, 6)),
        b"1700000000400000 " + snapshot(5),
        b"1700000000500000 " + combined(eth, depth(eth, 7, 9)),
    ]))
    expected["ethusdt_20231114.gz"] = dict(format="hftbacktest", records=5, clean=3, ignored=1,
                                           superseded=1)
    # Tardis.dev raw replay with a disconnect (an empty line)
    sol = "SOLUSDT"

    def tardis(stamp, message):
        return js({"localTimestamp": stamp, "message": message})
    files.append(write(folder, "binance_2023-11-14.json", [
        tardis("2023-11-14T22:13:20.0500000Z", {
            "stream": "solusdt@depthSnapshot", "generated": True,
            "data": json.loads(snapshot(3))}),
        tardis("2023-11-14T22:13:20.1000000Z", {"stream": "solusdt@depth@100ms",
                                                "data": depth(sol, 2, 5)}),
        tardis("2023-11-14T22:13:20.2000000Z", {"stream": "solusdt@trade", "data": trade(sol)}),
        b"",
        tardis("2023-11-14T22:13:21.0000000Z", {"stream": "solusdt@depth@100ms",
                                                "data": depth(sol, 6, 8)}),
    ]))
    expected["binance_2023-11-14.json"] = dict(format="tardis", records=4, clean=3, ignored=1,
                                               superseded=0)
    # bare and combined Binance lines; our envelope
    ada = "ADAUSDT"
    files.append(write(folder, "raw.binance.jsonl", [
        js(depth(ada, 1, 2)), combined(ada, depth(ada, 3, 4)), js(trade(ada))]))
    expected["raw.binance.jsonl"] = dict(format="binance", records=3, clean=2, ignored=1,
                                         superseded=0)
    env = {"exchange": "binance", "market": "spot", "symbol": "XRPUSDT", "recv_ts_ms": 1_700_000_000_007}
    files.append(write(folder, "feed.jsonl", [
        js(dict(env, type="snapshot", payload=json.loads(snapshot(2)))),
        js(dict(env, type="delta", payload=depth("XRPUSDT", 3, 4)))]))
    expected["feed.jsonl"] = dict(format="envelope", records=2, clean=2, ignored=0, superseded=0)
    return files, expected


def test_every_format_is_detected_and_read(tmp_path):
    files, expected = formats_feed(tmp_path)
    code, out = run(tmp_path, files)
    assert code == 0
    summary = out.summary()
    assert summary["dead_letters"] == {} and summary["gaps"] == NO_GAPS and summary["balanced"]
    # the cryptofeed reconnect and the Tardis disconnect: points where a gap may follow
    assert summary["reconnects"] == 2
    rows = rows_by_file(summary)
    assert {name: {key: rows[name][key] for key in want} for name, want in expected.items()} == \
        expected
    assert all(row["dead"] == row["duplicates"] == 0 for row in rows.values())
    keys = Counter((row["exchange"], row["market"], row["symbol"]) for row in out.parquet_rows("clean"))
    assert keys == {("binance", "spot", "BTCUSDT"): 3, ("binance_us", "spot", "BTCUSDT"): 3,
                    ("binance", "coinm", "BTCUSD_PERP"): 3, ("binance", "spot", "ETHUSDT"): 3,
                    ("binance", "spot", "SOLUSDT"): 3, ("binance", "spot", "ADAUSDT"): 2,
                    ("binance", "spot", "XRPUSDT"): 2}
    assert summary["symbols"] == len(keys)


# ---- fail loudly -----------------------------------------------------------------------------------

def test_a_file_in_an_unknown_format_fails_the_run_and_says_what_to_try(tmp_path, capsys):
    good = write(tmp_path, "feed.jsonl", [js({"exchange": "binance", "market": "spot",
                                              "symbol": "XRPUSDT", "recv_ts_ms": 1, "type": "delta",
                                              "payload": depth("XRPUSDT", 3, 4)})])
    csv = write(tmp_path, "book.csv", [b"exchange,symbol,timestamp,bids", b"binance,BTCUSDT,1,[]",
                                       b"binance,BTCUSDT,2,[]"])
    code, out = run(tmp_path, [good, csv])
    assert code == 4
    err = capsys.readouterr().err
    assert f"{csv}: format unknown, 3 records, 0 clean" in err
    assert f"unknown_format x3, e.g. {csv}:1: no input format recognises" in err
    assert "--input_format {cryptofeed,hftbacktest,tardis,envelope,binance}" in err
    assert "feed.jsonl" not in err
    # every record is still in an output with its reason
    summary = out.summary()
    assert summary["balanced"] and summary["dead_letters"] == {"unknown_format": 3}
    letters = out.dead_letters()
    assert sorted((d["reason"], d["source"]) for d in letters) == [
        ("unknown_format", f"{csv}:{n}") for n in (1, 2, 3)]
    assert rows_by_file(summary)["book.csv"]["format"] == "unknown"


def test_a_file_mostly_dead_letters_or_without_depth_fails_unless_allowed(tmp_path, capsys):
    spot = "BTCUSDT"
    mostly_bad = write(tmp_path, "raw.jsonl", [js(depth(spot, 1, 2)), b"{not json", b"{oops",
                                               js(dict(depth(spot, 3, 4), U="x"))])
    trades_only = write(tmp_path, "trades.jsonl", [js(trade(spot)), js(trade(spot))])
    code, _ = run(tmp_path, [mostly_bad, trades_only], name="a")
    assert code == 4
    err = capsys.readouterr().err
    assert "2 input file(s) could not be read" in err
    assert f"{mostly_bad}: format binance, 4 records, 1 clean" in err and "(75%)" in err
    assert f"bad_json x2, e.g. {mostly_bad}:2:" in err
    assert f"{trades_only}: format binance, 2 records, 0 clean, 2 ignored" in err
    assert "no record was a depth update or snapshot" in err
    # a higher limit accepts the bad share; a file without any depth record still fails
    code, _ = run(tmp_path, [mostly_bad], "--max_bad_file_rate", "0.8", name="b")
    assert code == 0
    code, _ = run(tmp_path, [trades_only], "--max_bad_file_rate", "1", name="c")
    assert code == 4
