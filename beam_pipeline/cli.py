"""Command line: validate the options, run the graph on the chosen runner, print the summary."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions)
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

from beam_pipeline.options import FORMAT_NAMES, FeedCheckOptions
from beam_pipeline.pipeline import build_pipeline
from transforms.aggregate import bad_record_rate
from runners import direct
from runners.flags import runner_kind
from runners.profiles import apply_profile


class UsageError(Exception):
    pass


def print_help() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipeline",
        description="Check order-book delta feeds: per symbol, where the data is continuous and "
                    "where it is not. Any other standard Beam option (Flink, Dataflow, ...) is "
                    "accepted too; see the README.")
    StandardOptions._add_argparse_args(parser)
    FeedCheckOptions._add_argparse_args(parser)
    parser.print_help()


def validate(options: PipelineOptions) -> None:
    ops = options.view_as(FeedCheckOptions)
    streaming = options.view_as(StandardOptions).streaming
    if not ops.output:
        raise UsageError("--output is required")
    if ops.input_subscription:
        if not streaming:
            raise UsageError("--input_subscription needs --streaming")
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
        for pattern in globs:
            if (not _is_remote(pattern) and not ops.watch_seconds
                    and not FileSystems.match([pattern])[0].metadata_list):
                raise UsageError(f"no input file matches {pattern}")
    if not _is_remote(ops.output):
        _check_writable(ops.output)
    if _is_dry_run(options) and _is_dataflow(options):
        _check_dry_run_locations(options)


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


def read_summary(output: str) -> dict:
    with FileSystems.open(output.rstrip("/") + "/summary.json") as handle:
        return json.loads(handle.read())


def format_summary_table(summary: dict) -> str:
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
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value:>12,}" for label, value in rows]
    lines.append("balanced: " + ("yes" if summary["balanced"] else "NO"))
    files = summary.get("files") or []
    if files:
        lines += ["", *format_file_table(files)]
    return "\n".join(lines)


FILE_TABLE_ROWS = 20        # more files than this: the ones with the most dead letters


def format_file_table(files: list) -> list:
    """The per-file table: every file, or the FILE_TABLE_ROWS with the most dead letters."""
    shown = files
    title = "per file:"
    if len(files) > FILE_TABLE_ROWS:
        shown = sorted(files, key=lambda row: (-row["dead"], row["file"]))[:FILE_TABLE_ROWS]
        title = f"per file ({FILE_TABLE_ROWS} of {len(files)}, most dead letters first):"
    columns = ("records", "clean", "ignored", "duplicates", "superseded", "dead")
    header = f"{'format':<12} " + " ".join(f"{name:>10}" for name in columns) + "  file"
    lines = [title, header]
    for row in shown:
        lines.append(f"{row['format'] or '-':<12} "
                     + " ".join(f"{row[name]:>10,}" for name in columns) + f"  {row['file']}")
    return lines


def unreadable_files(summary: dict, max_bad_file_rate: float) -> list:
    """Files from which no depth record could be read, or whose dead-letter share is above the
    limit (the run fails with exit 4 on any)."""
    bad = []
    for row in summary.get("files") or []:
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
        if not row["records"]:
            lines.append("    the file holds no record at all")
        elif not row["dead"]:
            lines.append("    no record was a depth update or snapshot (another stream only?)")
    if len(rows) > FILE_TABLE_ROWS:
        lines.append(f"  ... and {len(rows) - FILE_TABLE_ROWS} more (summary.json: files)")
    lines.append(f"try: --input_format {{{','.join(FORMAT_NAMES)}}} if the detected format is wrong "
                 f"(the README's input formats show a line of each); --skip_files for files that "
                 f"are not feeds; --max_bad_file_rate 1 to accept a file's dead-letter share. "
                 f"Every record is in {output}, the rejected ones in dead_letter/ with their reason.")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def main(argv: list[str]) -> int:
    if argv[:1] == ["report"]:
        from beam_pipeline.report import main as report_main

        return report_main(argv[1:])
    if "--help" in argv or "-h" in argv:
        print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("apache_beam", "google", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    options = PipelineOptions(apply_profile(argv), save_main_session=False)
    try:
        validate(options)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ops = options.view_as(FeedCheckOptions)
    if ops.input_subscription and runner_kind(argv) == "direct":
        direct.tune_streaming_pubsub_reads(ops.pull_max_messages, ops.pull_wait_seconds)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    result = pipeline.run()
    if getattr(ops, "dry_run", False) or _is_dry_run(options):
        print("dry run: the job graph was built and not submitted")
        return 0
    template = options.view_as(GoogleCloudOptions).template_location
    if template:  # a Flex Template launch: Dataflow starts the job from this file, not from here
        print(f"the job was written to {template}; Dataflow runs it")
        return 0
    if options.view_as(StandardOptions).streaming:
        stopped = _run_until_stopped(result, ops.output)
        if stopped or ops.input_subscription or ops.watch_seconds:
            return 0      # an unbounded input: the running summary.json is the report
    else:
        result.wait_until_finish()
    _remove_work_dir(ops.resolved_work_dir())
    _remove_empty_temp_dirs(ops.output)
    summary = read_summary(ops.output)
    print(format_summary_table(summary))
    if ops.report:
        _write_report(ops.output)
    if not summary["balanced"]:
        print("error: the summary does not balance: some input records are unaccounted for",
              file=sys.stderr)
        return 1
    limit = ops.max_bad_record_rate
    if limit is not None and bad_record_rate(summary) > limit:
        print(f"error: bad-record rate {bad_record_rate(summary):.2%} exceeds "
              f"--max_bad_record_rate={limit:.2%}", file=sys.stderr)
        return 3
    unreadable = unreadable_files(summary, ops.max_bad_file_rate)
    if unreadable:
        print(describe_unreadable(unreadable, summary, ops.max_bad_file_rate, ops.output),
              file=sys.stderr)
        return 4
    return 0


def _write_report(output: str) -> None:
    from beam_pipeline.report import write_report

    result = write_report(output)
    print(f"report: {result['html']} ({result['charts']} charts, {result['seconds']} s)")


STOP_NOTE = (
    "Records the job pulled but had not yet written: DirectRunner acknowledged them to Pub/Sub when "
    "it pulled them, so they are lost to this run (replay them from the capture files); Dataflow "
    "(drain) and Flink (savepoint, then stop) acknowledge only after a checkpoint, so they are "
    "delivered again to the next run.")


def _run_until_stopped(result, output: str) -> bool:
    """Streaming: run until the job ends, or SIGINT/SIGTERM cancels it (then say what that means).
    True when it was stopped."""
    def stop(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    print(f"streaming: writing under {output}; stop with Ctrl-C or SIGTERM", flush=True)
    try:
        result.wait_until_finish()
    except KeyboardInterrupt as interrupt:
        print(f"stopping on {interrupt or 'SIGINT'}: cancelling the streaming job", flush=True)
        try:
            result.cancel()
        except Exception as error:  # the job may already be gone
            print(f"cancel: {error}", file=sys.stderr)
        print(STOP_NOTE, flush=True)
        return True
    return False


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
