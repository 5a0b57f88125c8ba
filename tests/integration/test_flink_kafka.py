"""Kafka on Flink, end to end on a real broker (scripts/kafka.sh) and the embedded Flink cluster:
`python -m beam_pipeline --streaming --runner FlinkRunner --kafka_bootstrap_servers ...` as a user
runs it, fed by `python -m beam_pipeline.publish --kafka_bootstrap_servers ...`.

A faulted feed (gaps of every class, a reorder, a duplicate, bad records) is split in two: the first
part is on the topic before the job starts (a backlog), the second is published while the job runs.
The outputs equal a batch run's on the whole feed (gap rows, corrupt periods, summary counts), with
no late_event: the event time is the records' CreateTime and the watermark follows it. After the
stop (SIGTERM) no job-server JVM is left running.
"""
import gzip
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from beam_pipeline import publish, readback
from beam_pipeline.cli import main
from beam_pipeline.core.reasons import Reason
from tests.conftest import REPO
from tests.integration.test_flink_cluster import (_cancel_all, cluster,  # noqa: F401 (fixture)
                                                  wait_until_idle)
from tests.tooling.synthetic import generate, write_lines

FAULTS = [("small_gap", 0), ("medium_gap_resynced", 0), ("large_gap", 0), ("reorder", 0),
          ("medium_gap_timeout", 1), ("duplicate", 1), ("medium_gap_resynced", 2)]
COMMON = ["--recovery_timeout", "1", "--error_window", "5"]
COUNTS = ("input_records", "clean_records", "dead_letters", "duplicates", "superseded", "ignored",
          "gaps", "corrupt_periods", "symbols", "balanced")


def _gap_rows(out):
    return sorted((r["market"], r["symbol"], r["last_good_id"], r["next_first_id"], r["gap_size"],
                   r["gap_class"], r["action"], r["resolution"]) for r in out.parquet_rows("gaps"))


def _corrupt_periods(out):
    return sorted(tuple(sorted((k, str(v)) for k, v in r.items()))
                  for r in out.parquet_rows("corrupt_periods"))


def _summary(folder):
    try:
        with open(os.path.join(folder, "summary.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _wait_for(condition, timeout_s, what, job):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if job.poll() is not None:
            raise AssertionError(f"the job ended while waiting for {what}:\n{job.stdout.read()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _jvms_under(folder: str) -> list:
    """Processes whose command line names `folder` (the job server's artifact dir is under the
    job's TMPDIR)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "java" in cmdline and folder in cmdline:
                found.append(f"{pid}: {cmdline[:200]}")
    return found


def test_kafka_backlog_and_live_feed_on_flink_equal_batch(kafka_broker, tmp_path, outputs):
    """... and the job's recovery requests go back through Kafka (--recovery_kafka_topic): each
    recovery_requests/ row is on the topic as its JSON, keyed by its symbol."""
    topic, recovery = kafka_broker.unique_topic("feed"), kafka_broker.unique_topic("recovery")
    lines, expected = generate(480, seed=5, faults=FAULTS, bad_records=["bad_json", "mistyped_field"],
                               ignored=3, spacing=40, start_ms=int(time.time() * 1000), step_ms=250)
    write_lines(str(tmp_path / "feed.jsonl"), lines)
    assert main(["--input", str(tmp_path / "feed.jsonl"), "--output", str(tmp_path / "batch"),
                 *COMMON]) == 0
    batch = outputs(tmp_path / "batch")
    assert len(_gap_rows(batch)) == len(expected.gaps)

    cut = len(lines) * 3 // 5
    write_lines(str(tmp_path / "backlog" / "part1.jsonl"), lines[:cut])
    write_lines(str(tmp_path / "live" / "part2.jsonl"), lines[cut:])
    counts = publish.publish(topic, [str(tmp_path / "backlog" / "part1.jsonl")],
                             records_per_message=20, progress=False,
                             kafka_bootstrap_servers=kafka_broker.bootstrap)
    assert counts["records"] == cut

    out, job_tmp = tmp_path / "stream", tmp_path / "jobtmp"
    job_tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=REPO, TMPDIR=str(job_tmp))
    job = subprocess.Popen(
        [sys.executable, "-m", "beam_pipeline", "--streaming", "--runner", "FlinkRunner",
         "--kafka_bootstrap_servers", kafka_broker.bootstrap, "--kafka_topic", topic,
         "--recovery_kafka_topic", recovery,
         "--output", str(out), "--output_flush_seconds", "1", "--checkpointing_interval", "1000",
         *COMMON],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (_summary(out) or {}).get("input_records") == cut, 240,
                  "the backlog to be read", job)
        publish.publish(topic, [str(tmp_path / "live" / "part2.jsonl")], records_per_message=20,
                        progress=False, kafka_bootstrap_servers=kafka_broker.bootstrap)
        _wait_for(lambda: (_summary(out) or {}).get("input_records") == len(lines)
                  and _gap_rows(outputs(out)) == _gap_rows(batch)
                  and _corrupt_periods(outputs(out)) == _corrupt_periods(batch), 120,
                  "the whole feed in the outputs", job)
        # Offsets are committed when a checkpoint completes (no auto-commit): up to the end.
        end = kafka_broker.end_offsets(topic)
        _wait_for(lambda: kafka_broker.committed("feedcheck", topic) == end, 60,
                  f"the consumer group's offsets to reach {end}", job)
    finally:
        if job.poll() is None:
            job.send_signal(signal.SIGTERM)
        log, _ = job.communicate(timeout=120)
    assert job.returncode == 0, log[-3000:]

    stream = outputs(out)
    assert _gap_rows(stream) == _gap_rows(batch)
    assert _corrupt_periods(stream) == _corrupt_periods(batch)
    summary, batch_summary = stream.summary(), batch.summary()
    assert {k: summary.get(k) for k in COUNTS} == {k: batch_summary.get(k) for k in COUNTS}
    assert summary["balanced"]
    reasons = [row["reason"] for row in stream.dead_letters()]
    assert Reason.LATE_EVENT.value not in reasons
    assert sorted(reasons) == sorted(row["reason"] for row in batch.dead_letters())
    assert all(row["source"].startswith(f"kafka:{topic}/") for row in stream.dead_letters())
    assert not _jvms_under(str(job_tmp)), "a JVM of the job is still running"
    requests = sorted((r["symbol"], r["from_id"], r["reason"])
                      for r in stream.parquet_rows("recovery_requests"))
    assert requests
    published = [(record.key.decode(), json.loads(record.value))
                 for record in kafka_broker.consume_all(recovery, expected=len(requests),
                                                        timeout_s=10)]
    assert all(key == request["symbol"] for key, request in published)
    assert sorted((r["symbol"], r["from_id"], r["reason"]) for _, r in published) == requests


def test_publish_to_kafka_sets_headers_key_and_create_time(kafka_broker, tmp_path):
    topic = kafka_broker.unique_topic("publish")
    lines, _ = generate(60, seed=1, start_ms=int(time.time() * 1000))
    write_lines(str(tmp_path / "feed.jsonl.gz"), lines)
    before = int(time.time() * 1000)
    assert publish.main(["--kafka_bootstrap_servers", kafka_broker.bootstrap, "--kafka_topic",
                         topic, "--records_per_message", "25", "--quiet",
                         str(tmp_path / "feed.jsonl.gz")]) == 0
    after = int(time.time() * 1000)
    records = kafka_broker.consume_all(topic, expected=3)
    assert len(records) == 3                            # 60 records, 25 a message
    for record in records:
        headers = dict(record.headers)
        assert headers["content_encoding"] == b"gzip" and headers["format"] == b"envelope"
        assert record.key == b"feed.jsonl.gz"
        assert record.timestamp_type == 0 and before <= record.timestamp <= after   # CreateTime
    assert b"".join(gzip.decompress(r.value) for r in records).splitlines() == lines


def _stop(job, what):
    """SIGTERM, as a user stops the command; returns its output (it must exit 0)."""
    job.send_signal(signal.SIGTERM)
    try:
        log, _ = job.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        job.kill()
        log, _ = job.communicate()
    assert job.returncode == 0, f"{what} exited {job.returncode}:\n{log[-4000:]}"
    return log


def test_a_feed_in_one_partition_on_the_standalone_cluster_stops_and_resumes(kafka_broker, cluster,
                                                                             tmp_path, outputs):
    """The topic has 2 partitions and the whole feed is in one (one file name, one key). Without
    the watermark markers (transforms/read_kafka.py: mark_partitions) the empty partition held the
    job's watermark at the start of time: the summary counted every input record, but clean/,
    gaps/ and corrupt_periods/ got no file (seen on the standalone cluster, LOOPBACK).

    The job is stopped as users stop it, with SIGTERM: a savepoint, then a cancel (a Kafka job; a
    stop-with-savepoint cleared every key's state first); the command exits 0 and prints the
    command that resumes it (seen unreliable before: Beam's job-state stream broke with grpc
    UNAVAILABLE during the stop, the command exited at once with a traceback, and with LOOPBACK the
    savepoint failed). The printed command resumes from the savepoint; the rest of the feed,
    published then, is read from the savepoint's offsets: the rows of both runs, read once per id,
    and the summary's counts equal batch, and the resumed job stops the same way."""
    from kafka import KafkaConsumer, TopicPartition

    topic = kafka_broker.unique_topic("onepart")
    lines, _ = generate(480, seed=5, faults=FAULTS, bad_records=["bad_json"], ignored=3,
                        spacing=40, start_ms=int(time.time() * 1000), step_ms=250)
    write_lines(str(tmp_path / "feed.jsonl"), lines)
    assert main(["--input", str(tmp_path / "feed.jsonl"), "--output", str(tmp_path / "batch"),
                 *COMMON]) == 0
    batch = outputs(tmp_path / "batch")
    cut = len(lines) * 3 // 5           # between faults, as in the test above
    for index, part in enumerate((lines[:cut], lines[cut:])):
        write_lines(str(tmp_path / f"part{index}" / "feed.jsonl"), part)
    publish.publish(topic, [str(tmp_path / "part0" / "feed.jsonl")], records_per_message=20,
                    progress=False, kafka_bootstrap_servers=kafka_broker.bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    try:
        ends = consumer.end_offsets([TopicPartition(topic, p)
                                     for p in consumer.partitions_for_topic(topic)])
    finally:
        consumer.close()
    assert sorted(ends.values())[0] == 0 and len(ends) == 2, ends     # one partition is empty

    out, job_tmp = tmp_path / "stream", tmp_path / "jobtmp"
    job_tmp.mkdir()
    wait_until_idle()
    env = dict(os.environ, PYTHONPATH=REPO, TMPDIR=str(job_tmp))
    command = [sys.executable, "-m", "beam_pipeline", "--streaming", "--runner", "FlinkRunner",
               "--flink_master", cluster, "--kafka_bootstrap_servers", kafka_broker.bootstrap,
               "--kafka_topic", topic, "--output", str(out), "--output_flush_seconds", "1",
               "--checkpointing_interval", "1000", "--state_backend", "rocksdb",
               "--state_backend_storage_path", f"file://{tmp_path / 'checkpoints'}", *COMMON]
    run = lambda argv: subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,  # noqa: E731
                                        stderr=subprocess.STDOUT, text=True)
    job = run(command)
    try:
        _wait_for(lambda: (_summary(out) or {}).get("input_records") == cut
                  and (_summary(out) or {}).get("balanced"), 180, "part 1 in the outputs", job)
        log = _stop(job, "the first job")
        assert "stopping on SIGTERM: Flink takes a savepoint" in log
        resume = shlex.split(log.split("Resume this job from it with:\n", 1)[1].splitlines()[0])
        assert "--savepoint_path" in resume, resume

        wait_until_idle()
        publish.publish(topic, [str(tmp_path / "part1" / "feed.jsonl")], records_per_message=20,
                        progress=False, kafka_bootstrap_servers=kafka_broker.bootstrap)
        job = run(resume)
        _wait_for(lambda: (_summary(out) or {}).get("input_records") == len(lines)
                  and _gap_rows(outputs(out)) == _gap_rows(batch)
                  and _corrupt_periods(outputs(out)) == _corrupt_periods(batch)
                  and len(readback.read(str(out), "clean")) == batch.summary()["clean_records"],
                  180, "the whole feed in the outputs", job)
        _stop(job, "the resumed job")
    finally:
        if job.poll() is None:       # the test failed: leave nothing running
            job.kill()
            job.communicate()
            for jvm in _jvms_under(str(job_tmp)):
                os.kill(int(jvm.split(":", 1)[0]), signal.SIGKILL)
        _cancel_all()
    # Every row of both runs, read once per id, equals batch; so do the summary's counts, which
    # the resumed job carried on from the savepoint's state.
    stream = outputs(out)
    summary, batch_summary = stream.summary(), batch.summary()
    assert {k: summary.get(k) for k in COUNTS} == {k: batch_summary.get(k) for k in COUNTS}
    assert _gap_rows(stream) == _gap_rows(batch)
    assert _corrupt_periods(stream) == _corrupt_periods(batch)
    for name in ("clean", "recovery_requests"):
        assert len(readback.read(str(out), name)) == len(readback.read(str(tmp_path / "batch"), name))
    assert (sorted(row["reason"] for row in readback.read(str(out), "dead_letter").to_pylist())
            == sorted(row["reason"] for row in batch.dead_letters()))
    assert not _jvms_under(str(job_tmp)), "a JVM of the job is still running"
