"""A Kafka-sourced job on embedded Flink fails mid-run and is restored from its checkpoint: nothing
is lost, and readback's deduplicated outputs equal a run of the same feed without the fault.

Our graph (beam_pipeline.pipeline.build_pipeline) reads a real broker's topic (scripts/kafka.sh)
through KafkaIO's UnboundedSource, on the embedded MiniCluster with RocksDB checkpoints on disk and
a restart strategy. The fault is test_flink_recovery's FailOnce on the sequencer's clean output: it
fires once, on the second part of the feed, after a checkpoint that covers the first part, once a
clean file was written after that checkpoint (output a restored job writes again). Flink restarts
the job from the checkpoint: the source goes back to the checkpoint's offsets (which are the only
ones committed to the consumer group: offsets are committed when a checkpoint completes), the
sequencer's state goes back with it, and what was written after the checkpoint is written again.

The reference is a DirectRunner batch run of the same records: clean rows, gaps, corrupt periods
and recovery requests, read once per id, equal it; dead letters equal it but for their source (a
file line there, topic/partition/offset here); summary.json's counts equal it as written. After
the run the consumer group's committed offsets reach the topic's end: every record was read.
"""
from __future__ import annotations

import json
import time

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import beam_pipeline.pipeline as pipeline_module
from beam_pipeline import publish, readback
from beam_pipeline.cli import main as cli_main
from runners import flink
from tests.integration.test_flink_kafka import COMMON, COUNTS, FAULTS
from tests.integration.test_flink_recovery import (Job, FailOnce, _jar, flink_log,  # noqa: F401
                                                   latest_checkpoint, rest, sequence_with_fault,
                                                   wait_for)
from tests.tooling.synthetic import generate, write_lines
from transforms.read_kafka import mark_partitions

CHECKPOINT_MS = 3000     # a checkpoint soon after the first part; between them, a flushed file
FOLDERS = ("clean", "gaps", "corrupt_periods", "recovery_requests")
PACE_S = 0.1             # FailOnce's pause per clean table once armed

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def _rows(output_dir, name: str, dedupe: bool, drop=("ingest_time",)) -> list:
    table = (readback.read if dedupe else readback.read_raw)(str(output_dir), name)
    rows = [{k: v for k, v in row.items() if k not in drop} for row in table.to_pylist()]
    return sorted(rows, key=lambda row: repr(sorted(row.items())))


def _summary(output_dir) -> dict:
    try:
        return json.loads((output_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _drained(out, reference) -> bool:
    """Every record accounted for, and every row the reference has is on disk (once per id)."""
    summary = _summary(out)
    if {k: summary.get(k) for k in COUNTS} != {k: _summary(reference).get(k) for k in COUNTS}:
        return False
    return all(_rows(out, name, True) == _rows(reference, name, True) for name in FOLDERS)


def test_kafka_job_restored_from_a_checkpoint_loses_nothing(kafka_broker, tmp_path, flink_log):  # noqa: F811
    topic, group = kafka_broker.unique_topic("restore"), kafka_broker.unique_topic("group")
    lines, _ = generate(480, seed=5, faults=FAULTS, bad_records=["bad_json", "mistyped_field"],
                        ignored=3, spacing=40, start_ms=int(time.time() * 1000), step_ms=250)
    write_lines(str(tmp_path / "feed.jsonl"), lines)
    reference = tmp_path / "reference"
    assert cli_main(["--input", str(tmp_path / "feed.jsonl"), "--output", str(reference),
                     *COMMON]) == 0

    # Part 1 is a backlog; part 2 is published once a checkpoint covers part 1. The cut is
    # test_flink_kafka's, between faults: a medium gap cut from its snapshot by the seconds
    # between the parts would time out here and resync in batch (seen with a cut at the half).
    cut = len(lines) * 3 // 5
    for index, part in enumerate((lines[:cut], lines[cut:])):
        write_lines(str(tmp_path / f"part{index}" / "feed.jsonl"), part)

    def send(index):
        # Part 2 one record a message: many small clean tables reach FailOnce one after another.
        publish.publish(topic, [str(tmp_path / f"part{index}" / "feed.jsonl")],
                        records_per_message=20 if index == 0 else 1, progress=False,
                        kafka_bootstrap_servers=kafka_broker.bootstrap)

    send(0)
    mark_partitions(kafka_broker.bootstrap, topic)      # as the command does before a job starts

    out, checkpoints, armed, marker = (tmp_path / "out", tmp_path / "checkpoints",
                                       tmp_path / "armed", tmp_path / "fault.json")
    checkpoints.mkdir()
    argv = flink.apply_profile([
        "--runner=FlinkRunner", "--streaming", f"--kafka_bootstrap_servers={kafka_broker.bootstrap}",
        f"--kafka_topic={topic}", f"--kafka_group_id={group}", f"--output={out}",
        "--output_flush_seconds=1", *COMMON, f"--checkpointing_interval={CHECKPOINT_MS}",
        "--state_backend=rocksdb", f"--state_backend_storage_path=file://{checkpoints}",
        "--number_of_execution_retries=2", "--execution_retry_delay=1000"])
    # FailOnce arms itself when its "input glob" matches min_files files: here, the file `armed`,
    # created once part 1 is read and a checkpoint covers it. Armed, it holds each clean table
    # PACE_S, so that part 2's clean tables pass over seconds and one is flushed before it fires.
    fault = FailOnce(str(marker), str(checkpoints), str(out / "clean"), str(armed), 1, PACE_S)
    start = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline_module, "SequenceFeeds", sequence_with_fault(fault))
        job = Job(PipelineOptions(argv, save_main_session=False), flink_log)
        try:
            job_id = job.job_id()
            wait_for(lambda: _summary(out).get("input_records") == cut, 180,
                     "part 1 (the backlog) to be read")
            read_at = time.time()
            wait_for(lambda: (latest_checkpoint(str(checkpoints)) or (0, 0))[1] > read_at + 1, 60,
                     "a checkpoint after part 1")
            armed.touch()
            send(1)
            wait_for(lambda: _drained(out, reference), 120, "every output to equal the reference")
            end = kafka_broker.end_offsets(topic)
            wait_for(lambda: kafka_broker.committed(group, topic) == end, 60,
                     f"the group's committed offsets to reach the end {end}")
            history = rest(job.rest_base(), f"/jobs/{job_id}/exceptions")["exceptionHistory"]
            restored = job.checkpoints(job_id)["latest"]["restored"]
        finally:
            job.stop()
    fired = json.loads(marker.read_text()) if marker.exists() else None
    print(f"\nkafka on flink with a fault: {time.monotonic() - start:.1f} s; fault: {fired}; "
          f"restored: {restored}")

    assert fired, "the fault never fired"
    entries = history["entries"]
    assert len(entries) == 1 and "InjectedFault: injected fault" in entries[0]["stacktrace"]
    assert restored and not restored["is_savepoint"] and restored["id"] >= fired["checkpoint"]
    assert flink_log.matching(r"Restoring job \S+ from Checkpoint", job.since)

    summary, expected = _summary(out), _summary(reference)
    assert {k: summary.get(k) for k in COUNTS} == {k: expected.get(k) for k in COUNTS}
    assert summary["balanced"]
    for name in FOLDERS:
        assert _rows(out, name, True) == _rows(reference, name, True), name
    assert len(_rows(out, "clean", True)) == expected["clean_records"]
    not_source = ("ingest_time", "source", "message")
    assert (_rows(out, "dead_letter", True, not_source)
            == _rows(reference, "dead_letter", True, not_source))
    report = readback.report(str(out))
    assert all(report[name]["conflicting"] == 0 for name in FOLDERS), report
    written_twice = len(_rows(out, "clean", False)) - len(_rows(out, "clean", True))
    print(f"clean rows written twice after the restore: {written_twice}")
