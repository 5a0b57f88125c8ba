"""The live collector on the venues whose snapshots come in-stream (OKX v5 `books`, Bybit v5
`orderbook.50`), against the local fake exchange speaking each venue's protocol
(tests/tooling/fake_exchange.py): fake exchange -> collector -> rolling files -> batch run, with the
recovery loop closed through the Pub/Sub emulator.

Per venue: the exchange loses one message of one symbol; a batch run over the files so far reports
that gap with the venue's ids and asks for a snapshot (recovery_requests/); that request, published
as the streaming job publishes it, makes the collector unsubscribe and subscribe the symbol, and the
venue's fresh in-stream snapshot anchors the next segment. Then the exchange closes the connection:
one disconnect marker per symbol, a reconnect whose subscription brings each symbol's snapshot, and
one gap per symbol for what was lost meanwhile. The final batch run's gap rows are exactly the runs
of messages the exchange sent that the files lack, each resynced. And Bybit to Pub/Sub: the
messages' attributes name the venue, and their lines are a feed a batch run checks clean."""
import gzip
import json
import os
import shutil

import pytest

from beam_pipeline.cli import main as pipeline_main
from beam_pipeline.collector import read_metrics
from beam_pipeline.core.model import RecoveryRequest
from beam_pipeline.readback import read
from tests.integration.test_collector import _collector, _stop, _wait_for
from tests.tooling.fake_exchange import FakeExchange
from transforms.sinks import recovery_request_json

# messages the exchange loses: OKX's previous-link ids are not sized, any break is a medium gap that
# asks for a snapshot; Bybit's u is, and a gap of at most --small_gap_max (10) ids only continues
# with a warning: 20 lost ids are a medium gap that asks for one
DROPPED = {"okx": 1, "bybit": 20}
ID_OF = {"okx": lambda payload: payload["data"][0]["seqId"],
         "bybit": lambda payload: payload["data"]["u"]}


def _written(folder, venue):
    """symbol -> [(type, id) of each book record in file order], and the disconnect markers."""
    records, markers = {}, {}
    for path in sorted(folder.iterdir()):
        with gzip.open(path) as handle:
            for line in handle:
                record = json.loads(line)
                if record["type"] in ("delta", "snapshot"):
                    records.setdefault(record["symbol"], []).append(
                        (record["type"], ID_OF[venue](record["payload"])))
                elif record["type"] == "disconnect":
                    markers.setdefault(record["symbol"], []).append(record["payload"])
    return records, markers


def _lost_runs(sent, written, venue):
    """(last id written before, next id) of each run of messages the exchange sent that the file
    lacks. The next id is the first id written after the run; when a snapshot written between
    covers the run, on Bybit (range-plus-one) the first id after the snapshot's, on OKX
    (previous-link) the snapshot's own."""
    deltas = [i for kind, i in written if kind == "delta"]
    snapshots = [i for kind, i in written if kind == "snapshot"]
    sent_ids = [last for _, last in sent]
    kept = set(deltas)
    runs, previous = [], None
    for i in sent_ids[sent_ids.index(deltas[0]):sent_ids.index(deltas[-1]) + 1]:
        if i in kept:
            if previous is not None and sent_ids.index(i) - sent_ids.index(previous) > 1:
                # the lost messages end at a snapshot when one was written between them
                bridge = [s for s in snapshots if previous < s < i]
                runs.append((previous, i if not bridge or venue == "bybit" else bridge[0]))
            previous = i
    return runs


def _batch(files, out):
    assert pipeline_main(["--input", str(files), "--output", str(out)]) == 0
    with open(out / "summary.json") as handle:
        return json.load(handle)


@pytest.mark.parametrize("venue", ["okx", "bybit"])
def test_a_lost_message_a_recovery_by_resubscription_and_a_dropped_connection(
        venue, pubsub_emulator, tmp_path):
    emu = pubsub_emulator
    recovery = emu.create_topic(emu.unique_name(f"recovery-{venue}"))
    recovery_sub = emu.create_subscription(recovery, emu.unique_name(f"recovery-{venue}-sub"))
    exchange = FakeExchange("spot", exchange=venue).start()
    symbols, lossy = exchange.symbols, exchange.symbols[0]
    metrics_file = str(tmp_path / "metrics.json")
    files = tmp_path / "capture"
    proc = _collector(exchange, "--output_dir", str(files), "--metrics_file", metrics_file,
                      "--recovery_subscription", recovery_sub,
                      env=dict(os.environ, PUBSUB_EMULATOR_HOST=emu.host))

    def counted(name, at_least):
        return lambda: read_metrics(metrics_file).get(name, 0) >= at_least
    try:
        _wait_for(counted("snapshots", len(symbols)), 30, "a snapshot per symbol", proc)
        exchange.drop_messages(lossy, DROPPED[venue])
        _wait_for(lambda: exchange.stats["dropped_messages"] == DROPPED[venue], 10,
                  "the lost messages", proc)
        _wait_for(counted("file_flushes", read_metrics(metrics_file)["file_flushes"] + 2), 10,
                  "the message after it on disk", proc)
        shutil.copytree(files, tmp_path / "so-far")
        first = _batch(tmp_path / "so-far", tmp_path / "batch-so-far")
        assert first["balanced"] and first["dead_letters"] == {}
        requests = read(str(tmp_path / "batch-so-far"), "recovery_requests").to_pylist()
        assert [(r["exchange"], r["market"], r["symbol"]) for r in requests] == [
            (venue, "spot", lossy)]
        for row in requests:                        # as the streaming job publishes them
            request = RecoveryRequest(**dict(row, event_time=int(row["event_time"].timestamp() * 1000)))
            emu.publish(recovery, json.dumps(recovery_request_json(request)).encode())
        _wait_for(counted("resubscribes", 1), 30, "the resubscription", proc)
        _wait_for(lambda: (read_metrics(metrics_file).get("snapshots", 0) > len(symbols)
                           and read_metrics(metrics_file).get("snapshots_pending") == 0), 30,
                  "the fresh snapshot", proc)
        exchange.refuse_connections(1.0)            # a partition: messages go by meanwhile
        exchange.drop_connections()
        _wait_for(counted("reconnects", 1), 30, "the reconnect", proc)
        _wait_for(counted("snapshots", 2 * len(symbols) + 1), 30, "the reconnect's snapshots", proc)
        _wait_for(counted("file_flushes", read_metrics(metrics_file)["file_flushes"] + 2), 10,
                  "deltas after the reconnect", proc)
        code, log = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        exchange.stop()
    assert code == 0, log[-3000:]
    status = read_metrics(metrics_file)
    assert status["exchange"] == venue and status["resubscribes"] == 1
    assert status["recovery_requests"] == 1 and status["refusals"] == 0
    assert status["reconnects"] == status["disconnects"] == 1
    assert exchange.stats["unsubscribes"] == 1 and exchange.stats["pings"] == 0   # 20 s apart

    written, markers = _written(files, venue)
    assert sorted(written) == sorted(markers) == symbols
    assert all(len(found) == 1 for found in markers.values())    # one marker per symbol
    summary = _batch(files, tmp_path / "batch")
    assert summary["balanced"] and summary["dead_letters"] == {}
    assert summary["input_records"] == status["records"] and summary["control"] == len(symbols)
    assert summary["corrupt_periods"] == 0
    gaps = read(str(tmp_path / "batch"), "gaps").to_pylist()
    snapshots = [i for kind, i in written[lossy] if kind == "snapshot"]
    # a tick of the exchange between the unsubscription and the subscription would lose that
    # message too: the resubscription's snapshot covers it, inside the hold: no gap of its own
    expected = sorted((symbol, *run) for symbol in symbols
                      for run in _lost_runs(exchange.sent_ids(symbol), written[symbol], venue)
                      if not (symbol == lossy and snapshots[1] in (run[1], run[1] - 1)))
    assert sorted((g["symbol"], g["last_good_id"], g["next_first_id"]) for g in gaps) == expected
    assert len([g for g in gaps if g["symbol"] == lossy]) == 2          # the lost message, the outage
    assert len(gaps) == len(symbols) + 1
    assert {g["resolution"] for g in gaps} == {"resynced"}

    # the lost message's gap: the venue's ids around it; the segment after it begins at the
    # resubscription's snapshot (the symbol's second), anchored
    [drop_gap] = [g for g in gaps if g["symbol"] == lossy and g["next_first_id"] < snapshots[1]]
    sent = [last for _, last in exchange.sent_ids(lossy)]
    assert sent.index(drop_gap["next_first_id"]) == sent.index(drop_gap["last_good_id"]) + 1 + \
        DROPPED[venue]
    if venue == "bybit":                                   # u + 1: the gap is sized
        assert drop_gap["gap_size"] == DROPPED[venue]
    clean = read(str(tmp_path / "batch"), "clean").to_pylist()
    segments = [(r["segment_id"], r["anchored"]) for r in clean if r["symbol"] == lossy]
    assert (snapshots[1], True) in segments and segments.index((snapshots[1], True)) > 0
    assert {anchored for _, anchored in segments} == {True}


def test_bybit_to_pubsub_carries_the_venue_in_every_message_and_a_batch_run_reads_it(
        pubsub_emulator, tmp_path):
    """fake Bybit -> collector --topic: every message's attributes name the venue and the market,
    its lines are Bybit's frames in envelopes, and a batch run over them checks them clean."""
    emu = pubsub_emulator
    feed = emu.create_topic(emu.unique_name("bybit-feed"))
    feed_sub = emu.create_subscription(feed, emu.unique_name("bybit-feed-sub"))
    exchange = FakeExchange("spot", exchange="bybit").start()
    metrics_file = str(tmp_path / "metrics.json")
    proc = _collector(exchange, "--topic", feed, "--metrics_file", metrics_file,
                      env=dict(os.environ, PUBSUB_EMULATOR_HOST=emu.host))
    try:
        _wait_for(lambda: read_metrics(metrics_file).get("published_messages", 0) >= 20, 30,
                  "20 messages", proc)
        code, log = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        exchange.stop()
    assert code == 0, log[-3000:]
    status = read_metrics(metrics_file)
    messages = emu.pull_all(feed_sub, 30, expected=status["published_messages"])
    assert len(messages) == status["published_messages"]
    lines = []
    for data, attributes in messages:
        assert (attributes["exchange"], attributes["market"], attributes["format"]) == (
            "bybit", "spot", "envelope")
        lines.extend(gzip.decompress(data).splitlines())
    (tmp_path / "feed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    summary = _batch(tmp_path / "feed.jsonl", tmp_path / "batch")
    assert summary["balanced"] and summary["dead_letters"] == {}
    assert summary["input_records"] == len(lines) == status["records"]
    assert sum(summary["gaps"].values()) == 0
    assert summary["clean_records"] == len(lines)      # each symbol's snapshot, then its deltas
