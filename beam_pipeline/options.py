"""Every option the pipeline adds to Beam's own: the one home for names, defaults and help texts.

Standard Beam options (--runner, --streaming, --temp_location, Flink and Dataflow options) keep their
Beam names and are not repeated here.
"""
from __future__ import annotations

import math

from apache_beam.options.pipeline_options import PipelineOptions

import msgspec

from beam_pipeline.core import framings
from beam_pipeline.core.sequencer import Policy

FORMAT_NAMES = framings.names()              # every framing module's NAME (the registry)
INPUT_FORMATS = ("auto",) + FORMAT_NAMES


def _input_format_help() -> str:
    described = "; ".join(f"{framing.NAME}: {framing.DESCRIPTION}" for framing in framings.framings())
    return (f"auto: detect per file from its first {framings.HEAD_RECORDS} records (headers and "
            f"blank lines skipped; the format most of them have); {described}. "
            "A file no format recognises: its records are unknown_format dead letters and the run "
            "fails (exit 4). Default: auto.")

# The range of every numeric option: (lowest, is the lowest itself allowed, highest or None).
# cli.validate checks them (and the related pairs below) before anything runs.
RANGES = {
    "watch_seconds": (0, False, None),
    "quiet_seconds": (0, True, None),
    "output_flush_seconds": (0, False, None),
    "max_record_bytes": (1, True, None),
    "small_gap_max": (0, True, None),
    "medium_gap_max": (1, True, None),
    "reset_min_jump_ids": (1, True, None),
    "recovery_timeout": (0, False, None),
    "max_buffered_events": (1, True, None),
    "run_span_ids": (1, True, None),
    "reorder_timeout": (0, False, None),
    "stall_timeout": (0, False, None),
    "error_window": (0, False, None),
    "alert_warning_count": (0, True, None),
    "alert_critical_count": (0, True, None),
    "alert_gap_rate": (0, True, 1),
    "allowed_lateness": (0, True, None),
    "max_bad_record_rate": (0, True, 1),
    "max_bad_file_rate": (0, True, 1),
    "memory_limit_gb": (0, False, None),
    "pull_max_messages": (1, True, None),
    "pull_wait_seconds": (0, False, None),
    "stop_timeout": (0, False, None),
    "ack_lease_seconds": (10, True, 600),
    "max_message_bytes": (1, True, None),
    "lag_warning": (0, False, None),
    "lag_critical": (0, False, None),
}
# Pairs that must be ordered: (smaller, larger, is equality allowed).
ORDERED = [("small_gap_max", "medium_gap_max", False),
           ("alert_warning_count", "alert_critical_count", True),
           ("lag_warning", "lag_critical", True)]


def _flag(value) -> bool:
    """A boolean option that works bare (--overwrite) and as --overwrite=true (Flex Templates
    pass every parameter as --name=value)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, not {value!r}")


_flag.__name__ = "true/false"   # argparse names the type in its error message

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def book_snapshot_spec(value) -> tuple:
    """--book_snapshots N:INTERVAL, e.g. 25:1s -> (25, 1000): levels a side, interval in ms."""
    text = str(value).strip().lower()
    levels, _, interval = text.partition(":")
    unit = next((u for u in ("ms", "s", "m", "h") if interval.endswith(u)), None)
    try:
        n, amount = int(levels), float(interval[:-len(unit)]) if unit else None
    except ValueError:
        n = amount = None
    if unit is None or n is None or amount is None or n < 1 or amount <= 0:
        raise ValueError(f"expected LEVELS:INTERVAL such as 25:1s (units ms, s, m, h), not {value!r}")
    interval_ms = int(round(amount * _UNIT_MS[unit]))
    if interval_ms < 1:
        raise ValueError(f"the interval of {value!r} is under 1 ms")
    return n, interval_ms


book_snapshot_spec.__name__ = "LEVELS:INTERVAL"


def _add_flag(group, name, help):
    action = group.add_argument(name, type=_flag, nargs="?", const=True, default=False, help=help)
    action.is_flag = True          # --help shows it as a bare flag (cli.print_help)


def range_error(options) -> str | None:
    """The first numeric option out of its range, or pair out of order, as one line; else None."""
    values = options.get_all_options()
    for name, (lowest, inclusive, highest) in RANGES.items():
        value = values.get(name)
        if value is None:
            continue
        bound = f">= {lowest}" if inclusive else f"> {lowest}"
        if highest is not None:
            bound += f" and <= {highest}"
        if (isinstance(value, float) and not math.isfinite(value)) or value < lowest or \
                (value == lowest and not inclusive) or (highest is not None and value > highest):
            return f"--{name} must be {bound}, not {value}"
    for smaller, larger, equal_ok in ORDERED:
        low, high = values.get(smaller), values.get(larger)
        if low is not None and high is not None and (low > high or (low == high and not equal_ok)):
            relation = "<=" if equal_ok else "<"
            return f"--{smaller} ({low}) must be {relation} --{larger} ({high})"
    return None


def _split_inputs(values):
    """--input takes several paths after one flag, may be repeated, and each value may hold
    several comma-separated globs."""
    globs = []
    for value in values or []:
        globs.extend(part.strip() for part in value.split(",") if part.strip())
    return globs


class FeedCheckOptions(PipelineOptions):
    """Options of the order-book feed checker (python -m beam_pipeline --help lists them)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        # Groups, in the order --help shows them (cli.print_help puts Beam's options last).
        inp = parser.add_argument_group(
            "input",
            "What is read, and what counts as bad input.")
        inp.add_argument(
            "--input", action="extend", nargs="+", default=None,
            help="File glob(s) to read in batch: plain or .gz, any Beam filesystem (local, gs://, ...). "
                 "Give several after one flag, repeat the flag or separate globs with commas. A "
                 "folder means every file under it, recursively.")
        inp.add_argument(
            "--skip_files", default="README*,LICENSE*,NOTICE*,COPYING*,*.md",
            help="Comma-separated file-name patterns: matched input files with such a name (the "
                 "documentation that sits beside captures) are not read, and are listed in the "
                 "summary's skipped_files. Empty: read every matched file. "
                 "Default: README*,LICENSE*,NOTICE*,COPYING*,*.md.")
        inp.add_argument(
            "--input_format", default="auto", choices=INPUT_FORMATS,
            help=_input_format_help())
        inp.add_argument(
            "--quiet_seconds", type=float, default=5.0,
            help="A file modified less than this many seconds ago may still be being written: its "
                 "torn last gzip member or unterminated last line is not read yet (batch: left out "
                 "with a warning naming the file, summary.json still_being_written). Once the file "
                 "has been quiet this long its tail is final: a torn gzip member is a read_error "
                 "dead letter, an unterminated last line a record. A watched file is finished when "
                 "it is quiet and a newer file exists. Streaming from watched files also takes a "
                 "record as readable by its receive time plus this (the reorder wait's event time): "
                 "keep it above the writer's flush interval (the collector's --flush_seconds, 1). "
                 "Default: 5.")
        inp.add_argument(
            "--max_record_bytes", type=int, default=1024 * 1024,
            help="Records longer than this many bytes are dead-lettered as record_too_large. "
                 "Default: 1048576 (1 MiB).")
        _add_flag(
            inp, "--allow_empty",
            "Accept an input with no records: warn and exit 0 (with empty outputs). Default: "
            "false, an input whose every file is empty fails with exit code 4 (an empty file "
            "among others is a warning naming it).")
        _add_flag(
            inp, "--fail_on_read_error",
            "Batch: exit 4 when any input file is damaged (a read_error: a truncated .gz, an "
            "unreadable block); its records before the damage are still written. Default: false, "
            "the run exits 0 and names each damaged file and what was kept.")
        inp.add_argument(
            "--max_bad_file_rate", type=float, default=0.5,
            help="A batch run fails (exit 4, naming the file, its format, its top reasons and what "
                 "to try) when any input file has more dead letters than this fraction of its "
                 "records, or yields no depth record at all. Every record is still written to an "
                 "output with its reason. 1 accepts any share. Default: 0.5.")
        inp.add_argument(
            "--max_bad_record_rate", type=float, default=None,
            help="Fail the job when dead letters exceed this fraction of input records (e.g. 0.5). "
                 "Default: never fail on bad input.")

        out = parser.add_argument_group(
            "output", "Where the outputs go and what else a run writes.")
        out.add_argument(
            "--output", default=None,
            help="Folder (any Beam filesystem) that receives clean/, dead_letter/, gaps/, "
                 "corrupt_periods/, recovery_requests/, error_counts/, alerts/ and summary.json.")
        _add_flag(
            out, "--overwrite",
            "Replace an output folder that holds an earlier run (its outputs are deleted first). "
            "Without it such a folder is refused, so a run never mixes with an earlier one. A "
            "restarted streaming job with the same --job_id (or --job_name) continues into its "
            "own folder without it. Default: false.")
        out.add_argument(
            "--job_id", default=None,
            help="Names the job that owns --output (written to <output>/_job.json). A streaming "
                 "job restarted with the same id (or the same --job_name) continues into its "
                 "folder; a different one is refused. Default: --job_name, else a new id per run.")
        out.add_argument(
            "--report", action="store_true", default=False,
            help="Batch: when the run ends, write the data-quality report (the page of `python -m "
                 "beam_pipeline report`) to <output>/report.html, its PNG charts in "
                 "<output>/report_files/. Default: no report.")
        _add_flag(
            out, "--verbose",
            "Show Beam's and Flink's logs on the terminal. Default: false, they go to "
            "<output>/_logs/feedcheck.log and the terminal shows a progress line and the summary.")
        out.add_argument(
            "--work_dir", default=None,
            help="Folder for the sorted runs the batch sequencer reads back in id order. Must be "
                 "shared by all workers (e.g. gs:// on Dataflow). Default: <output>/_work.")

        gap = parser.add_argument_group(
            "gap policy",
            "How the sequencer classifies and handles a gap in a symbol's update ids.")
        gap.add_argument(
            "--small_gap_max", type=int, default=10,
            help="A gap of at most this many missing ids is small: continue with a warning. Default: 10.")
        gap.add_argument(
            "--medium_gap_max", type=int, default=1000,
            help="A gap of at most this many missing ids (or of unknown size) is medium: hold later "
                 "deltas until a snapshot resyncs the stream. Larger gaps are large: a corrupt period "
                 "is recorded and the stream continues. Default: 1000.")
        gap.add_argument(
            "--reset_min_jump_ids", type=int, default=1000,
            help="An event whose ids lie more than this many below the stream's last good id, and "
                 "whose time is not older (or a USD-M delta with pu=-1), is an id reset (the "
                 "exchange's engine restarted): a gap of class reset that waits for a snapshot of "
                 "the new numbering. Closer or older ones are duplicates or late. Default: 1000.")
        gap.add_argument(
            "--recovery_timeout", type=float, default=60.0,
            help="Seconds of event time a medium gap waits for a resolving snapshot before it becomes "
                 "a corrupt period and the held deltas are released. Fractions allowed. Default: 60.")
        gap.add_argument(
            "--max_buffered_events", type=int, default=10000,
            help="Per symbol, the most deltas held while waiting (for a snapshot or for reordered "
                 "messages); past it the wait ends early with reason buffer_overflow. Default: 10000.")
        _add_flag(
            gap, "--book_checks",
            help="Rebuild each symbol's order book from its snapshots and deltas in the sequencer's "
                 "order and check it: crossed or locked books, bad levels, the venue's checksums, "
                 "and (Binance) a snapshot inside a continuous stretch against the rebuilt book. "
                 "A failed check is a corrupt period (crossed_book, bad_level, unknown_level, "
                 "checksum_mismatch, snapshot_mismatch) until the next snapshot. Default: false.")
        gap.add_argument(
            "--book_snapshots", type=book_snapshot_spec, default=None,
            help="LEVELS:INTERVAL, e.g. 25:1s (units ms, s, m, h): write books/ (Parquet), the "
                 "best LEVELS levels a side of each checked book at the end of every INTERVAL of "
                 "event time in which it changed, with its segment, only where the book is "
                 "anchored on a snapshot and its checks pass. Implies --book_checks. "
                 "Default: none.")
        gap.add_argument(
            "--run_span_ids", type=int, default=100_000,
            help="Batch: update ids per sorted run. Each run is sorted in memory, so this bounds the "
                 "sequencer's memory per symbol: about 3.5 KB per event in a run, at most two runs "
                 "at a time. Default: 100000.")

        live = parser.add_argument_group(
            "streaming", "With --streaming: the source, timers, topics, flushes and stops.")
        live.add_argument(
            "--input_subscription", default=None,
            help="Streaming only: Pub/Sub subscription to read, projects/<p>/subscriptions/<s>.")
        # Kafka (streaming on Flink); one block, kept together.
        live.add_argument(
            "--kafka_bootstrap_servers", default=None,
            help="Streaming on Flink (--runner FlinkRunner): read the feed from Kafka, brokers "
                 "HOST:PORT[,HOST:PORT]; needs --kafka_topic. Messages as on Pub/Sub (one record or "
                 "JSON Lines, gzip by header content_encoding=gzip or by magic bytes, headers "
                 "format/exchange/market); event time = the record's CreateTime. Offsets are "
                 "committed to the consumer group at Flink checkpoints only. Also the brokers "
                 "--recovery_kafka_topic writes to.")
        live.add_argument(
            "--kafka_topic", default=None,
            help="Streaming on Flink: the Kafka topic to read (with --kafka_bootstrap_servers).")
        live.add_argument(
            "--kafka_group_id", default="feedcheck",
            help="Streaming on Flink: the Kafka consumer group; a new group starts at the earliest "
                 "offset, a known one at its committed offsets. Default: feedcheck.")
        live.add_argument(
            "--kafka_expansion_service", default=None,
            help="Streaming on Flink: the Beam Java expansion service that expands Kafka IO: "
                 "HOST:PORT of a running one, or a jar. Default: the jar "
                 "scripts/build_kafka_expansion_service.sh builds (built on first use).")
        live.add_argument(
            "--watch_seconds", type=float, default=None,
            help="Streaming from files (--streaming --input ...): list the globs again every this "
                 "many seconds and read what is new: new files, and what was appended to the files "
                 "already read (rolling files: complete gzip members, complete lines), each byte "
                 "once; how far each file was read is kept in Beam state (restored with a Flink "
                 "checkpoint) and, on DirectRunner, saved in the output folder at a graceful stop, "
                 "so the same job restarted (--job_id) reads each file on from there. The "
                 "streaming source for Flink, where Pub/Sub cannot be read. "
                 "Default: read the files once.")
        live.add_argument(
            "--max_message_bytes", type=int, default=64 * 1024 * 1024,
            help="Streaming: a gzip-compressed Pub/Sub message that unpacks to more than this many "
                 "bytes is one read_error dead letter (its compressed bytes kept). "
                 "Default: 67108864 (64 MiB).")
        live.add_argument(
            "--reorder_timeout", type=float, default=2.0,
            help="Streaming: seconds (processing time) an out-of-order event waits for the missing ids "
                 "before the gap is declared. Default: 2.")
        live.add_argument(
            "--stall_timeout", type=float, default=30.0,
            help="Streaming: seconds (processing time) a symbol may stay silent before a stall alert. "
                 "Default: 30.")
        live.add_argument(
            "--output_flush_seconds", type=float, default=60.0,
            help="Streaming: seconds of processing time between file writes of each output folder "
                 "(each write is a new file per folder: fewer, larger files the longer). Default: 60.")
        live.add_argument(
            "--recovery_topic", default=None,
            help="Streaming: Pub/Sub topic that receives a recovery request (snapshot wanted) for "
                 "every gap that needs one. Batch runs write recovery_requests/ instead.")
        live.add_argument(
            "--recovery_kafka_topic", default=None,
            help="Streaming: Kafka topic (on the brokers of --kafka_bootstrap_servers) that receives "
                 "every recovery request as the same JSON as --recovery_topic, key = symbol; the "
                 "collector's --recovery_kafka_topic answers them. Instead of --recovery_topic. "
                 "With it, --kafka_bootstrap_servers without --kafka_topic only names the brokers "
                 "(the feed comes from --input_subscription or --input). Default: none.")
        live.add_argument(
            "--alerts_topic", default=None,
            help="Streaming: Pub/Sub topic that also receives every alert (alerts/ is always written).")
        live.add_argument(
            "--allowed_lateness", type=float, default=300.0,
            help="Streaming: seconds after the watermark passes an error-count window's end that "
                 "late error records are still counted in it (the window fires again). Records "
                 "later than that are left out of error_counts/ and its alerts (Beam drops them); "
                 "they are still in dead_letter/, gaps/, corrupt_periods/ and summary.json, which "
                 "do not depend on windows. Default: 300.")
        live.add_argument(
            "--stop_timeout", type=float, default=25.0,
            help="Streaming: seconds a stop (SIGINT/Ctrl-C or SIGTERM) may take. The job stops "
                 "pulling, finishes every message it already pulled (reorder waits and holds end "
                 "as at the end of input, each reported), writes every output folder and a final "
                 "summary.json, and exits 0. On DirectRunner a pull takes no more records than the "
                 "job processes in a third of this time, so a stop can finish in it. Past it, or on "
                 "a second Ctrl-C, the job exits at once with code 6, and what it had not written "
                 "was not acknowledged: Pub/Sub delivers it again to the restarted job. "
                 "Default: 25 (below Kubernetes' 30 s and systemd's 90 s grace periods).")
        live.add_argument(
            "--savepoint_dir", default=None,
            help="Streaming on a standalone Flink cluster (--flink_master host:port): where SIGINT/"
                 "SIGTERM's stop-with-savepoint writes the savepoint (a folder the cluster can "
                 "write; the stop prints it and the command that resumes from it). "
                 "Default: <output>/_state/savepoints.")
        live.add_argument(
            "--pull_max_messages", type=int, default=1000,
            help="Streaming on DirectRunner: the most Pub/Sub messages one pull (one bundle) takes. "
                 "Beam's own reader takes 10, which caps a backlog's drain. Default: 1000.")
        live.add_argument(
            "--pull_wait_seconds", type=float, default=0.2,
            help="Streaming on DirectRunner: how long one pull waits on an idle subscription. The "
                 "runner's one worker thread runs nothing else meanwhile: every stage a timer's "
                 "output crosses (reorder, stall, recovery -> counts -> alerts) may wait this long. "
                 "Beam's own reader waits 30 s. Default: 0.2.")
        live.add_argument(
            "--ack_lease_seconds", type=float, default=60.0,
            help="Streaming on DirectRunner: a pulled Pub/Sub message is acknowledged only once "
                 "every output row it produced is in a finished file; until then its lease is "
                 "renewed to this many seconds. After a crash Pub/Sub delivers the unacknowledged "
                 "messages again once their lease runs out, so a restarted job reads them. "
                 "10 to 600. Default: 60.")

        alert = parser.add_argument_group(
            "alerts",
            "Error counts per window of event time, and the thresholds that raise alerts.")
        alert.add_argument(
            "--error_window", type=float, default=60.0,
            help="Seconds of event time per error-count window. Default: 60.")
        alert.add_argument(
            "--alert_warning_count", type=int, default=10,
            help="More errors than this of one type and symbol in a window raise a warning. Default: 10.")
        alert.add_argument(
            "--alert_critical_count", type=int, default=100,
            help="More errors than this of one type and symbol in a window are critical. Default: 100.")
        alert.add_argument(
            "--alert_gap_rate", type=float, default=0.001,
            help="Gaps per event of a symbol in a window above this rate are critical. Default: 0.001.")
        alert.add_argument(
            "--lag_warning", type=float, default=30.0,
            help="Streaming: seconds of input lag (now minus the publish time of the messages being "
                 "read) above which a backpressure warning alert is raised; a resolved alert "
                 "follows when the lag falls back below it. Default: 30.")
        alert.add_argument(
            "--lag_critical", type=float, default=300.0,
            help="Streaming: seconds of input lag above which the backpressure alert is critical. "
                 "Default: 300 (5 minutes).")

        run = parser.add_argument_group(
            "runner",
            "How the job runs on its workers (--runner and Beam's own options: below).")
        run.add_argument(
            "--memory_limit_gb", type=float, default=None,
            help="Memory budget per worker for buffering stages; guards shrink batches, drop caches "
                 "and flush as usage approaches it. Default: the machine's total memory.")

    @classmethod
    def defaults(cls, *flags: str) -> "FeedCheckOptions":
        """The options with every default (tests, tools), `flags` applied on top."""
        return cls(list(flags))

    def policy(self) -> Policy:
        """The sequencer's gap policy from these options."""
        return Policy.from_options(self)

    def input_globs(self):
        return _split_inputs(self.input)

    def skipped_file_names(self):
        return tuple(part.strip() for part in (self.skip_files or "").split(",") if part.strip())

    def resolved_work_dir(self):
        if self.work_dir:
            return self.work_dir
        return self.output.rstrip("/") + "/_work"


def default_policy(**overrides) -> Policy:
    """The gap policy of the default options, with `overrides` (tests)."""
    return msgspec.structs.replace(FeedCheckOptions.defaults().policy(), **overrides)


def add_report_arguments(parser) -> None:
    """The options of `python -m beam_pipeline report` (the data-quality report)."""
    parser.add_argument(
        "--output", required=True,
        help="A run's --output folder (any Beam filesystem): a finished batch run or a running "
             "streaming job.")
    parser.add_argument(
        "--html", default=None,
        help="Where to write the page; its charts go to <page name>_files/ beside it. "
             "Default: <output>/report.html.")
    parser.add_argument(
        "--detail_charts", type=int, default=30,
        help="Draw the timeline and error-count chart of at most this many symbols, the worst "
             "first; every symbol still gets its table row and detail lists. Default: 30.")
    parser.add_argument(
        "--overview_rows", type=int, default=400,
        help="Symbols (worst first) in the overview map of every symbol's timeline. Default: 400.")


def add_compact_arguments(parser) -> None:
    """The options of `python -m beam_pipeline compact` (rewrite a streaming job's closed date
    partitions into few large files)."""
    parser.add_argument(
        "output",
        help="A run's --output folder (any Beam filesystem), e.g. a streaming job's, running or "
             "not: its folders' date partitions (<folder>/date=YYYY-MM-DD/) are compacted.")
    parser.add_argument(
        "--before", default=None,
        help="Compact the date partitions whose whole UTC day lies before this time (ISO-8601: "
             "2026-05-01 or 2026-05-01T12:00:00Z; no zone means UTC). The current day's partition, "
             "the one a running job writes, is never compacted. Default: the start of today (UTC), "
             "i.e. every partition before today's.")
    parser.add_argument(
        "--target_file_mb", type=float, default=64.0,
        help="Size of the files compaction writes, in MB (10**6 bytes): a file is closed once it "
             "holds this much (it may exceed it by one Parquet row group or Avro block); a "
             "partition's last file holds the rest. Default: 64.")


# ---- the live collector (python -m beam_pipeline.collector) ---------------------------------------

# Binance's public endpoints per market: (websocket base, REST base, depth path, REST request
# weight allowed per minute and IP). The weights of one depth request by its limit are in
# COLLECTOR_DEPTH_WEIGHTS (Binance's documented tables).
COLLECTOR_MARKETS = {
    "spot": ("wss://stream.binance.com:9443", "https://api.binance.com", "/api/v3/depth", 6000),
    "usdm": ("wss://fstream.binance.com", "https://fapi.binance.com", "/fapi/v1/depth", 2400),
    "coinm": ("wss://dstream.binance.com", "https://dapi.binance.com", "/dapi/v1/depth", 2400),
}
# (largest limit, weight) per market, ascending: a request of `limit` weighs the first row it fits.
COLLECTOR_DEPTH_WEIGHTS = {
    "spot": ((100, 5), (500, 25), (1000, 50), (5000, 250)),
    "usdm": ((50, 2), (100, 5), (500, 10), (1000, 20)),
    "coinm": ((50, 2), (100, 5), (500, 10), (1000, 20)),
}
# The venues whose snapshots come in-stream (a resync is a resubscription): exchange -> (public
# websocket base URL, markets). OKX's market is the instruments' type, Bybit's the v5 category.
COLLECTOR_STREAM_VENUES = {
    "okx": ("wss://ws.okx.com:8443", ("futures", "option", "spot", "swap")),
    "bybit": ("wss://stream.bybit.com", ("inverse", "linear", "option", "spot")),
}
COLLECTOR_EXCHANGES = ("binance", *sorted(COLLECTOR_STREAM_VENUES))
COLLECTOR_KEEPALIVE_S = 20.0        # the venue's own ping (OKX "ping", Bybit {"op":"ping"}) this often
COLLECTOR_EXIT_GAVE_UP = 5          # the connection stayed down longer than --max_disconnect


def _positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"must be positive, not {text!r}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


RECORDS_PER_MESSAGE = 500       # of a batched feed message, the collector's as feedcheck-publish's


def add_message_output_arguments(group, *, topic_help: str, kafka_help: str,
                                 records_help: str) -> None:
    """Where batched feed messages go (--topic, or --kafka_bootstrap_servers with --kafka_topic)
    and how many records each holds: the collector and feedcheck-publish send the same messages.
    The helps say what differs (what the messages are keyed by, what else sends one)."""
    group.add_argument("--topic", default=None, help=topic_help)
    group.add_argument("--kafka_bootstrap_servers", default=None, help=kafka_help)
    group.add_argument("--kafka_topic", default=None,
                       help="The Kafka topic (with --kafka_bootstrap_servers).")
    group.add_argument("--records_per_message", type=_positive(int), default=RECORDS_PER_MESSAGE,
                       help=f"{records_help} Default: {RECORDS_PER_MESSAGE}.")


def recovery_kafka_group(exchange: str, market: str) -> str:
    """The collector's default --recovery_kafka_group: one per venue and market."""
    return f"feedcheck-collector-{exchange}-{market}"


def add_collector_arguments(parser) -> None:
    """The options of `python -m beam_pipeline.collector` (live capture of one market)."""
    src = parser.add_argument_group("exchange")
    src.add_argument(
        "--exchange", default="binance", choices=COLLECTOR_EXCHANGES,
        help="Venue to capture: binance (REST snapshots), okx (v5 `books`) or bybit (v5 "
             "`orderbook.50`); OKX and Bybit send their snapshots in-stream, so a recovery request is "
             "answered by resubscribing the symbol. Default: binance.")
    src.add_argument(
        "--market", required=True,
        choices=sorted({*COLLECTOR_MARKETS, *(m for _, markets in COLLECTOR_STREAM_VENUES.values()
                                              for m in markets)}),
        help="Market to capture, one process per market: binance spot, usdm (USD-M futures) or "
             "coinm (COIN-M futures); okx the instruments' type spot, swap, futures or option; bybit "
             "the v5 category spot, linear, inverse or option.")
    src.add_argument(
        "--symbols", required=True,
        help="Comma-separated symbols as the venue writes them (BTCUSDT,ETHUSDT; OKX BTC-USDT): "
             "their book streams share one connection.")
    src.add_argument(
        "--ws_url", default=None,
        help="Websocket base URL; the venue's path is appended (binance /stream?streams=..., okx "
             "/ws/v5/public, bybit /v5/public/<market>). Default: the venue's public one (binance "
             "spot wss://stream.binance.com:9443, usdm wss://fstream.binance.com, coinm "
             "wss://dstream.binance.com; okx wss://ws.okx.com:8443; bybit "
             "wss://stream.bybit.com).")
    src.add_argument(
        "--rest_url", default=None,
        help="Binance: REST base URL; the market's depth path (/api/v3/depth, /fapi/v1/depth, "
             "/dapi/v1/depth) is appended. Default: https://api.binance.com, fapi or dapi.")
    src.add_argument(
        "--snapshot_limit", type=_positive(int), default=1000,
        help="Binance: levels per REST depth snapshot (its request weight follows Binance's table: spot 50, "
             "futures 20 at 1000). Default: 1000.")
    src.add_argument(
        "--request_weight_per_minute", type=_positive(int), default=None,
        help="Binance: REST request weight this collector spends per minute at most (snapshots wait for "
             "budget). Default: half the market's limit per IP (spot 3000, futures 1200), leaving "
             "room for a second process.")

    out = parser.add_argument_group("output (--topic, --output_dir, or both: the same feed to each)")
    add_message_output_arguments(
        out,
        topic_help="Pub/Sub topic projects/<p>/topics/<t>: batched envelope messages (attributes "
                   "format, exchange, market, content_encoding=gzip), ordering key = symbol, as "
                   "the streaming job reads them. Set PUBSUB_EMULATOR_HOST for the emulator.",
        kafka_help="Kafka brokers HOST:PORT[,HOST:PORT] (with --kafka_topic): the same batched "
                   "messages on a Kafka topic, key = symbol, the attributes as headers, CreateTime "
                   "= the publish time, as the streaming job on Flink reads them.",
        records_help="Pub/Sub: records per message at most (a message also goes out "
                     "--message_seconds after its first record).")
    out.add_argument(
        "--output_dir", default=None,
        help="Folder of rolling files <exchange>-<market>-<YYYYMMDD>T<HH>.jsonl.gz (one per UTC hour), "
             "envelope JSON Lines a batch run reads as they are; each flush is a complete gzip "
             "member, so a crash loses at most the last --flush_seconds.")
    out.add_argument(
        "--message_seconds", type=_positive(float), default=0.1,
        help="Pub/Sub: seconds a symbol's records wait to fill a message. Default: 0.1.")
    out.add_argument(
        "--max_outstanding_messages", type=_positive(int), default=1000,
        help="Pub/Sub flow control: past this many unacknowledged messages capture blocks (the "
             "blocked time is counted and logged). Default: 1000.")
    out.add_argument(
        "--max_outstanding_bytes", type=_positive(int), default=64 * 1024 * 1024,
        help="Pub/Sub flow control: the same bound in bytes. Default: 67108864 (64 MiB).")
    out.add_argument(
        "--flush_seconds", type=_positive(float), default=1.0,
        help="Files: seconds between flushes (each a complete gzip member). Default: 1.")

    rec = parser.add_argument_group("recovery loop")
    rec.add_argument(
        "--recovery_subscription", default=None,
        help="Pub/Sub subscription of the pipeline's --recovery_topic: each request for one of our "
             "symbols is answered with a fresh snapshot in-stream: Binance a REST snapshot the collector "
             "writes, OKX and Bybit by unsubscribing and subscribing the symbol's book again (the "
             "venue sends its snapshot). Default: none.")
    rec.add_argument(
        "--recovery_kafka_topic", default=None,
        help="Kafka topic of the pipeline's --recovery_kafka_topic, on the brokers of "
             "--kafka_bootstrap_servers: its requests are answered as --recovery_subscription's "
             "are. Default: none.")
    rec.add_argument(
        "--recovery_kafka_group", default=None,
        help="Kafka consumer group that reads --recovery_kafka_topic; one group per collector, so "
             "each collector sees every request. A new group starts at the topic's end (older "
             "requests are stale). Default: feedcheck-collector-<exchange>-<market>.")
    rec.add_argument(
        "--recovery_dedup_seconds", type=_positive(float), default=5.0,
        help="Requests for a symbol within this many seconds of its last snapshot are answered by "
             "that one (not fetched or resubscribed again). Default: 5.")

    net = parser.add_argument_group("network partitions")
    net.add_argument(
        "--initial_backoff", type=_positive(float), default=0.5,
        help="Seconds: scale of the reconnect waits; after the n-th failed attempt since a "
             "connection last proved healthy (--healthy_seconds) the wait is random (full jitter) "
             "up to initial * 2**(n-1), capped by --max_backoff. Default: 0.5.")
    net.add_argument(
        "--max_backoff", type=_positive(float), default=60.0,
        help="Seconds: the longest wait between two reconnect attempts. Default: 60.")
    net.add_argument(
        "--healthy_seconds", type=_positive(float), default=10.0,
        help="Seconds a connection must stay up, having delivered its first book frame, to prove "
             "healthy. Only a healthy connection resets the backoff; one that ends sooner (accepted "
             "and closed at once, e.g. close code 1013 'try again later') counts as a failed "
             "attempt: the next wait grows as after a refused handshake. Default: 10.")
    net.add_argument(
        "--max_disconnect", type=_positive(float), default=3600.0,
        help="Seconds: give up (exit code 5) when the connection has been down this long. "
             "Default: 3600 (1 hour).")
    net.add_argument(
        "--idle_timeout", type=_positive(float), default=30.0,
        help="Seconds without any frame after which the connection counts as lost (a stalled "
             "server that still answers pings). Default: 30.")
    net.add_argument(
        "--planned_reconnect", type=_positive(float), default=23.5 * 3600,
        help="Seconds after which a connection is replaced before the exchange closes it (Binance "
             "at 24 h): the new one is opened first and both overlap until the new one has "
             "delivered every symbol (frames deduplicated by update id), so no message is lost. "
             "Default: 84600.")

    obs = parser.add_argument_group("observability")
    obs.add_argument(
        "--status_seconds", type=_positive(float), default=10.0,
        help="Seconds between status lines (messages/s, reconnects, snapshots, publish lag, "
             "blocked time) on stderr. Default: 10.")
    obs.add_argument(
        "--metrics_file", default=None,
        help="Also write the status as JSON to this file (replaced atomically at each status line "
             "and at exit). Default: none.")
