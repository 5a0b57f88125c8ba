"""The command line as a careful user meets it: mistakes are usage errors, outputs never mix, every
folder is there after a run, the terminal shows the summary and where the outputs are."""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import fastavro
import grpc
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import cli, progress
from beam_pipeline.cli import UsageError, check_command_line, claim_output, main
from beam_pipeline.core import progress as counters
from runners import flink
from tests.tooling.synthetic import BAD_RECORDS, generate, write_lines
from transforms.sinks import CLEAN_SCHEMA, GAP_SCHEMA, OUTPUT_FOLDERS, PARQUET_SCHEMAS

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@pytest.fixture(scope="module")
def feed(tmp_path_factory) -> Path:
    """A few seconds of feed (2 symbols' worth of a synthetic capture) with some bad records."""
    lines, _ = generate(300, seed=5, bad_records=BAD_RECORDS)
    path = tmp_path_factory.mktemp("feed") / "feed.jsonl"
    write_lines(str(path), lines)
    return path


def records_in(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


def run_cli(*args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "beam_pipeline", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


# ---- usage errors ----------------------------------------------------------------------------

def test_a_misspelled_option_is_a_usage_error_naming_the_nearest(feed, tmp_path):
    result = run_cli("--input", feed, "--output", tmp_path / "o", "--max_bad_rate", "0.01")
    assert result.returncode == 2
    assert one_line_error(result.stderr) == ("error: unknown option --max_bad_rate (did you mean "
                                             "--max_bad_file_rate or --max_bad_record_rate?)")
    assert not (tmp_path / "o").exists()         # refused before anything was written


@pytest.mark.parametrize("argv, expected", [
    (["--output", "O", "stray"], "unexpected argument 'stray'"),
    (["--output=O", "--imput", "x"], "unknown option --imput (did you mean --input"),
    (["--output", "O", "--max_record_bytes", "abc"], "invalid int value: 'abc'"),
    (["--output", "O", "--input_format", "csv"], "invalid choice: 'csv'"),
])
def test_stray_arguments_and_bad_values_are_one_line_usage_errors(feed, argv, expected, capsys):
    assert main(["--input", str(feed), *argv]) == 2
    assert expected in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("extra, expected", [
    (["--max_record_bytes", "-1"], "--max_record_bytes must be >= 1, not -1"),
    (["--run_span_ids", "0"], "--run_span_ids must be >= 1, not 0"),
    (["--small_gap_max", "5000", "--medium_gap_max", "10"],
     "--small_gap_max (5000) must be < --medium_gap_max (10)"),
    (["--small_gap_max", "10", "--medium_gap_max", "10"],
     "--small_gap_max (10) must be < --medium_gap_max (10)"),
    (["--recovery_timeout", "-1"], "--recovery_timeout must be > 0, not -1.0"),
    (["--reorder_timeout", "0"], "--reorder_timeout must be > 0, not 0.0"),
    (["--stall_timeout", "nan"], "--stall_timeout must be > 0, not nan"),
    (["--error_window", "-60"], "--error_window must be > 0"),
    (["--max_bad_record_rate", "1.5"], "--max_bad_record_rate must be >= 0 and <= 1, not 1.5"),
    (["--alert_warning_count", "50", "--alert_critical_count", "5"],
     "--alert_warning_count (50) must be <= --alert_critical_count (5)"),
    (["--max_buffered_events", "0"], "--max_buffered_events must be >= 1, not 0"),
])
def test_numeric_options_are_range_checked(feed, tmp_path, extra, expected, capsys):
    assert main(["--input", str(feed), "--output", str(tmp_path / "o"), *extra]) == 2
    assert expected in one_line_error(capsys.readouterr().err)


def test_several_inputs_after_one_flag_and_a_folder_means_its_files(feed, tmp_path, outputs):
    second = tmp_path / "second.jsonl"
    lines, _ = generate(100, seed=6)
    write_lines(str(second), lines)
    expected = records_in(feed) + records_in(second)
    assert main(["--input", str(feed), str(second), "--output", str(tmp_path / "two")]) == 0
    assert outputs(tmp_path / "two").summary()["input_records"] == expected

    folder = tmp_path / "captures"
    (folder / "day2").mkdir(parents=True)
    write_lines(str(folder / "a.jsonl"), feed.read_bytes().splitlines())
    write_lines(str(folder / "day2" / "b.jsonl.gz"), lines)      # recursive, gzip detected too
    assert main(["--input", str(folder), "--output", str(tmp_path / "dir")]) == 0
    summary = outputs(tmp_path / "dir").summary()
    assert summary["input_records"] == expected
    assert summary["dead_letters"].get("read_error") is None


def test_an_empty_folder_as_input_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2
    assert "no input file in folder" in one_line_error(capsys.readouterr().err)


def test_a_savepoint_on_the_embedded_flink_cluster_is_a_usage_error(feed, tmp_path, capsys):
    """The embedded [local] cluster ignores --savepoint_path (it would start from empty state)."""
    assert main(["--runner", "FlinkRunner", "--input", str(feed), "--output", str(tmp_path / "o"),
                 "--savepoint_path", str(tmp_path / "sp")]) == 2
    assert "--savepoint_path needs a Flink cluster" in one_line_error(capsys.readouterr().err)


def test_flink_options_are_known_and_the_profile_flag_is_not_discarded(caplog):
    argv = flink.apply_profile(["--runner=FlinkRunner", "--flink_job_server_jar=/x/job.jar",
                                "--checkpointing_interval", "1000", "--input", "a", "--output", "o"])
    check_command_line(argv)                       # every flag known, none a usage error
    with caplog.at_level(logging.WARNING):
        options = PipelineOptions(argv)
        everything = options.get_all_options()
    assert "Discarding unparseable args" not in caplog.text
    assert everything["finish_bundle_before_checkpointing"] is True
    assert everything["checkpointing_interval"] == "1000"
    with pytest.raises(UsageError, match="did you mean --checkpointing_interval"):
        check_command_line(["--checkpointing_intervall", "1000"])


# ---- output folders --------------------------------------------------------------------------

def test_an_earlier_batch_run_is_refused_unless_overwrite_replaces_it(feed, tmp_path, capsys,
                                                                      outputs):
    out = tmp_path / "out"
    assert main(["--input", str(feed), "--output", str(out)]) == 0
    first = json.loads((out / "_job.json").read_text())
    assert first["mode"] == "batch"
    stale = out / "gaps" / "part-stale.parquet"
    pq.write_table(GAP_SCHEMA.empty_table(), stale)
    capsys.readouterr()

    assert main(["--input", str(feed), "--output", str(out)]) == 2
    error = one_line_error(capsys.readouterr().err)
    assert f"holds an earlier run (job {first['job_id']}, batch)" in error and "--overwrite" in error
    assert stale.exists()                         # nothing touched

    small, _ = generate(50, seed=9)
    write_lines(str(tmp_path / "small.jsonl"), small)
    assert main(["--input", str(tmp_path / "small.jsonl"), "--output", str(out), "--overwrite"]) == 0
    assert not stale.exists()                     # replaced whole: nothing of the first run left
    summary = outputs(out).summary()
    assert summary["input_records"] == len(small)
    assert len(outputs(out).parquet_rows("clean")) == summary["clean_records"]
    assert json.loads((out / "_job.json").read_text())["job_id"] != first["job_id"]


def streaming_options(out, *extra):
    return PipelineOptions(["--streaming", "--input", "x", "--output", str(out), *extra])


def test_a_restarted_streaming_job_continues_into_its_folder_and_another_is_refused(tmp_path):
    out = tmp_path / "live"
    job = claim_output(streaming_options(out, "--job_id", "live-1"))
    assert job["job_id"] == "live-1" and job["mode"] == "streaming"
    (out / "clean").mkdir()
    written = out / "clean" / "part-1.parquet"
    pq.write_table(CLEAN_SCHEMA.empty_table(), written)

    again = claim_output(streaming_options(out, "--job_id", "live-1"))     # the same job restarted
    assert again["restarts"] == 1 and written.exists()
    assert claim_output(streaming_options(out, "--job_name", "x", "--job_id", "live-1"))["restarts"] == 2

    for other in ([], ["--job_id", "live-2"], ["--job_name", "another"]):   # a different run
        with pytest.raises(UsageError, match="holds an earlier run .job live-1, streaming."):
            claim_output(streaming_options(out, *other))
    with pytest.raises(UsageError, match="holds an earlier run"):          # a batch run
        claim_output(PipelineOptions(["--input", "x", "--output", str(out), "--job_id", "live-1"]))
    assert written.exists()

    by_name = tmp_path / "named"
    claim_output(streaming_options(by_name, "--job_name", "feed-a"))
    (by_name / "summary.json").write_text("{}")
    assert claim_output(streaming_options(by_name, "--job_name", "feed-a"))["restarts"] == 1


def test_streaming_stop_names_the_signal_and_a_restart_continues(feed, tmp_path):
    """The real command, streaming over a file on DirectRunner: stopped by SIGINT as soon as it
    runs; another run is refused the folder; the same job (its --job_id) restarted continues
    into it and runs to the end of the file."""
    out = tmp_path / "live"
    args = [PYTHON, "-m", "beam_pipeline", "--streaming", "--input", str(feed),
            "--output", str(out), "--output_flush_seconds", "1"]
    process = subprocess.Popen([*args, "--job_id", "feed-live"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    assert first.startswith(f"streaming: writing under {out}"), process.stderr.read()[-2000:]
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    assert "stopping on SIGINT: cancelling the streaming job" in stdout
    assert stdout.rstrip().splitlines()[-1] == f"outputs: {out}"
    assert json.loads((out / "_job.json").read_text())["job_id"] == "feed-live"

    refused = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "holds an earlier run (job feed-live, streaming)" in one_line_error(refused.stderr)

    again = subprocess.run([*args, "--job_id", "feed-live"], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "_job.json").read_text())["restarts"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["in_flight"] is False and summary["in_flight_records"] == 0
    assert summary["input_records"] == records_in(feed)


def test_a_streaming_summary_says_when_records_are_in_flight():
    from collections import Counter

    from transforms.aggregate import format_summary

    counts = Counter(input_records=10, clean_records=6, ignored=1)
    running = format_summary(counts, streaming=True)
    assert running["balanced"] is False
    assert running["in_flight"] is True and running["in_flight_records"] == 3
    assert "in flight" in running["note"]
    assert "in_flight" not in format_summary(counts)          # batch: unbalanced is an error


# ---- what a run leaves -----------------------------------------------------------------------

def test_every_output_folder_exists_and_reads_as_a_table_after_a_run(feed, tmp_path):
    lines, _ = generate(200, seed=7)                  # no faults: no gaps, no dead letters
    write_lines(str(tmp_path / "clean.jsonl"), lines)
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "clean.jsonl"), "--output", str(out)]) == 0
    assert {name for name in OUTPUT_FOLDERS if (out / name).is_dir()} == set(OUTPUT_FOLDERS)
    gaps = pq.read_table(out / "gaps")                # the folder, as pyarrow reads a dataset
    assert gaps.num_rows == 0 and gaps.schema.equals(GAP_SCHEMA)
    assert pq.read_table(out / "corrupt_periods").num_rows == 0
    with open(next((out / "dead_letter").glob("*.avro")), "rb") as handle:
        reader = fastavro.reader(handle)
        assert list(reader) == [] and reader.writer_schema["name"]
    for name in ("recovery_requests", "error_counts", "alerts", "undelivered"):
        table = pq.read_table(out / name)             # Parquet with its schema, no rows
        assert table.num_rows == 0 and table.schema.equals(PARQUET_SCHEMAS[name]), name


def test_an_empty_input_fails_with_exit_4_unless_allowed(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert main(["--input", str(empty), "--output", str(tmp_path / "a")]) == 4
    assert "the input holds no records" in capsys.readouterr().err
    assert main(["--input", str(empty), "--output", str(tmp_path / "b"), "--allow_empty"]) == 0
    assert "warning: the input holds no records" in capsys.readouterr().err
    assert pq.read_table(tmp_path / "b" / "clean").num_rows == 0


def test_a_damaged_file_is_named_with_what_was_kept_and_fails_only_when_asked(feed, tmp_path,
                                                                               capsys):
    """A .gz cut mid-stream: exit 0 by default (the records before the cut are good), a line on
    the terminal names it and what was kept, the per-file table marks it;
    --fail_on_read_error exits 4."""
    import gzip

    data = gzip.compress(feed.read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    os.utime(cut, (time.time() - 3600, time.time() - 3600))   # finished long ago: not being written
    assert main(["--input", str(feed), str(cut), "--output", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["read_error_files"] == {str(cut): 1}
    row = next(r for r in summary["files"] if r["file"] == str(cut))
    kept = row["records"] - 1
    assert 0 < kept < records_in(feed)
    assert f"warning: {cut}: damaged (1 read_error" in printed.err
    assert f"the {kept:,} records before the damage were read and kept" in printed.err
    [table_line] = [line for line in printed.out.splitlines() if line.endswith("read_error]")]
    assert str(cut) in table_line and "[damaged: 1 read_error]" in table_line
    assert main(["--input", str(feed), str(cut), "--output", str(tmp_path / "b"),
                 "--fail_on_read_error"]) == 4
    assert "--fail_on_read_error" in capsys.readouterr().err


def test_an_empty_file_among_good_ones_is_a_warning_naming_it(feed, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert main(["--input", str(feed), str(empty), "--output", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr()
    assert f"warning: 1 input file(s) hold no record (empty) and were skipped: {empty}" in printed.err
    assert "error" not in printed.err
    assert any(line.endswith(f"{empty}  [empty]") for line in printed.out.splitlines())
    # every file empty: exit 4, unless --allow_empty
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"")
    assert main(["--input", str(empty), str(other), "--output", str(tmp_path / "b")]) == 4
    assert main(["--input", str(empty), str(other), "--output", str(tmp_path / "c"),
                 "--allow_empty"]) == 0


def test_quiet_by_default_logs_in_a_file_and_the_summary_ends_with_the_folder(feed, tmp_path):
    out = tmp_path / "out"
    result = run_cli("--input", feed, "--output", out)
    assert result.returncode == 0, result.stderr
    assert " INFO " not in result.stderr and "WARNING" not in result.stderr, result.stderr[-2000:]
    assert result.stdout.splitlines()[-2:] == [f"logs: {out}/_logs/feedcheck.log", f"outputs: {out}"]
    assert "balanced: yes" in result.stdout
    log = (out / "_logs" / "feedcheck.log").read_text()
    assert " INFO " in log and "apache_beam" in log

    loud = run_cli("--input", feed, "--output", tmp_path / "loud", "--verbose")
    assert loud.returncode == 0
    assert " INFO apache_beam" in loud.stderr
    assert loud.stdout.splitlines()[-1] == f"outputs: {tmp_path / 'loud'}"


class _HungUp(grpc.RpcError):
    """What a LOOPBACK worker's data-plane reader raises when the job server hangs up at job end."""
    def code(self):
        return grpc.StatusCode.CANCELLED


def test_a_worker_hung_up_on_at_job_end_stays_in_the_log_file(capsys, tmp_path):
    ops = PipelineOptions(["--output", str(tmp_path)]).view_as(cli.FeedCheckOptions)
    with cli._logging(ops, None) as log_path:
        try:
            raise _HungUp()
        except grpc.RpcError:
            logging.getLogger("apache_beam.runners.worker.data_plane").exception(
                "Failed to read inputs in the data plane.")

        def read_inputs():
            raise _HungUp()
        reader = threading.Thread(target=read_inputs, name="read_grpc_client_inputs")
        reader.start()
        reader.join()
        logging.getLogger("apache_beam").error("a real error")
        broken = threading.Thread(target=lambda: 1 / 0, name="other")
        broken.start()
        broken.join()
    err = capsys.readouterr().err
    assert "Failed to read inputs" not in err and "_HungUp" not in err
    assert "a real error" in err and "ZeroDivisionError" in err     # real errors still show
    log = Path(log_path).read_text()
    assert "Failed to read inputs in the data plane" in log
    assert "read_grpc_client_inputs ended by the job server's hang-up" in log
    assert threading.excepthook is not cli.teardown_excepthook      # restored after the run


def test_the_progress_line_counts_read_clean_and_dead():
    assert progress.render({"read": 12000, "clean": 11000, "dead": 7}, 4.0) == \
        "read 12,000  clean 11,000  dead 7  3,000 records/s  4 s"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    with progress.ProgressLine(stream=terminal, every_s=0.02):
        counters.add(counters.READ, 500)
        counters.add(counters.DEAD, 2)
        time.sleep(0.2)
    assert "read 500  clean 0  dead 2" in terminal.getvalue()
    piped = io.StringIO()                             # not a terminal: nothing drawn
    with progress.ProgressLine(stream=piped, every_s=0.02):
        counters.add(counters.READ, 5)
        time.sleep(0.1)
    assert piped.getvalue() == ""


def test_a_run_counts_its_progress(feed, tmp_path):
    assert main(["--input", str(feed), "--output", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    counts = counters.snapshot()
    assert counts["read"] == summary["input_records"]
    assert counts["clean"] == summary["clean_records"]
    assert counts["dead"] == sum(summary["dead_letters"].values())


def test_exit_codes_are_documented():
    text = (REPO / "docs" / "running" / "direct.md").read_text()
    section = text[text.index("## Exit codes"):]
    for code in (cli.EXIT_OK, cli.EXIT_UNBALANCED, cli.EXIT_USAGE, cli.EXIT_BAD_RECORD_RATE,
                 cli.EXIT_BAD_INPUT, cli.EXIT_STOP_UNFINISHED):
        assert f"| {code} |" in section, code


def test_help_shows_our_options_first_in_groups_and_flags_as_flags(capsys):
    """--help: feedcheck's options in their groups (input, output, gap policy, streaming, alerts,
    runner; --runner and --streaming in the runner group), Beam's other options last; a boolean
    option reads as a bare flag."""
    from beam_pipeline.settings import feedcheck_option_names

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    headings = [line[:-1] for line in text.splitlines() if line and not line[0].isspace()
                and line.endswith(":")]
    assert headings == ["options", "input", "output", "gap policy", "streaming", "alerts",
                        "runner", "Beam options"]
    sections, current = {}, None
    for line in text.splitlines():
        if line[:-1] in headings and line.endswith(":"):
            current = line[:-1]
        elif line.startswith("  --") and current:
            sections.setdefault(current, []).append(line.split()[0].rstrip(","))
    ours = [f"--{name}" for name in feedcheck_option_names()]
    shown = [option for heading in headings[1:7] for option in sections.get(heading, [])]
    assert sorted(set(shown) - {"--runner", "--streaming"}) == sorted(ours)
    assert {"--runner", "--streaming"} <= set(sections["runner"])
    assert sections["Beam options"] and not set(sections["Beam options"]) & set(ours)
    for flag in ("--overwrite", "--allow_empty", "--verbose", "--fail_on_read_error", "--report"):
        assert f"  {flag}  " in text or f"  {flag}\n" in text, flag
    assert "[OVERWRITE]" not in text and "[VERBOSE]" not in text
