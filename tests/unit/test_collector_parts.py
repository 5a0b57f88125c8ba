"""The collector's pure parts: frames -> envelope lines, the overlap of a planned reconnect, the
request-weight budget, the reconnect backoff (its healthy-reset rule), and its option checks."""
import json
from types import SimpleNamespace

import pytest
import tenacity

from beam_pipeline.capture import venue_for, venue_names
from beam_pipeline.capture.base import Refusal

from beam_pipeline.collector import (Frame, Metrics, OverlapMerge, ReconnectBackoff, Resubscriptions,
                                     WeightBudget,
                                     depth_weight, envelope_line, parse_args, parse_frame,
                                     stream_url)
from beam_pipeline.core.framing import FileContext, decode_record


def frame(symbol, first, last, prev=None):
    return Frame(symbol, "delta", b"{}", first, last, prev, 1)


def test_a_frame_becomes_an_envelope_line_the_pipeline_decodes():
    raw = (b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1700000000000,'
           b'"s":"BTCUSDT","U":5,"u":7,"b":[["1.00","2.0"]],"a":[]}}')
    parsed = parse_frame(raw)
    assert (parsed.symbol, parsed.kind, parsed.first_id, parsed.last_id) == ("BTCUSDT", "delta", 5, 7)
    line = envelope_line("spot", parsed.symbol, 1700000000123, parsed.kind, parsed.payload)
    event = decode_record(line, FileContext("envelope"), "f:1")
    assert (event.symbol, event.first_id, event.last_id, event.recv_time) == ("BTCUSDT", 5, 7,
                                                                             1700000000123)
    assert parse_frame(b'{"result":null,"id":1}') is None
    assert parse_frame(b'{"stream":"btcusdt@trade","data":{}}').kind == "other"


def test_stream_url_and_depth_weights():
    assert stream_url("wss://stream.binance.com:9443/", ["BTCUSDT", "ETHUSDT"]) == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms")
    assert depth_weight("spot", 1000) == 50 and depth_weight("usdm", 1000) == 20
    assert depth_weight("spot", 100) == 5 and depth_weight("coinm", 5000) == 20


def test_the_overlap_writes_each_id_once_and_switches_when_the_new_connection_joins():
    last = {"A": 10}
    merge = OverlapMerge(last)
    assert merge.from_new(frame("A", 13, 14)) == []          # ahead of the old: waits
    assert [f.last_id for f in merge.from_old(frame("A", 11, 12))] == [12, 14]   # joined
    assert merge.from_old(frame("A", 13, 14)) == []           # the old one's copy: not again
    assert [f.last_id for f in merge.from_new(frame("A", 15, 16))] == [16]
    assert merge.done(["A"]) and not merge.done(["A", "B"])
    assert last == {"A": 16}


def test_the_overlap_drops_what_the_new_connection_repeats_and_joins_futures_by_pu():
    last = {"F": 100}
    merge = OverlapMerge(last)
    assert merge.from_new(frame("F", 90, 95, 89)) == []       # already written by the old one
    assert [f.last_id for f in merge.from_new(frame("F", 96, 104, 100))] == [104]
    assert merge.done(["F"])


def test_the_overlap_timeout_switches_the_rest():
    merge = OverlapMerge({"A": 10})
    merge.from_new(frame("A", 20, 21))
    assert [f.last_id for f in merge.switch_all()] == [21]


def test_the_weight_budget_waits_for_the_oldest_spend_to_age_out():
    budget = WeightBudget(100)
    assert budget.wait_s(50, 0.0) == 0
    budget.spend(50, 0.0)
    budget.spend(50, 10.0)
    assert budget.wait_s(50, 20.0) == pytest.approx(40.0)
    assert budget.wait_s(50, 61.0) == 0


@pytest.mark.parametrize("argv, message", [
    (["--market", "spot", "--symbols", "BTCUSDT"], "give --topic, --kafka_topic, --output_dir, or several"),
    (["--market", "spot", "--symbols", "BTC-USDT", "--output_dir", "x"], "--symbols"),
    (["--market", "moon", "--symbols", "BTCUSDT", "--output_dir", "x"], "invalid choice"),
    (["--market", "spot", "--symbols", "BTCUSDT", "--topic", "t"], "--topic must be"),
    (["--market", "spot", "--symbols", "BTCUSDT", "--output_dir", "x", "--max_backoff", "0"],
     "--max_backoff"),
    (["--exchange", "kraken", "--market", "spot", "--symbols", "X", "--output_dir", "x"],
     "invalid choice"),
    (["--exchange", "okx", "--market", "usdm", "--symbols", "BTC-USDT", "--output_dir", "x"],
     "--market usdm is not one of okx's"),
    (["--exchange", "okx", "--market", "spot", "--symbols", "BTCUSDT", "--output_dir", "x"],
     "OKX instIds are like BTC-USDT"),
    (["--exchange", "okx", "--market", "spot", "--symbols", "BTC-USDT-SWAP", "--output_dir", "x"],
     "not of OKX instrument type spot"),
    (["--exchange", "bybit", "--market", "swap", "--symbols", "BTCUSDT", "--output_dir", "x"],
     "--market swap is not one of bybit's"),
    (["--exchange", "bybit", "--market", "spot", "--symbols", "BTC/USDT", "--output_dir", "x"],
     "Bybit symbols are like BTCUSDT"),
    (["--market", "spot", "--symbols", "BTCUSDT", "--output_dir", "x", "--recovery_kafka_topic",
      "r"], "--recovery_kafka_topic needs --kafka_bootstrap_servers"),
    (["--market", "spot", "--symbols", "BTCUSDT", "--output_dir", "x",
      "--kafka_bootstrap_servers", "h:1"], "--kafka_bootstrap_servers needs --kafka_topic, "
                                           "--recovery_kafka_topic or both"),
])
def test_mistyped_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for option in ("--exchange", "--market", "--symbols", "--ws_url", "--rest_url", "--topic", "--output_dir",
                   "--recovery_subscription", "--max_backoff", "--max_disconnect", "--metrics_file",
                   "--planned_reconnect", "--idle_timeout", "--request_weight_per_minute",
                   "--healthy_seconds"):
        assert option in text


def _ceiling(failures, initial=0.5, most=8.0):
    return min(most, initial * 2 ** (failures - 1))


def test_the_backoff_grows_with_every_failed_attempt_and_resets_only_when_healthy():
    backoff = ReconnectBackoff(initial_s=0.5, max_s=8.0, healthy_s=10.0)
    assert backoff.next_wait() == 0.0                       # nothing failed: at once
    # accepted and closed at once; delivered but up 9.9 s; up 60 s without a depth frame: each one
    # more failed attempt, like a refused handshake (tenacity's after=)
    assert not backoff.ended(opened=0.0, first_frame=None, now=0.01)
    assert not backoff.ended(opened=100.0, first_frame=100.1, now=109.9)
    assert not backoff.ended(opened=200.0, first_frame=None, now=260.0)
    backoff.failed()
    assert backoff.failures == 4
    for failures in range(1, 9):                            # full jitter over a doubling window
        backoff.failures = failures
        waits = [backoff.next_wait() for _ in range(2000)]
        assert 0 <= min(waits) and max(waits) <= _ceiling(failures)
        assert max(waits) > 0.9 * _ceiling(failures) and min(waits) < 0.1 * _ceiling(failures)
    # its first depth frame delivered and up 10 s: healthy; the count resets, the next at once
    assert backoff.ended(opened=300.0, first_frame=300.5, now=310.0)
    assert backoff.failures == 0 and backoff.next_wait() == 0.0


def test_tenacity_waits_with_the_backoff_continuing_the_count_of_closed_connections():
    backoff = ReconnectBackoff(initial_s=0.5, max_s=8.0, healthy_s=10.0)
    for _ in range(3):                              # three connections accepted, then closed
        backoff.ended(opened=0.0, first_frame=None, now=0.0)
    sleeps, tries = [], []

    def handshake():
        tries.append(1)
        if len(tries) <= 4:
            raise OSError("refused")
        return "connected"

    retrying = tenacity.Retrying(wait=backoff, after=backoff.failed, sleep=sleeps.append,
                                 retry=tenacity.retry_if_exception_type(OSError))
    assert retrying(handshake) == "connected"
    assert backoff.failures == 3 + 4 and len(sleeps) == 4
    assert all(0 <= wait <= _ceiling(3 + n) for n, wait in enumerate(sleeps, 1))


# ---- the venues whose snapshots come in-stream (beam_pipeline/capture/) ---------------------------

OKX_SNAPSHOT = (b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{"asks":'
                b'[["101","1","0","1"]],"bids":[["99","2","0","1"]],"ts":"1700000000000","checksum":0,'
                b'"seqId":100,"prevSeqId":-1}]}')
OKX_UPDATE = (b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[],'
              b'"bids":[["99","0","0","1"]],"ts":"1700000000100","checksum":0,"seqId":107,'
              b'"prevSeqId":100}]}')
BYBIT_SNAPSHOT = (b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1700000000000,"data":{"s":'
                  b'"BTCUSDT","b":[["99","2"]],"a":[["101","1"]],"u":40,"seq":400},"cts":1699999999999}')
BYBIT_DELTA = (b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1700000000100,"data":{"s":'
               b'"BTCUSDT","b":[["99","0"]],"a":[],"u":41,"seq":410},"cts":1700000000099}')


@pytest.mark.parametrize("name, raws, ids", [
    ("okx", (OKX_SNAPSHOT, OKX_UPDATE), ((100, None), (107, 100))),
    ("bybit", (BYBIT_SNAPSHOT, BYBIT_DELTA), ((40, None), (41, None))),
])
def test_a_venue_frame_becomes_the_envelope_line_its_adapter_decodes(name, raws, ids):
    venue = venue_for(name)
    events = []
    for raw, (last, prev) in zip(raws, ids):
        frame = venue.parse_frame(raw)
        assert (frame.symbol, frame.last_id, frame.prev_id) == ("BTC-USDT" if name == "okx" else
                                                                "BTCUSDT", last, prev)
        line = envelope_line("spot", frame.symbol, 1700000000123, frame.kind, frame.payload, name)
        events.append(decode_record(line, FileContext("envelope"), "f:1"))
    assert [(e.exchange, e.market, e.kind, e.last_id) for e in events] == [
        (name, "spot", "snapshot", ids[0][0]), (name, "spot", "delta", ids[1][0])]


def test_what_a_venue_answers_is_not_written_and_a_refusal_is_said():
    okx, bybit = venue_for("okx"), venue_for("bybit")
    assert okx.parse_frame(b"pong") is None
    assert okx.parse_frame(b'{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"}}') is None
    refusal = okx.parse_frame(b'{"event":"error","code":"60018","msg":"instId:X doesn\'t exist"}')
    assert isinstance(refusal, Refusal) and "doesn't exist" in refusal.message
    assert bybit.parse_frame(b'{"success":true,"ret_msg":"pong","op":"ping"}') is None
    assert isinstance(bybit.parse_frame(b'{"success":false,"ret_msg":"Invalid symbol","op":"subscribe"}'),
                      Refusal)
    assert okx.parse_frame(b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[]}').kind == "other"


def test_each_venue_connects_subscribes_and_resubscribes_as_documented():
    okx, bybit, binance = venue_for("okx"), venue_for("bybit"), venue_for("binance")
    assert okx.connect_url("wss://ws.okx.com:8443", "spot", ["BTC-USDT"]) == \
        "wss://ws.okx.com:8443/ws/v5/public"
    assert [json.loads(m) for m in okx.subscribe_messages("spot", ["BTC-USDT", "ETH-USDT"])] == [
        {"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"},
                                     {"channel": "books", "instId": "ETH-USDT"}]}]
    assert [json.loads(m)["op"] for m in okx.resubscribe_messages("spot", "BTC-USDT")] == [
        "unsubscribe", "subscribe"]
    assert bybit.connect_url("wss://stream.bybit.com/", "linear", ["BTCUSDT"]) == \
        "wss://stream.bybit.com/v5/public/linear"
    many = [f"S{n}USDT" for n in range(12)]             # ten topics per request at most
    assert [len(json.loads(m)["args"]) for m in bybit.subscribe_messages("spot", many)] == [10, 2]
    assert json.loads(bybit.subscribe_messages("option", ["BTC-30DEC22-18000-C"])[0])["args"] == [
        "orderbook.25.BTC-30DEC22-18000-C"]
    assert (okx.keepalive_message(), json.loads(bybit.keepalive_message())) == ("ping", {"op": "ping"})
    assert (binance.RESYNC, okx.RESYNC, bybit.RESYNC) == ("rest", "resubscribe", "resubscribe")
    assert venue_names() == ["binance", "bybit", "okx"]


def test_a_recovery_request_is_answered_by_a_resubscription_unless_a_snapshot_covers_it():
    collector = SimpleNamespace(metrics=Metrics("spot", "okx"),
                                args=SimpleNamespace(recovery_dedup_seconds=5.0))
    resync = Resubscriptions(collector)
    resync.arrived("BTC-USDT", 100)                 # the subscription's snapshot, just now
    resync.want("BTC-USDT", True, from_id=108)      # a gap after it: that snapshot cannot resync it
    assert resync.pending == {"BTC-USDT"}
    resync.want("BTC-USDT", True, from_id=108)      # asked, not arrived: that one answers
    resync.arrived("BTC-USDT", 130)
    resync.want("BTC-USDT", True, from_id=120)      # the fresh snapshot covers it
    counts = collector.metrics.counts
    assert (counts["recovery_requests"], counts["recovery_deduplicated"]) == (3, 2)
    assert resync.pending == set() and resync.queue.qsize() == 1
