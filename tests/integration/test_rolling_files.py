"""The live collector's rolling files, followed as they grow: fake exchange -> collector
(--output_dir: binance-spot-YYYYMMDDTHH.jsonl.gz, one gzip member a second) -> a streaming job
watching the folder (the real command: --streaming --input DIR --watch_seconds), on DirectRunner
and on embedded Flink. The job is reading before the collector's faults are injected (a small gap,
a medium gap no snapshot answers, a dropped connection the collector reconnects and resyncs after)
and while the file keeps growing; once the collector has stopped and the job's summary counts every
record it wrote, the job's gaps, corrupt periods and summary counts equal a batch run over the
finished file. With --topic too, a Pub/Sub streaming job reading the same feed gives the same
outputs."""
import os
import signal
import subprocess
import sys
import time

import pytest

from beam_pipeline.cli import main
from beam_pipeline.collector import read_metrics
from beam_pipeline.readback import read
from runners import flink
from tests.conftest import REPO
from tests.tooling.fake_exchange import FakeExchange
from tests.tooling.streaming_job import (comparable, start_job, start_watching, stop_group,
                                         summary_of, wait_for, wait_written)

COMMON = ["--recovery_timeout", "2"]      # a medium gap no snapshot answers ends within seconds


def _collector(exchange, folder, metrics_file, *extra, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline.collector", "--market", exchange.market,
         "--symbols", ",".join(exchange.symbols), "--ws_url", exchange.ws_url,
         "--rest_url", exchange.rest_url, "--output_dir", folder, "--metrics_file", metrics_file,
         "--initial_backoff", "0.1", "--max_backoff", "0.5", "--status_seconds", "1", *extra],
        cwd=REPO, env=dict(env or os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def _clean_written(out):
    """A clean part with rows (the sinks write every --output_flush_seconds, the summary every 5 s),
    in either layout (streaming writes under date partitions: transforms/layout.py)."""
    return any(name.startswith("part-") and name != "part-empty.parquet"
               for _, _, names in os.walk(os.path.join(out, "clean")) for name in names)


def _all_counted(out, written):
    summary = summary_of(out)
    return summary if summary and summary["input_records"] == written and summary["balanced"] else None


def _log(out):
    with open(out + ".log") as handle:
        return handle.read()[-4000:]


def _follow_a_live_capture(tmp_path, *runner, emulator=None):
    """The capture, followed by a watched job with `runner`'s options. With `emulator` the
    collector also publishes the same feed to Pub/Sub, read by a Pub/Sub streaming job; returns
    (comparable outputs of the watched job, of the Pub/Sub job or None)."""
    exchange = FakeExchange("spot").start()
    folder, out = str(tmp_path / "capture"), str(tmp_path / "stream")
    os.makedirs(folder)
    metrics_file = str(tmp_path / "metrics.json")
    started = time.monotonic()
    # DirectRunner: the defaults users get, and a graceful stop (SIGTERM) writes what the job read;
    # embedded Flink cancels on a signal, so its files are flushed every second
    graceful = not runner
    jobs = [start_watching(folder, out, *COMMON, *runner, flush_seconds=None if graceful else "1")]
    extra, env, live = [], None, None
    if emulator is not None:
        topic = emulator.create_topic(emulator.unique_name("rolling"))
        subscription = emulator.create_subscription(topic, emulator.unique_name("rolling-sub"))
        live = str(tmp_path / "pubsub")
        jobs.append(start_job(emulator.host, subscription, live, *COMMON))
        extra, env = ["--topic", topic], dict(os.environ, PUBSUB_EMULATOR_HOST=emulator.host)
    collector = _collector(exchange, folder, metrics_file, *extra, env=env)
    symbols = exchange.symbols
    try:
        # the job is reading the file while the collector writes it: clean rows are written
        assert wait_for(lambda: _clean_written(out), 120), _log(out)
        reading_at = time.monotonic()
        exchange.drop_connections()                # reconnect: markers, snapshots, resyncs
        assert wait_for(lambda: read_metrics(metrics_file).get("reconnects", 0) >= 1, 30)
        time.sleep(0.5)
        exchange.skip_ids(symbols[0], 3)           # lost by the exchange: a small gap
        exchange.skip_ids(symbols[1], 50)          # a medium gap: no snapshot comes, it times out
        time.sleep(3.5)                            # > --recovery_timeout of event time after it
        collector.send_signal(signal.SIGTERM)
        log, _ = collector.communicate(timeout=60)
        assert collector.returncode == 0, log[-3000:]
        written = read_metrics(metrics_file)["records"]
        for folder_out in filter(None, (out, live)):
            assert wait_for(lambda: _all_counted(folder_out, written), 90), (
                written, summary_of(folder_out), _log(folder_out))
            if not (graceful and folder_out == out):
                assert wait_written(folder_out, 60), _log(folder_out)
        drained = time.monotonic()
        if graceful:                               # stopped as users stop it, nothing waited for
            jobs[0].send_signal(signal.SIGTERM)
            assert jobs[0].wait(timeout=60) == 0, _log(out)
            assert "every record read is written" in _log(out)
    finally:
        if collector.poll() is None:
            collector.kill()
        exchange.stop()
        for job in jobs:
            stop_group(job)
    print(f"\n{runner or 'DirectRunner'}: first records after {reading_at - started:.1f} s, "
          f"every record of the collector ({written}) counted {drained - reading_at:.1f} s later")
    [capture] = os.listdir(folder)
    assert capture.startswith("binance-spot-") and capture.endswith(".jsonl.gz")

    batch = str(tmp_path / "batch")
    assert main(["--input", folder, "--output", batch, *COMMON]) == 0
    streamed, reference = comparable(out), comparable(batch)
    assert streamed == reference
    # what was injected is there: the gaps, the timed-out wait, the reconnect
    gaps = {(g["symbol"], g["gap_class"]) for g in read(batch, "gaps").to_pylist()}
    assert (symbols[0], "small") in gaps and (symbols[1], "medium") in gaps
    assert reference["summary"]["corrupt_periods"] >= 1
    assert summary_of(batch)["control"] == len(symbols) * read_metrics(metrics_file)["disconnects"] > 0
    return streamed, comparable(live) if live else None


def test_a_growing_capture_on_direct_runner_equals_batch(tmp_path):
    _follow_a_live_capture(tmp_path)


@pytest.fixture(scope="module")
def _jar():
    return flink.job_server_jar()


def test_a_growing_capture_on_flink_equals_batch(tmp_path, _jar):
    _follow_a_live_capture(tmp_path, "--runner", "FlinkRunner", "--checkpointing_interval", "2000")


def test_the_collectors_files_and_its_pubsub_output_give_the_same_outputs(tmp_path, pubsub_emulator):
    """--topic and --output_dir at once: the Pub/Sub job and the watched-folder job (both
    DirectRunner) read the same feed and give the same outputs, those of the batch run."""
    files, pubsub = _follow_a_live_capture(tmp_path, emulator=pubsub_emulator)
    assert pubsub == files
