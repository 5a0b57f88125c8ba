"""Collector benchmark against the local fake exchange (a benchmark, never a timed test):
python -m bench.collector [--exchange binance|okx|bybit] [--seconds 20] [--messages_per_tick 20]
    [--drops 5] [--refuse_seconds 3] [--close_seconds 5] [--topic T]

Runs the fake exchange (tests/tooling/fake_exchange.py: 4 spot symbols, each `messages_per_tick`
messages every 10 ms) and the real collector command, writing rolling files (or to --topic with
PUBSUB_EMULATOR_HOST set); measures the collector's messages/s from its metrics file, then drops
the connection `--drops` times and reports each reconnect time (connection lost -> data again, as
the collector measured it), then the same with handshakes refused (503) for --refuse_seconds and
with handshakes accepted and closed at once (1013) for --close_seconds (the handshakes the exchange
saw), and the batch pipeline's verdict on the captured folder. The collector runs with the default
backoff and --healthy_seconds 1: each fault begins 1.5 s after data came again, on a connection
that proved healthy.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from beam_pipeline.cli import main as run_batch
from beam_pipeline.collector import read_metrics
from tests.tooling.fake_exchange import FakeExchange

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait(condition, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _dropped(exchange, metrics) -> float:
    """Drop the connection; the reconnect time the collector measured for it."""
    before = read_metrics(metrics).get("reconnects", 0)
    exchange.drop_connections()
    _wait(lambda: read_metrics(metrics).get("reconnects", 0) > before, 180)
    time.sleep(1.5)                  # the metrics file of the same second may lag
    return read_metrics(metrics)["last_reconnect_s"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.collector")
    parser.add_argument("--exchange", default="binance", choices=("binance", "bybit", "okx"))
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--messages_per_tick", type=int, default=20)
    parser.add_argument("--tick_seconds", type=float, default=0.01)
    parser.add_argument("--drops", type=int, default=5)
    parser.add_argument("--refuse_seconds", type=float, default=3.0)
    parser.add_argument("--close_seconds", type=float, default=5.0)
    parser.add_argument("--topic", default=None)
    args = parser.parse_args(argv)

    work = tempfile.mkdtemp(prefix="bench-collector-")
    exchange = FakeExchange("spot", tick_s=args.tick_seconds,
                            messages_per_tick=args.messages_per_tick, exchange=args.exchange).start()
    metrics = os.path.join(work, "metrics.json")
    output = ["--topic", args.topic] if args.topic else ["--output_dir", os.path.join(work, "files")]
    log = open(os.path.join(work, "collector.log"), "w")
    collector = subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline.collector", "--exchange", args.exchange,
         "--market", "spot",
         "--symbols", ",".join(exchange.symbols), "--ws_url", exchange.ws_url,
         "--rest_url", exchange.rest_url, *output, "--metrics_file", metrics,
         "--status_seconds", "1", "--initial_backoff", "0.5", "--max_backoff", "60",
         "--healthy_seconds", "1"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: read_metrics(metrics).get("snapshots", 0) >= len(exchange.symbols))
        first, sent, began = read_metrics(metrics), exchange.stats["frames"], time.monotonic()
        process = psutil.Process(collector.pid)
        cpu_before = sum(process.cpu_times()[:2])
        time.sleep(args.seconds)
        cpu = (sum(process.cpu_times()[:2]) - cpu_before) / (time.monotonic() - began)
        steady = read_metrics(metrics)
        rate = (steady["messages"] - first["messages"]) / (steady["uptime_s"] - first["uptime_s"])
        offered = (exchange.stats["frames"] - sent) / (time.monotonic() - began)
        reconnects = []
        for _ in range(args.drops):
            reconnects.append(_dropped(exchange, metrics))
        exchange.refuse_connections(args.refuse_seconds)     # a partition: reconnects refused
        partition = _dropped(exchange, metrics)
        handshakes = exchange.stats["handshakes"]
        exchange.refuse_connections(args.close_seconds, accept_then_close=True)
        closing = _dropped(exchange, metrics)
        handshakes = exchange.stats["handshakes"] - handshakes
        final = read_metrics(metrics)
    finally:
        collector.send_signal(signal.SIGTERM)
        code = collector.wait(60)
        exchange.stop()
    print(f"collector: {rate:,.0f} messages/s sustained over {args.seconds:g} s "
          f"(the fake exchange sent {offered:,.0f}/s) at {cpu:.0%} of a core, blocked {final['blocked_s']} s, "
          f"publish lag max {final['publish_lag_max_ms']} ms, exit {code}")
    print(f"reconnect time over {len(reconnects)} drops: median {statistics.median(reconnects):.3f} s, "
          f"max {max(reconnects):.3f} s (the first attempt follows at once); with reconnects "
          f"refused for {args.refuse_seconds:g} s: back after {partition:.3f} s (backoff with full "
          f"jitter); with connections accepted and closed at once for {args.close_seconds:g} s: back after "
          f"{closing:.3f} s, {handshakes} handshakes")
    if not args.topic:
        out = os.path.join(work, "batch")
        run_batch(["--input", os.path.join(work, "files"), "--output", out])
        with open(os.path.join(out, "summary.json")) as handle:
            summary = json.load(handle)
        print(f"batch over the capture: {summary['input_records']:,} records, control "
              f"{summary['control']}, gaps {summary['gaps']}, corrupt periods "
              f"{summary['corrupt_periods']}, balanced {summary['balanced']}")
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
