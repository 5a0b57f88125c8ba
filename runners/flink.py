"""Flink runner profile.

Beam's Python ``FlinkRunner`` starts a Java job server (``java -jar <jar> --flink-master ...``).
Maven Central, as reached from our machines, serves no ``beam-runners-flink-*-job-server`` jar,
so ``scripts/build_flink_job_server.sh`` assembles one from ``runners/flink_job_server/pom.xml``
into the cache dir (``$FEEDCHECK_CACHE``, default ``~/.cache/feedcheck``). The only Flink runner
on Maven Central here is Beam Java 2.70.0 for Flink 1.19, so that is what the jar contains; the
Python SDK stays at 2.75.0 (``tests/test_flink_smoke.py`` proves the pair works).

Usage::

    from runners import flink
    argv = flink.apply_profile(["--runner=FlinkRunner", *user_args])
    with beam.Pipeline(options=PipelineOptions(argv)) as p: ...

``apply_profile`` fills in ``--flink_job_server_jar``, ``--flink_version``, ``--flink_master=[local]``
(an embedded Flink MiniCluster inside the job server), ``--environment_type=LOOPBACK`` (Python
workers run in the submitting process), ``--parallelism=2`` and ``--finish_bundle_before_checkpointing``
(see below), and for a Kafka source ``--checkpointing_interval`` (KAFKA_CHECKPOINTING_INTERVAL_MS);
a flag the user gave always wins. For a standalone cluster
(``scripts/flink_cluster.sh start``) pass ``--flink_master=localhost:8081``.

Why ``--finish_bundle_before_checkpointing``: without it, a streaming job with checkpointing
finishes open bundles inside the checkpoint and buffers their output, but still advances the
output watermark; the buffered elements then arrive late behind a shuffle and GroupByKey or a
stateful DoFn silently drops them (seen here: a bounded input with ``--checkpointing_interval``
produced no output at all after a GroupByKey). Finishing bundles before the barrier avoids the
buffering. It is a boolean job-server option, so it is passed bare (``--flag=true`` is rejected).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from runners.flags import flag_value

#: Flink minor version of the job server (and of the cluster in scripts/flink_cluster.sh).
FLINK_VERSION = "1.19"
#: Beam Python SDK version this project pins; the cached jar is named after it.
BEAM_VERSION = "2.75.0"
#: Beam Java version inside the job-server jar (newest Flink runner Maven Central serves here).
BEAM_JAVA_VERSION = "2.70.0"

#: Checkpoint interval (ms) of a job that reads Kafka, unless --checkpointing_interval is given.
KAFKA_CHECKPOINTING_INTERVAL_MS = 10000
#: The pipeline experiment that makes KafkaIO read through its UnboundedSource (offsets committed
#: when a Flink checkpoint completes, in the checkpoint mark's finalize). Its splittable-DoFn
#: reader with commit_offset_in_finalize failed on the Flink runner 2.70 (job restarts:
#: "State backend must be locked when retrieving the current key", in the stable-input buffering
#: of the commit step) and then read nothing new (seen 2026-12-07).
KAFKA_READ_EXPERIMENT = "use_deprecated_read"

_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = _ROOT / "scripts" / "build_flink_job_server.sh"
POM = _ROOT / "runners" / "flink_job_server" / "pom.xml"


# Options of Beam Java's FlinkPipelineOptions that Beam Python does not declare. The job server
# declares them itself, but only once it is running; declared here too, Python knows them from the
# start, so a mistyped option is still a usage error (cli.check_command_line) and Beam does not warn
# "Discarding unparseable args" for the flag this profile adds. Values stay strings (the job server
# converts them, as it did when they were passed through undeclared); booleans are bare flags.
FLINK_JAVA_OPTIONS = (
    "checkpointing_interval", "checkpointing_mode", "checkpoint_timeout_millis",
    "min_pause_between_checkpoints", "tolerable_checkpoint_failure_number",
    "num_concurrent_checkpoints", "number_of_execution_retries", "execution_retry_delay",
    "state_backend", "state_backend_storage_path", "state_backend_factory", "savepoint_path",
    "shutdown_sources_after_idle_ms", "max_bundle_size", "max_bundle_time_mills",
    "latency_tracking_interval", "auto_watermark_interval", "execution_mode_for_batch",
    "flink_conf_dir", "job_check_interval_in_secs", "force_slot_sharing_group")
FLINK_JAVA_FLAGS = (
    "finish_bundle_before_checkpointing", "allow_non_restored_state", "object_reuse",
    "externalized_checkpoints_enabled", "retain_externalized_checkpoints_on_cancellation",
    "use_data_stream_for_batch", "report_checkpoint_duration", "enable_stable_input_drain")


class FlinkJavaOptions(PipelineOptions):
    """Flink runner options the Java job server reads (FlinkPipelineOptions); see FLINK_JAVA_OPTIONS."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("Flink (read by the Java job server)")
        for name in FLINK_JAVA_OPTIONS:
            group.add_argument(f"--{name}", default=None,
                               help="Beam Java FlinkPipelineOptions; see docs/flink.md.")
        for name in FLINK_JAVA_FLAGS:
            group.add_argument(f"--{name}", action="store_true", default=None,
                               help="Beam Java FlinkPipelineOptions (a bare flag); see docs/flink.md.")


def cache_dir() -> Path:
    """The project's cache dir (``$FEEDCHECK_CACHE`` or ``~/.cache/feedcheck``)."""
    return Path(os.environ.get("FEEDCHECK_CACHE") or Path.home() / ".cache" / "feedcheck")


def cached_jar(subdir: str, stem: str, pom: Path, script: Path, build: bool = True) -> str:
    """Path of a jar that `script` (scripts/build_shaded_jar.sh) builds from `pom` into the cache,
    named <stem>-<first 8 hex of sha256(pom)>.jar (an edited pom is a new jar); builds it first
    (needs mvn, takes minutes) if missing."""
    import hashlib

    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:8]
    jar = cache_dir() / subdir / f"{stem}-{digest}.jar"
    if not jar.is_file() and build:
        subprocess.run(["bash", str(script)], check=True, stdout=subprocess.DEVNULL)
    if not jar.is_file():
        raise FileNotFoundError(f"jar missing: {jar} (run {script})")
    return str(jar)


def job_server_jar(build: bool = True) -> str:
    """Path of the cached job-server jar (scripts/build_flink_job_server.sh)."""
    return cached_jar("flink", f"beam-flink-job-server-{BEAM_VERSION}", POM, BUILD_SCRIPT, build)


def is_flink(argv: list[str]) -> bool:
    """True when argv selects Beam's FlinkRunner (``FlinkRunner``, ``flink``, or a dotted path)."""
    runner = flag_value(argv, "runner")
    if not runner:
        return False
    name = runner.rsplit(".", 1)[-1].lower()
    return name in ("flink", "flinkrunner")


def stop_job_server_jvm_first() -> None:
    """Makes Beam stop the job-server JVM before it deletes its temp dir.

    Beam's SubprocessJobServer.stop deletes the artifact folder first and stops the JVM after; the
    JVM deletes files in that folder as a job ends, so the deletion can fail (FileNotFoundError,
    seen at exit after a cancelled streaming job), and then the JVM (with its embedded Flink) was
    left running after the Python process ended. Idempotent."""
    import shutil

    from apache_beam.runners.portability import job_server

    if getattr(job_server.SubprocessJobServer.stop, "_feedcheck", False):
        return

    def stop(self):
        try:
            return self._server.stop() if self._server is not None else None
        finally:
            if self._local_temp_root:
                shutil.rmtree(self._local_temp_root, ignore_errors=True)
                self._local_temp_root = None

    stop._feedcheck = True
    job_server.SubprocessJobServer.stop = stop


def apply_profile(argv: list[str]) -> list[str]:
    """Return argv plus the Flink defaults the user did not give (argv is left unchanged).

    Does nothing unless the runner is FlinkRunner. Building the jar happens here only when
    ``--flink_job_server_jar`` is not given and the cached jar is missing. Also makes Beam stop
    the job-server JVM reliably (stop_job_server_jvm_first).
    """
    argv = list(argv)
    if not is_flink(argv):
        return argv
    stop_job_server_jvm_first()
    defaults = {
        "flink_version": FLINK_VERSION,
        "flink_master": "[local]",
        "environment_type": "LOOPBACK",
        "parallelism": "2",
    }
    for name, value in defaults.items():
        if flag_value(argv, name) is None:
            argv.append(f"--{name}={value}")
    if flag_value(argv, "kafka_topic") and flag_value(argv, "checkpointing_interval") is None:
        # Kafka offsets are committed at checkpoints only.
        argv.append(f"--checkpointing_interval={KAFKA_CHECKPOINTING_INTERVAL_MS}")
    if flag_value(argv, "kafka_topic"):
        argv.append(f"--experiments={KAFKA_READ_EXPERIMENT}")
    if flag_value(argv, "finish_bundle_before_checkpointing") is None:
        argv.append("--finish_bundle_before_checkpointing")
    if flag_value(argv, "flink_job_server_jar") is None:
        argv.append(f"--flink_job_server_jar={job_server_jar()}")
    return argv


def cluster_rest_base(master: str | None) -> str | None:
    """The REST address of a standalone cluster named by --flink_master (host:port), or None for
    the embedded [local] one."""
    if not master or master.startswith("["):
        return None
    return master if "://" in master else f"http://{master}"


def _rest(base: str, path: str, body: dict | None = None):
    import json
    import urllib.request

    request = urllib.request.Request(
        base + path, method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text.strip() else {}


def running_job(base: str, job_name: str) -> str | None:
    """The Flink id of the running job named `job_name` on the cluster, if there is one."""
    for job in _rest(base, "/jobs/overview")["jobs"]:
        if job["name"] == job_name and job["state"] in ("RUNNING", "CREATED", "RESTARTING"):
            return job["jid"]
    return None


def stop_with_savepoint(base: str, job_name: str, target: str, timeout_s: float,
                        cancel: bool = False) -> str:
    """Flink's stop-with-savepoint (REST POST /jobs/<id>/stop, no drain: state and timers are
    kept, so a job resumed from it continues where this one stopped). Returns the savepoint's
    location; raises RuntimeError when Flink could not take it in `timeout_s`.

    `cancel`: take the savepoint, then cancel the job (POST /jobs/<id>/savepoints, cancel-job),
    for a job that reads through Beam's UnboundedSourceWrapper (Kafka): on a stop, that source
    ends its run with a final watermark at the end of time, before the savepoint is taken, so
    every end-of-window timer fired and every key's state was cleared in the savepoint (seen: the
    resumed job's summary.json counted only what it read itself)."""
    import time

    deadline = time.monotonic() + timeout_s
    jid = None
    while jid is None:
        jid = running_job(base, job_name)
        if jid is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no running Flink job named {job_name} at {base}")
            time.sleep(0.5)
    if cancel:
        trigger = _rest(base, f"/jobs/{jid}/savepoints", {"target-directory": target,
                                                          "cancel-job": True})
    else:
        trigger = _rest(base, f"/jobs/{jid}/stop", {"targetDirectory": target, "drain": False})
    while time.monotonic() < deadline:
        status = _rest(base, f"/jobs/{jid}/savepoints/{trigger['request-id']}")
        if status["status"]["id"] == "COMPLETED":
            operation = status.get("operation") or {}
            if "location" in operation:
                return operation["location"]
            raise RuntimeError(f"the savepoint failed: {operation.get('failure-cause')}")
        time.sleep(0.5)
    raise RuntimeError(f"Flink did not finish the savepoint within {timeout_s:g} s")
