"""Command line: validate the options, run the graph on the chosen runner, print the summary."""
from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
import threading
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions, _BeamArgumentParser)
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

from beam_pipeline import early_signals, progress
from beam_pipeline.core import durability
from beam_pipeline.core.runtime import iso_ms, now_ms
from beam_pipeline.core.books.watch import BOOK_REASONS
from beam_pipeline.options import FORMAT_NAMES, FeedCheckOptions, range_error
from beam_pipeline.pipeline import build_pipeline
from beam_pipeline.settings import effective_settings
from transforms.aggregate import bad_record_rate
from runners import direct
from runners.flags import flag_value, runner_kind
from transforms.cursors import (cursor_folder, file_progress_folder, keep_file_progress,
                                take_cursors, take_file_progress)
from transforms.follow import FileProgress
from transforms.read_kafka import mark_partitions
from transforms.sinks import OUTPUT_FOLDERS, write_empty_outputs
from transforms.tags import UNDELIVERED
from runners.profiles import apply_profile

# Exit codes (docs/running/direct.md, "Exit codes").
EXIT_OK, EXIT_UNBALANCED, EXIT_USAGE, EXIT_BAD_RECORD_RATE, EXIT_BAD_INPUT = 0, 1, 2, 3, 4
EXIT_STOP_UNFINISHED = 6      # a streaming stop cut short: --stop_timeout passed, or a second signal
JOB_FILE = "_job.json"
INFLIGHT_JOURNAL = "_state/inflight.jsonl"    # what a streaming job pulled and has not acknowledged
RUNS_FOLDER = "_runs"       # a restarted streaming job's earlier summaries: _runs/<n>/summary.json
LOG_FILE = "_logs/feedcheck.log"
# What a run leaves under --output: an earlier run is told by any of these.
RUN_ENTRIES = (*OUTPUT_FOLDERS, UNDELIVERED, "summary.json", JOB_FILE, "report.html",
               "report_files", "_state", RUNS_FOLDER)


class UsageError(Exception):
    pass


class _UsageParser(_BeamArgumentParser):
    """Beam's parser, but a bad value is a UsageError (one line), not argparse's usage block."""

    def error(self, message):
        raise UsageError(message)


def _full_parser() -> argparse.ArgumentParser:
    """Every option any PipelineOptions class declares (Beam's, ours, the runners'), as Beam
    itself collects them."""
    parser = _UsageParser(allow_abbrev=False, add_help=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser


def check_command_line(argv: list[str]) -> None:
    """A mistyped option, a bad value or a stray argument is a usage error: Beam would drop the
    first with a warning and run on (e.g. on part of the input)."""
    parser = _full_parser()
    _, unknown = parser.parse_known_args(argv)
    for arg in unknown:
        if arg == "--":
            break
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            known = [s for action in parser._actions for s in action.option_strings]
            nearest = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
            hint = f" (did you mean {' or '.join(nearest)}?)" if nearest else " (see --help)"
            raise UsageError(f"unknown option {name}{hint}")
        raise UsageError(f"unexpected argument {arg!r}: every value follows an option "
                         "(several inputs: --input a b, or quote a glob)")


class _HelpFormatter(argparse.HelpFormatter):
    """A boolean option reads as a flag (--overwrite, not --overwrite [OVERWRITE]); it still
    takes =true/=false (Flex Templates pass every parameter with a value)."""

    def _format_action_invocation(self, action):
        if getattr(action, "is_flag", False):
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)

    def _format_args(self, action, default_metavar):
        if getattr(action, "is_flag", False):
            return ""
        return super()._format_args(action, default_metavar)


BEAM_OPTIONS_NOTE = (
    "Any other standard Beam option (Flink: --flink_master, --parallelism, ...; Dataflow: "
    "--project, --region, --temp_location, ...) is accepted too and passed to the runner; see "
    "docs/running/.")


def help_parser() -> argparse.ArgumentParser:
    """The parser --help prints: feedcheck's own options first, in their groups (options.py:
    input, output, gap policy, streaming, alerts, runner; --runner and --streaming join the
    runner group), Beam's other standard options last."""
    parser = argparse.ArgumentParser(
        prog="feedcheck", formatter_class=_HelpFormatter,
        usage="feedcheck --input GLOB [GLOB ...] --output FOLDER [options]\n"
              "       feedcheck report --output FOLDER [--html PAGE]\n"
              "       feedcheck compact FOLDER [--before DAY]",
        description="Check order-book delta feeds: per symbol, where the data is continuous and "
                    "where it is not.",
        epilog=BEAM_OPTIONS_NOTE)
    FeedCheckOptions._add_argparse_args(parser)
    runner = next(group for group in parser._action_groups if group.title == "runner")
    beam_group = parser.add_argument_group("Beam options", BEAM_OPTIONS_NOTE)
    ours = {s for action in parser._actions for s in action.option_strings}
    standard = argparse.ArgumentParser(add_help=False)
    StandardOptions._add_argparse_args(standard)
    for action in standard._actions:
        if set(action.option_strings) & ours:
            continue
        parser._add_action(action)                   # lands in the untitled group: move it
        parser._optionals._group_actions.remove(action)
        (runner if action.dest in ("runner", "streaming") else beam_group)._group_actions.append(action)
    return parser


def print_help() -> None:
    help_parser().print_help()


def _check_kafka(options: PipelineOptions, ops, streaming: bool) -> None:
    if not (ops.kafka_bootstrap_servers and ops.kafka_topic):
        raise UsageError("Kafka needs both --kafka_bootstrap_servers HOST:PORT and --kafka_topic T")
    if not streaming:
        raise UsageError("--kafka_bootstrap_servers needs --streaming")
    if ops.input_subscription or ops.input_globs():
        raise UsageError("read one source: --kafka_topic, --input_subscription or --input")
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if runner_kind([f"--runner={runner}"]) != "flink":
        raise UsageError(f"--kafka_bootstrap_servers: Kafka is read on Flink only (--runner "
                         f"FlinkRunner), not on {runner}; DirectRunner reads --input_subscription "
                         "or --input files")
    _check_servers(ops.kafka_bootstrap_servers)


def _check_recovery_kafka(ops, streaming: bool) -> None:
    if ops.recovery_topic:
        raise UsageError("give one of --recovery_topic (Pub/Sub) and --recovery_kafka_topic (Kafka)")
    if not streaming:
        raise UsageError("--recovery_kafka_topic needs --streaming (batch runs write "
                         "recovery_requests/ only)")
    if not ops.kafka_bootstrap_servers:
        raise UsageError("--recovery_kafka_topic needs --kafka_bootstrap_servers HOST:PORT")
    _check_servers(ops.kafka_bootstrap_servers)


def _check_servers(servers: str) -> None:
    for server in servers.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--kafka_bootstrap_servers: {server!r} is not HOST:PORT")


def validate(options: PipelineOptions) -> None:
    ops = options.view_as(FeedCheckOptions)
    streaming = options.view_as(StandardOptions).streaming
    problem = range_error(ops)
    if problem:
        raise UsageError(problem)
    if not ops.output:
        raise UsageError("--output is required")
    if ops.recovery_kafka_topic:
        _check_recovery_kafka(ops, streaming)
    # --kafka_bootstrap_servers alone, with --recovery_kafka_topic, names the brokers to write to
    if ops.kafka_topic or (ops.kafka_bootstrap_servers and not ops.recovery_kafka_topic):
        _check_kafka(options, ops, streaming)
    elif ops.input_subscription:
        if not streaming:
            raise UsageError("--input_subscription needs --streaming")
        runner = options.view_as(StandardOptions).runner or "DirectRunner"
        if runner_kind([f"--runner={runner}"]) == "flink":
            # Beam's Python Pub/Sub source is replaced by DirectRunner and Dataflow only.
            raise UsageError("--input_subscription: Pub/Sub is read on DirectRunner and Dataflow, "
                             "not on Flink; on Flink read Kafka (--kafka_bootstrap_servers, "
                             "--kafka_topic) or files (--input)")
        from apache_beam.io.gcp.pubsub import parse_subscription

        try:
            parse_subscription(ops.input_subscription)
        except ValueError as error:
            raise UsageError(f"--input_subscription: {error}") from None
    else:
        globs = ops.input_globs()
        if not globs and streaming:
            raise UsageError("--streaming needs --input (files) or "
                             "--input_subscription projects/<p>/subscriptions/<s>")
        if not globs:
            raise UsageError("--input is required (one or more file globs)")
        globs = [_folder_as_files(pattern) for pattern in globs]
        for given, pattern in zip(ops.input_globs(), globs):
            if (not _is_remote(pattern) and not ops.watch_seconds
                    and not FileSystems.match([pattern])[0].metadata_list):
                raise UsageError(f"no input file matches {given}" if given == pattern
                                 else f"no input file in folder {given}")
        ops.input = globs
    if not _is_remote(ops.output):
        _check_writable(ops.output)
    _check_savepoint(options)
    if _is_dry_run(options) and _is_dataflow(options):
        _check_dry_run_locations(options)


def _check_savepoint(options) -> None:
    """Beam's Flink runner applies --savepoint_path only when it submits to a cluster: the embedded
    [local] MiniCluster would start from empty state without a word."""
    every = options.get_all_options()
    if every.get("savepoint_path") and (every.get("flink_master") or "[local]") in ("[local]", "[auto]"):
        raise UsageError("--savepoint_path needs a Flink cluster (--flink_master host:port): the "
                         "embedded [local] cluster ignores it and would start from empty state")


def _folder_as_files(pattern: str) -> str:
    """A folder given as input means every file under it, recursively (same format detection)."""
    if _is_remote(pattern):
        return pattern + "**" if pattern.endswith("/") else pattern
    if os.path.isdir(pattern):
        return os.path.join(pattern, "**")
    return pattern


def _is_dataflow(options) -> bool:
    return "dataflow" in (options.view_as(StandardOptions).runner or "").lower()


def _check_dry_run_locations(options) -> None:
    """Without a valid gs:// temp or staging location Beam's own validation looks up (or creates)
    a default bucket over the network, even in a dry run: refuse instead, at once."""
    validator = PipelineOptionsValidator(options, None)
    cloud = options.view_as(GoogleCloudOptions)
    locations = ("temp_location", "staging_location")
    if all(validator.validate_gcs_path(cloud, name) for name in locations):
        raise UsageError("a Dataflow dry run needs --temp_location gs://<bucket>/<path> with a "
                         "valid bucket name (3 to 63 of a-z 0-9 - _ .); without one Beam looks up "
                         "a default bucket over the network")


def _is_remote(path: str) -> bool:
    return "://" in path


def _check_writable(folder: str) -> None:
    probe = os.path.join(folder, f".write-check-{uuid.uuid4().hex}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as error:
        raise UsageError(f"cannot write to output folder {folder}: {error.strerror}") from None


def _job_id(options) -> tuple[str, bool]:
    """This run's job id and whether the user named it (--job_id, else --job_name)."""
    named = options.view_as(FeedCheckOptions).job_id or \
        options.view_as(GoogleCloudOptions).job_name
    return (named, True) if named else (uuid.uuid4().hex, False)


def _read_job(output: str):
    try:
        with FileSystems.open(f"{output}/{JOB_FILE}") as handle:
            return json.loads(handle.read())
    except Exception:  # absent or unreadable: no job owns the folder
        return None


def _earlier_run_entries(output: str) -> list[str]:
    paths = [f"{output}/{name}" for name in RUN_ENTRIES]
    return [path for path in paths if FileSystems.exists(path)]


def claim_output(options) -> dict:
    """Refuse an output folder that holds an earlier run, unless --overwrite (the earlier outputs
    are deleted whole) or this is the same streaming job restarted (same --job_id or --job_name:
    it continues into its own folder). Then record this run as the folder's owner (_job.json)."""
    ops = options.view_as(FeedCheckOptions)
    output = ops.output.rstrip("/")
    streaming = bool(options.view_as(StandardOptions).streaming)
    job_id, named = _job_id(options)
    mode = "streaming" if streaming else "batch"
    earlier = _earlier_run_entries(output)
    owner = _read_job(output)
    continuing = bool(earlier and streaming and named and owner
                      and owner.get("mode") == "streaming" and owner.get("job_id") == job_id)
    if earlier and not continuing:
        if not ops.overwrite:
            who = f" (job {owner.get('job_id')}, {owner.get('mode')})" if owner else ""
            restart = " or the same --job_id to continue that streaming job," \
                if streaming and owner and owner.get("mode") == "streaming" else ""
            raise UsageError(f"--output {output} holds an earlier run{who}: give --overwrite to "
                             f"replace it,{restart} or another folder")
        FileSystems.delete(earlier + [p for p in (f"{output}/_work", f"{output}/_logs")
                                      if FileSystems.exists(p)])
    now = iso_ms(now_ms())
    job = {"job_id": job_id, "mode": mode, "started": now, "settings": effective_settings(options)}
    if continuing:
        job = {**owner, "restarted": now, "restarts": owner.get("restarts", 0) + 1,
               "settings": job["settings"]}
        savepoint = options.get_all_options().get("savepoint_path")
        if savepoint:      # Flink restores the state its counts come from: one summary goes on
            job["resumed_from"] = savepoint
        else:
            _keep_earlier_summary(output, job["restarts"])
    if not FileSystems.exists(output):
        FileSystems.mkdirs(output)
    with FileSystems.create(f"{output}/{JOB_FILE}") as handle:
        handle.write(json.dumps(job, indent=2).encode() + b"\n")
    return job


def _keep_earlier_summary(output: str, run: int) -> None:
    """A restarted job writes its own summary.json: the earlier run's goes to _runs/<run>/."""
    earlier = f"{output}/summary.json"
    if FileSystems.exists(earlier):
        folder = f"{output}/{RUNS_FOLDER}/{run}"
        if not FileSystems.exists(folder):
            FileSystems.mkdirs(folder)
        FileSystems.rename([earlier], [f"{folder}/summary.json"])


JOB_COUNTS = ("input_records", "clean_records", "ignored", "duplicates", "superseded", "control")


def with_earlier_runs(summary: dict, output: str, job) -> dict:
    """A restarted job's summary: its own counts, plus `job` naming the earlier runs' summaries
    and the counts over every run. A record Pub/Sub delivered again after a crash is counted in
    both runs that read it; its rows are deduplicated by readback."""
    if not job or not job.get("restarts") or job.get("resumed_from"):
        return summary
    earlier = []
    for run in range(1, job["restarts"] + 1):
        path = f"{output}/{RUNS_FOLDER}/{run}/summary.json"
        if FileSystems.exists(path):
            with FileSystems.open(path) as handle:
                earlier.append((f"{RUNS_FOLDER}/{run}/summary.json", json.loads(handle.read())))
    runs = [one for _, one in earlier] + [summary]
    totals = {name: sum(one.get(name, 0) for one in runs) for name in JOB_COUNTS}
    totals["dead_letters"] = sum(sum(one.get("dead_letters", {}).values()) for one in runs)
    totals["gaps"] = sum(sum(one.get("gaps", {}).values()) for one in runs)
    summary["job"] = {
        "job_id": job["job_id"], "run": job["restarts"] + 1,
        "earlier_runs": [{"summary": path, "input_records": one.get("input_records", 0),
                          "balanced": one.get("balanced")} for path, one in earlier],
        "totals": totals,
        "note": "the counts above are this run's; totals add every run's. A message Pub/Sub "
                "delivered again after a run was killed is counted by both runs that read it "
                "(readback deduplicates its rows)."}
    return summary


def read_summary(output: str) -> dict:
    with FileSystems.open(output.rstrip("/") + "/summary.json") as handle:
        return json.loads(handle.read())


def _write_summary(output: str, summary: dict) -> None:
    with FileSystems.create(output.rstrip("/") + "/summary.json") as handle:
        handle.write(json.dumps(summary, indent=2, sort_keys=True).encode() + b"\n")


def format_summary_table(summary: dict, per_file: bool = True) -> str:
    rows = [("input records", summary["input_records"]),
            ("clean", summary["clean_records"]),
            ("ignored (other streams)", summary["ignored"]),
            ("duplicates", summary["duplicates"]),
            ("superseded by a snapshot", summary["superseded"]),
            ("dead letters", sum(summary["dead_letters"].values()))]
    rows += [(f"  {reason}", n) for reason, n in summary["dead_letters"].items()]
    rows += [(f"gaps {cls}", n) for cls, n in summary["gaps"].items()]
    rows += [("corrupt periods", summary["corrupt_periods"]), ("symbols", summary["symbols"])]
    if summary.get("reconnects"):
        rows.append(("reconnects (a gap may follow)", summary["reconnects"]))
    if summary.get("unverified_records"):   # venues without per-key ids: no gap could be told
        rows.append(("unverified (no per-key ids)", summary["unverified_records"]))
    checks = summary.get("book_checks")
    if checks is not None:                  # --book_checks
        rows.append(("book checks: messages checked", checks.get("messages_checked", 0)))
        rows.append(("  checksum verified messages", checks.get("checksums_verified", 0)))
        if summary.get("unverified_records"):
            rows.append(("    of them unverified by ids", checks.get("unverified_checksum_verified", 0)))
        rows.append(("  book checks failed", checks.get("failed", 0)))
        rows += [(f"    {reason}", n) for reason, n in checks.items()
                 if reason in BOOK_REASONS and n]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value:>12,}" for label, value in rows]
    lines.append("balanced: " + ("yes" if summary["balanced"] else "NO"))
    files = summary.get("files") or []
    if files and per_file:
        lines += ["", *format_file_table(files, summary.get("read_error_files"))]
    return "\n".join(lines)


FILE_TABLE_ROWS = 20        # more files than this: the ones with the most dead letters


def format_file_table(files: list, damaged: dict = None) -> list:
    """The per-file table: every file, or the FILE_TABLE_ROWS with the most dead letters. A file
    with a read_error (`damaged`: file -> read errors) or without a record is marked."""
    damaged = damaged or {}
    shown = files
    title = "per file:"
    if len(files) > FILE_TABLE_ROWS:
        shown = sorted(files, key=lambda row: (-row["dead"], row["file"]))[:FILE_TABLE_ROWS]
        title = f"per file ({FILE_TABLE_ROWS} of {len(files)}, most dead letters first):"
    columns = ("records", "clean", "ignored", "duplicates", "superseded", "dead")
    header = f"{'format':<12} " + " ".join(f"{name:>10}" for name in columns) + "  file"
    lines = [title, header]
    for row in shown:
        mark = ""
        if damaged.get(row["file"]):
            mark = f"  [damaged: {damaged[row['file']]:,} read_error]"
        elif not row["records"]:
            mark = "  [empty]"
        lines.append(f"{row['format'] or '-':<12} "
                     + " ".join(f"{row[name]:>10,}" for name in columns) + f"  {row['file']}{mark}")
    return lines


def unreadable_files(summary: dict, max_bad_file_rate: float) -> list:
    """Files from which no depth record could be read, or whose dead-letter share is above the
    limit (the run fails with exit 4 on any). An empty file is not one: it is a warning
    (empty_files), and an input of empty files only is exit_code's no-records error."""
    bad = []
    for row in summary.get("files") or []:
        if not row["records"]:
            continue
        depth_records = row["clean"] + row["duplicates"] + row["superseded"]
        if depth_records == 0 or row["dead"] > max_bad_file_rate * row["records"]:
            bad.append(row)
    return bad


def describe_unreadable(rows: list, summary: dict, max_bad_file_rate: float, output: str) -> str:
    """What failed, per file: its format, its counts, its top reasons with one example each, and
    what to try."""
    reasons = summary.get("file_dead_letters") or {}
    lines = [f"error: {len(rows)} input file(s) could not be read as an order-book feed "
             f"(no depth record, or dead letters above --max_bad_file_rate={max_bad_file_rate:.0%}):"]
    for row in rows[:FILE_TABLE_ROWS]:
        share = row["dead"] / max(row["records"], 1)
        lines.append(f"  {row['file']}: format {row['format'] or 'unknown'}, {row['records']:,} "
                     f"records, {row['clean']:,} clean, {row['ignored']:,} ignored (other streams), "
                     f"{row['dead']:,} dead letters ({share:.0%})")
        for reason in reasons.get(row["file"], []):
            example = reason.get("example") or {}
            lines.append(f"    {reason['reason']} x{reason['count']:,}, e.g. "
                         f"{example.get('source', '?')}: {_one_line(example.get('message', ''))}")
        if not row["dead"]:
            lines.append("    no record was a depth update or snapshot (another stream only?)")
    if len(rows) > FILE_TABLE_ROWS:
        lines.append(f"  ... and {len(rows) - FILE_TABLE_ROWS} more (summary.json: files)")
    lines.append(f"try: --input_format {{{','.join(FORMAT_NAMES)}}} if the detected format is wrong "
                 f"(docs/inputs/ shows a line of each); --skip_files for files that "
                 f"are not feeds (a file with no depth record fails whatever the rate); "
                 f"--max_bad_file_rate 1 to accept a file's dead-letter share. "
                 f"Every record is in {output}, the rejected ones in dead_letter/ with their reason.")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def main(argv: list[str]) -> int:
    if argv[:1] == ["report"]:
        from beam_pipeline.report import main as report_main

        return report_main(argv[1:])
    if argv[:1] == ["compact"]:
        from beam_pipeline.compact import main as compact_main

        return compact_main(argv[1:])
    if "--help" in argv or "-h" in argv:
        print_help()
        return EXIT_OK
    try:
        check_command_line(argv)
        options = PipelineOptions(apply_profile(argv), save_main_session=False)
        validate(options)
        submits_only = _is_dry_run(options) or bool(
            options.view_as(GoogleCloudOptions).template_location)
        job = None if submits_only else claim_output(options)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if options.view_as(StandardOptions).streaming:
        early_signals.hold()
        cloud = options.view_as(GoogleCloudOptions)
        if job and not cloud.job_name and _flink_cluster(options, options.view_as(FeedCheckOptions)):
            cloud.job_name = f"feedcheck-{job['job_id']}"   # how the stop finds it on the cluster
    with _logging(options.view_as(FeedCheckOptions), job) as log_path:
        return _run(options, submits_only, job, log_path, argv)


def _run(options, submits_only: bool, job, log_path, argv=()) -> int:
    ops = options.view_as(FeedCheckOptions)
    streaming = bool(options.view_as(StandardOptions).streaming)
    if streaming and job is not None:
        write_empty_outputs(ops.output, streaming=True)   # every folder readable from the start
    runner = options.view_as(StandardOptions).runner or ""
    inbox = None
    watches_files_here = False
    if streaming and runner_kind([f"--runner={runner}"]) == "direct":
        direct.hold_watermark_for_end_of_window_timers()     # end of input: nothing dropped
        watches_files_here = bool(ops.watch_seconds) and not ops.input_subscription
        if watches_files_here:
            direct.prepare_graceful_stop()
    if ops.input_subscription and runner_kind([f"--runner={runner}"]) == "direct":
        inbox = direct.tune_streaming_pubsub_reads(ops.pull_max_messages, ops.pull_wait_seconds,
                                                   ops.ack_lease_seconds)
        inbox.drain_budget_s = ops.stop_timeout * DRAIN_SHARE
        if not _is_remote(ops.output):
            inbox.journal_path = os.path.join(ops.output, INFLIGHT_JOURNAL)
    # A restarted job resumes every key, and every followed file, where its last stop left it.
    restarted = bool(job and job.get("restarts"))
    resume = take_cursors(cursor_folder(ops.output)) \
        if restarted and (ops.input_subscription or watches_files_here) else None
    resume_files = take_file_progress(file_progress_folder(ops.output), FileProgress) \
        if restarted and watches_files_here else None
    if ops.kafka_topic and not _is_dry_run(options):
        # every partition's watermark can move once the job has read a record of it
        mark_partitions(ops.kafka_bootstrap_servers, ops.kafka_topic)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options, resume, resume_files)
    line = progress.ProgressLine(enabled=_workers_run_here(options) and not ops.verbose)
    with line:
        result = pipeline.run()
        if submits_only:
            line.close()
            if _is_dry_run(options):
                print("dry run: the job graph was built and not submitted")
            else:  # a Flex Template launch: Dataflow starts the job from this file, not from here
                print(f"the job was written to {options.view_as(GoogleCloudOptions).template_location}; "
                      "Dataflow runs it")
            return EXIT_OK
        if streaming:
            stop = StreamingStop(result, ops, inbox, line, restart_command(argv, job),
                                 _flink_cluster(options, ops), watches_files_here)
            stopped = stop.run()
            if stopped and resume_files:
                # a file this run never listed before the stop keeps the last run's progress
                keep_file_progress(file_progress_folder(ops.output), resume_files)
            if stop.savepoint_failed:
                _print_where(ops.output, log_path)
                return EXIT_STOP_UNFINISHED
            if stop.savepoint or stop.cancelled or (
                    not stopped and (ops.input_subscription or ops.kafka_topic
                                    or ops.watch_seconds)):
                _print_where(ops.output, log_path)
                return EXIT_OK      # cancelled: the running summary.json is the report
        else:
            result.wait_until_finish()
    _remove_work_dir(ops.resolved_work_dir())
    _remove_empty_temp_dirs(ops.output)
    write_empty_outputs(ops.output, streaming)
    if streaming and not FileSystems.exists(ops.output.rstrip("/") + "/summary.json"):
        # stopped before a first summary: nothing was counted, written or acknowledged
        print("stopped before anything was counted: no summary.json; every message not "
              "acknowledged stays on the subscription for the next run")
        _print_where(ops.output, log_path)
        return EXIT_OK
    summary = read_summary(ops.output)
    if streaming and job and job.get("restarts"):
        summary = with_earlier_runs(summary, ops.output, job)
        _write_summary(ops.output, summary)
    print(format_summary_table(summary, per_file=not (ops.input_subscription
                                                          or ops.kafka_topic)))
    _warn_still_being_written(summary, ops.quiet_seconds)
    if not streaming:
        _warn_damaged_and_empty(summary, ops)
    if ops.report:
        _write_report(ops.output)
    if streaming:
        code = stop.finished(summary)
    else:
        code = exit_code(summary, ops)
    _print_where(ops.output, log_path)
    return code


def _warn_still_being_written(summary: dict, quiet_seconds: float) -> None:
    """Files modified within --quiet_seconds whose torn tail was left out (not a read_error)."""
    files = summary.get("still_being_written") or []
    if files:
        print(f"warning: {len(files)} file(s) modified less than --quiet_seconds={quiet_seconds:g} "
              "ago end in a torn gzip member or an unterminated line: still being written, so "
              "that tail was not read (run again once they are quiet): " + ", ".join(files),
              file=sys.stderr)


def damaged_files(summary: dict) -> list[str]:
    """One line per input file with a read_error: its name, its damage and what was kept."""
    rows = {row["file"]: row for row in summary.get("files") or []}
    lines = []
    for file, errors in (summary.get("read_error_files") or {}).items():
        row = rows.get(file, {})
        kept = row.get("records", errors) - errors
        lines.append(f"{file}: damaged ({errors:,} read_error: cut short or unreadable); the "
                     f"{kept:,} records before the damage were read and kept ({row.get('clean', 0):,} "
                     "clean), what follows it is lost")
    return lines


def empty_files(summary: dict) -> list[str]:
    """Input files that hold no record at all (a batch run with other, non-empty files)."""
    return [row["file"] for row in summary.get("files") or [] if not row["records"]]


def _warn_damaged_and_empty(summary: dict, ops) -> None:
    """Damaged input is never only a count: each file with a read_error gets a line; so does an
    empty file among others (the whole input empty is exit_code's error)."""
    for line in damaged_files(summary):
        print(("error: " if ops.fail_on_read_error else "warning: ") + line, file=sys.stderr)
    empty = empty_files(summary)
    if empty and summary["input_records"]:
        print(f"warning: {len(empty)} input file(s) hold no record (empty) and were skipped: "
              + ", ".join(empty), file=sys.stderr)


def exit_code(summary: dict, ops) -> int:
    """The batch run's exit code from its summary (docs/running/direct.md, "Exit codes"); says why on stderr."""
    if not summary["balanced"]:
        print("error: the summary does not balance: some input records are unaccounted for",
              file=sys.stderr)
        return EXIT_UNBALANCED
    if summary["input_records"] == 0:
        if ops.allow_empty:
            print("warning: the input holds no records (--allow_empty: the outputs are empty)",
                  file=sys.stderr)
            return EXIT_OK
        print("error: the input holds no records (empty files?); give --allow_empty to accept "
              "that", file=sys.stderr)
        return EXIT_BAD_INPUT
    limit = ops.max_bad_record_rate
    if limit is not None and bad_record_rate(summary) > limit:
        print(f"error: bad-record rate {bad_record_rate(summary):.2%} exceeds "
              f"--max_bad_record_rate={limit:.2%}", file=sys.stderr)
        return EXIT_BAD_RECORD_RATE
    if ops.fail_on_read_error and summary.get("read_error_files"):
        print(f"error: {len(summary['read_error_files'])} input file(s) are damaged "
              "(--fail_on_read_error); their records before the damage are in the outputs",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    unreadable = unreadable_files(summary, ops.max_bad_file_rate)
    if unreadable:
        print(describe_unreadable(unreadable, summary, ops.max_bad_file_rate, ops.output),
              file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _print_where(output: str, log_path) -> None:
    if log_path:
        print(f"logs: {log_path}")
    print(f"outputs: {output}")


def _workers_run_here(options) -> bool:
    """DirectRunner and Flink with LOOPBACK run the Python workers in this process, so the
    progress counters (beam_pipeline/core/progress.py) count here too."""
    runner = (options.view_as(StandardOptions).runner or "DirectRunner").lower()
    if "direct" in runner:
        return True
    return "flink" in runner and options.get_all_options().get("environment_type") == "LOOPBACK"


def _is_worker_teardown(error) -> bool:
    """An in-process (LOOPBACK) worker's data channel cancelled by the job server as the job ends:
    Beam logs it as an error and re-raises it in its reader thread, but the run's result is
    unaffected (a job that really lost its workers fails, and says so)."""
    code = getattr(error, "code", None)
    return callable(code) and getattr(code(), "name", "") == "CANCELLED"


def is_teardown_log(record: logging.LogRecord) -> bool:
    return bool(record.exc_info) and _is_worker_teardown(record.exc_info[1])


def _terminal_worthy(record: logging.LogRecord) -> bool:
    if is_teardown_log(record):
        return False                      # kept in the log file
    return record.levelno >= logging.ERROR or record.name.startswith("feedcheck")


def teardown_excepthook(args) -> None:
    """threading.excepthook that logs a worker thread's teardown cancellation (see
    _is_worker_teardown) instead of printing its traceback; any other error goes on as before."""
    if _is_worker_teardown(args.exc_value):
        logging.getLogger(__name__).info("worker thread %s ended by the job server's hang-up",
                                         getattr(args.thread, "name", "?"))
        return
    threading.__excepthook__(args)


@contextlib.contextmanager
def _logging(ops, job):
    """--verbose: every INFO log on the terminal. Otherwise Beam's and Flink's logs go to a log
    file under the output folder (or the temp folder for a remote output) and the terminal shows
    only errors and our own warnings. Yields the log file's path (None with --verbose); the
    logging set-up before the run is restored after it (main also runs in-process, in tests)."""
    root = logging.getLogger()
    before, before_hook = (list(root.handlers), root.level), threading.excepthook
    for handler in before[0]:
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.captureWarnings(True)
    root.setLevel(logging.INFO)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(fmt)
    handlers, path = [terminal], None
    if ops.verbose:
        for noisy in ("google", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    else:
        terminal.setLevel(logging.WARNING)
        terminal.addFilter(_terminal_worthy)
        threading.excepthook = teardown_excepthook
        if _is_remote(ops.output):
            name = f"feedcheck-{(job or {}).get('job_id', uuid.uuid4().hex)}.log"
            path = os.path.join(tempfile.gettempdir(), name)
        else:
            path = os.path.join(ops.output, LOG_FILE)
            os.makedirs(os.path.dirname(path), exist_ok=True)
        handlers.append(logging.FileHandler(path))
        handlers[-1].setFormatter(fmt)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield path
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        logging.captureWarnings(False)
        threading.excepthook = before_hook
        for handler in before[0]:
            root.addHandler(handler)
        root.setLevel(before[1])


def _write_report(output: str) -> None:
    from beam_pipeline.report import write_report

    result = write_report(output)
    print(f"report: {result['html']} ({result['charts']} charts, {result['seconds']} s)")


# A pull takes no more records than the job processes in this share of --stop_timeout.
DRAIN_SHARE = 1 / 3


def _flink_cluster(options, ops):
    """(REST address, Flink job name, savepoint folder) of a streaming job submitted to a
    standalone Flink cluster, else None. The savepoint folder is --savepoint_dir, default
    <output>/_state/savepoints (the cluster must be able to write there)."""
    from runners import flink

    every = options.get_all_options()
    base = flink.cluster_rest_base(every.get("flink_master")) if runner_kind(
        [f"--runner={options.view_as(StandardOptions).runner or ''}"]) == "flink" else None
    if base is None:
        return None
    output = ops.output if _is_remote(ops.output) else "file://" + os.path.abspath(ops.output)
    target = ops.savepoint_dir or f"{output}/_state/savepoints"
    return base, options.view_as(GoogleCloudOptions).job_name, target


def restart_command(argv, job) -> str:
    """The command that continues this streaming job into its folder: its own arguments, with the
    job's id (never --overwrite, which would delete what it wrote)."""
    args, skip = [], False
    for arg in argv:            # never --overwrite; a savepoint given to this run is not the next's
        if skip or arg == "--overwrite" or arg.startswith(("--overwrite=", "--savepoint_path=")):
            skip = False
            continue
        if arg == "--savepoint_path":
            skip = True
            continue
        args.append(arg)
    if job and not (flag_value(args, "job_id") or flag_value(args, "job_name")):
        args += ["--job_id", job["job_id"]]
    return shlex.join([os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd())
                       else sys.executable, "-m", "beam_pipeline", *args])


class StreamingStop:
    """Runs a streaming job until its input ends or a signal stops it.

    The first SIGINT or SIGTERM stops it gracefully where the runner allows: on DirectRunner no
    more Pub/Sub messages are pulled, the source's watermark jumps to the end of time, and the job
    drains as a bounded input ends (every key's reorder wait and hold end and are reported, every
    output folder writes its last file, summary.json its last count); then what was pulled is
    acknowledged. A second signal, or --stop_timeout passing, exits at once (code 6) and says
    what was not written: it was not acknowledged either, so Pub/Sub delivers it again to the
    restarted job. Other runners are cancelled, as before (see docs/streaming.md)."""

    def __init__(self, result, ops, inbox, line, restart: str, flink_cluster=None,
                 watches_files_here: bool = False):
        """`flink_cluster`: (REST address, job name, savepoint folder) of a job on a standalone
        Flink cluster, stopped with a savepoint. `watches_files_here`: a DirectRunner job following
        files, whose ticks end on a stop (transforms/follow.py) so that it drains."""
        self.result, self.ops, self.inbox, self.line = result, ops, inbox, line
        self.restart = restart
        self.flink_cluster = flink_cluster
        self.signal_name = None
        self.cancelled = False
        self.savepoint = None
        self.savepoint_thread = None
        self.savepoint_failed = False
        self.watches_files_here = watches_files_here

    @property
    def graceful(self) -> bool:
        return self.inbox is not None or self.watches_files_here

    def run(self) -> bool:
        """Wait for the job; True when a signal stopped it."""
        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in before:
            signal.signal(sig, self._on_signal)
        try:
            while early_signals.received:
                self._on_signal(early_signals.received.pop(0), None)
            self.line.say(f"streaming: writing under {self.ops.output}; stop with Ctrl-C or SIGTERM")
            self.result.wait_until_finish()
        except KeyboardInterrupt:         # a cancelled job's wait raises; the stop is known
            if self.signal_name is None:
                raise
        except Exception:
            # Beam's stream of the job's state can break while Flink stops the job with a savepoint
            # (seen with Kafka: grpc UNAVAILABLE); the savepoint, not that stream, says how the
            # stop went, and the thread below waits for it on Flink's REST API.
            if self.savepoint_thread is None:
                raise
        finally:
            if self.savepoint_thread is not None:
                self.savepoint_thread.join()    # bounded by --stop_timeout; a 2nd signal exits
            for sig, handler in before.items():
                signal.signal(sig, handler)
        return self.signal_name is not None

    def _on_signal(self, signum, _frame):
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            self._exit_now(f"a second {name}")
        self.signal_name = name
        self.line.close()
        if self.flink_cluster:
            print(f"stopping on {name}: Flink takes a savepoint and stops the job (at most "
                  f"{self.ops.stop_timeout:g} s)", flush=True)
            self.savepoint_thread = threading.Thread(target=self._stop_with_savepoint, daemon=True)
            self.savepoint_thread.start()
            return
        if not self.graceful:
            print(f"stopping on {name}: cancelling the streaming job", flush=True)
            self.cancelled = True
            try:
                self.result.cancel()
            except Exception as error:  # the job may already be gone
                print(f"cancel: {error}", file=sys.stderr)
            print(CANCEL_NOTE, flush=True)
            raise KeyboardInterrupt(name)
        print(f"stopping on {name}: no more input is read; finishing what was pulled and writing "
              f"every output (at most {self.ops.stop_timeout:g} s; press Ctrl-C again to exit at "
              "once)", flush=True)
        direct.request_stop()
        timer = threading.Timer(self.ops.stop_timeout, self._exit_now,
                                (f"--stop_timeout {self.ops.stop_timeout:g} s passed",))
        timer.daemon = True
        timer.start()

    def _stop_with_savepoint(self):
        from runners import flink

        base, job_name, target = self.flink_cluster
        try:
            self.savepoint = flink.stop_with_savepoint(
                base, job_name, target, self.ops.stop_timeout,
                cancel=bool(self.ops.kafka_topic))
        except Exception as error:  # noqa: BLE001: say it, and leave the job as it is
            self.savepoint_failed = True
            print(f"error: the stop with a savepoint failed: {error}; the job is still running "
                  "on the cluster (stop it there, or press Ctrl-C again to leave it)",
                  file=sys.stderr, flush=True)
            return
        print(f"savepoint: {self.savepoint}\nResume this job from it with:\n  {self.restart} "
              f"--savepoint_path {shlex.quote(self.savepoint)}", flush=True)

    def _exit_now(self, why: str):
        pending = self.inbox.unacknowledged() if self.inbox else 0
        unwritten = durability.unwritten()
        print(f"error: the stop did not finish ({why}): exiting now. {pending:,} Pub/Sub "
              f"messages this job pulled were not acknowledged ({unwritten:,} output elements "
              "not yet written): Pub/Sub delivers them again when their lease ends "
              f"(--ack_lease_seconds {self.ops.ack_lease_seconds:g}), and rows of them already "
              "written are then there twice (readback deduplicates them). Continue with:\n  "
              f"{self.restart}", file=sys.stderr, flush=True)
        os._exit(EXIT_STOP_UNFINISHED)

    def finished(self, summary: dict) -> int:
        """After the drain: acknowledge what was pulled (it is all written now), say how to
        continue, and give the exit code."""
        if self.inbox:
            self.inbox.acknowledge_all()
            self.inbox.close()
        if not summary["balanced"]:
            print("error: the summary does not balance: some input records are unaccounted for",
                  file=sys.stderr)
            return EXIT_UNBALANCED
        if summary["input_records"] == 0:
            print("warning: the job read no records", file=sys.stderr)
        if self.signal_name and not self.inbox:
            print(f"stopped on {self.signal_name}: every record read is written, and how far "
                  "each file was read is saved. Continue this job (each file from where this "
                  f"run stopped) with:\n  {self.restart}", flush=True)
        elif self.signal_name:
            acknowledged = self.inbox.acknowledged_messages if self.inbox else 0
            returned = self.inbox.returned_messages if self.inbox else 0
            also = (f"; {returned:,} messages pulled while the last run's were still coming "
                    "back were given back to Pub/Sub unread" if returned else "")
            print(f"stopped on {self.signal_name}: every record pulled is written and "
                  f"acknowledged ({acknowledged:,} messages){also}. Continue this job with:\n  "
                  f"{self.restart}", flush=True)
        return EXIT_OK


CANCEL_NOTE = (
    "Records this runner had read but not yet written are not lost: Dataflow (drain) and Flink "
    "(savepoint, then stop) acknowledge their input only after a checkpoint, so it is delivered "
    "again to the next run.")


def _is_dry_run(options) -> bool:
    return bool(options.get_all_options().get("dry_run"))


def _remove_work_dir(work_dir: str) -> None:
    try:
        FileSystems.delete([work_dir])
    except Exception:  # nothing to clean (no events) or already gone
        pass


def _remove_empty_temp_dirs(output: str) -> None:
    """fileio.WriteToFiles leaves its emptied .temp* folders behind on local disks."""
    if _is_remote(output):
        return
    for folder, subfolders, _ in os.walk(output, topdown=False):
        for name in subfolders:
            path = os.path.join(folder, name)
            if name.startswith(".temp") and not os.listdir(path):
                os.rmdir(path)
