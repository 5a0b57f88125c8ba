"""Dataflow without a Google Cloud account: the Flex Template files, gcloud's own check of the
metadata, Dataflow dry runs of both graphs and the package Dataflow workers install.

Everything runs offline: gcloud gets a throwaway config dir, no prompts and no GCE metadata probe;
the dry runs use syntactically valid project, bucket and subscription names, because Beam rejects
1-letter ones (and an invalid temp bucket would make Beam look up a default bucket over the network).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.cli import UsageError, validate
from beam_pipeline.options import INPUT_FORMATS, FeedCheckOptions
from beam_pipeline.pipeline import build_pipeline
from runners.profiles import apply_profile

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "templates"
METADATA = json.loads((TEMPLATES / "metadata.json").read_text())
PARAMETERS = {p["name"]: p for p in METADATA["parameters"]}

DATAFLOW = ["--runner", "DataflowRunner", "--dry_run=True", "--project", "feedcheck-dry",
            "--region", "us-central1", "--temp_location", "gs://feedcheck-dry/tmp"]
BATCH = ["--input", "gs://feedcheck-dry/in/*.jsonl.gz", "--output", "gs://feedcheck-dry/out"]
STREAMING = ["--streaming", "--input_subscription", "projects/feedcheck-dry/subscriptions/deltas",
             "--output", "gs://feedcheck-dry/out"]


# Kafka is read on Flink only (cli.validate rejects it on Dataflow), and the template publishes
# recovery requests to Pub/Sub (--recovery_topic): the Kafka options are not template parameters.
FLINK_ONLY = {"kafka_bootstrap_servers", "kafka_topic", "kafka_group_id", "kafka_expansion_service",
              "recovery_kafka_topic"}


def feedcheck_actions() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    FeedCheckOptions._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions if a.dest != "help" and a.dest not in FLINK_ONLY}


def run(cmd: list[str], timeout: float = 120, **env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def gcloud_env(config_dir: Path) -> dict[str, str]:
    return {"CLOUDSDK_CONFIG": str(config_dir), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
            "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
            "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true"}


# (a) metadata.json describes the pipeline's options ------------------------------------------

def test_every_parameter_is_a_pipeline_option():
    known = set(PipelineOptions([]).get_all_options())  # Beam's options and FeedCheckOptions
    assert set(PARAMETERS) <= known, set(PARAMETERS) - known
    assert len(PARAMETERS) == len(METADATA["parameters"]), "a parameter is listed twice"


def test_every_feedcheck_option_is_a_parameter():
    missing = set(feedcheck_actions()) - set(PARAMETERS)
    assert not missing, f"add to templates/metadata.json: {sorted(missing)}"


def required_by_cli() -> set[str]:
    """The options cli.validate demands, found by asking it: always, then per mode."""
    required = set()
    for argv in ([], ["--output=gs://feedcheck-dry/out"],
                 ["--output=gs://feedcheck-dry/out", "--streaming"]):
        with pytest.raises(UsageError) as error:
            validate(PipelineOptions(argv))
        required.add(re.findall(r"--(\w+)", str(error.value))[-1])  # the flag it asks for
    return required


def test_required_options_are_parameters():
    required = required_by_cli()
    assert required == {"output", "input", "input_subscription"}
    assert required <= set(PARAMETERS)
    # output is needed in both modes; input (batch) and input_subscription (streaming) each in one
    # mode, so the one template marks them optional and cli.validate asks for the right one.
    assert [n for n, p in PARAMETERS.items() if not p["isOptional"]] == ["output"]
    assert all(isinstance(p["isOptional"], bool) for p in PARAMETERS.values())


def test_labels_and_help_texts():
    actions = feedcheck_actions()
    for name, parameter in PARAMETERS.items():
        assert parameter["label"].strip(), name
        assert parameter["helpText"].strip(), name
        if name in actions:  # the option's own help text first, a template note may follow
            assert parameter["helpText"].startswith(actions[name].help), name


def test_regexes_accept_the_defaults_and_only_the_choices():
    for name, action in feedcheck_actions().items():
        regexes = [re.compile(r) for r in PARAMETERS[name]["regexes"]]
        assert regexes, name
        if action.default is not None:
            assert all(r.fullmatch(str(action.default)) for r in regexes), name
    choice = re.compile(PARAMETERS["input_format"]["regexes"][0])
    assert all(choice.fullmatch(fmt) for fmt in INPUT_FORMATS)
    assert not choice.fullmatch("csv")


@pytest.mark.parametrize("name, good, bad", [
    ("input", ["gs://feedcheck-dry/in/*.jsonl.gz", "gs://b-1/a/*.gz,gs://b-2/c/x.jsonl"],
     ["/local/file.gz", "gs://b/in/*.gz", "gs://feedcheck-dry"]),
    ("output", ["gs://feedcheck-dry/out", "gs://feedcheck-dry"], ["out/", "s3://bucket/out"]),
    ("input_subscription", ["projects/feedcheck-dry/subscriptions/deltas"],
     ["projects/p/subscriptions/s", "projects/feedcheck-dry/topics/deltas", "deltas"]),
    ("recovery_topic", ["projects/feedcheck-dry/topics/recovery"],
     ["projects/feedcheck-dry/subscriptions/recovery", "recovery"]),
    ("small_gap_max", ["0", "10"], ["-1", "1.5", "ten"]),
    ("max_record_bytes", ["1", "1048576"], ["0", "1e6"]),
    ("recovery_timeout", ["60", "0.5"], ["-1", "1e3", ""]),
    ("max_bad_record_rate", ["0", "0.5", "1"], ["1.5", "-0.1", "50%"]),
])
def test_regexes_on_examples(name, good, bad):
    regex = re.compile(PARAMETERS[name]["regexes"][0])
    assert [v for v in good if not regex.fullmatch(v)] == []
    assert [v for v in bad if regex.fullmatch(v)] == []


# (b) gcloud validates the metadata offline ---------------------------------------------------

def flex_template_build(metadata: Path, config_dir: Path) -> subprocess.CompletedProcess:
    return run(["gcloud", "dataflow", "flex-template", "build", "gs://b/t.json",
                "--image=gcr.io/p/i", "--sdk-language=PYTHON", f"--metadata-file={metadata}",
                "--print-only"], timeout=60, **gcloud_env(config_dir))


def test_gcloud_builds_the_template_spec(tmp_path):
    result = flex_template_build(TEMPLATES / "metadata.json", tmp_path)
    assert result.returncode == 0, result.stderr
    # --print-only prints the spec as a YAML block scalar: "|-", then the JSON indented.
    assert result.stdout.startswith("|-\n")
    spec = json.loads(result.stdout[3:])
    assert spec["image"] == "gcr.io/p/i"
    assert spec["sdkInfo"] == {"language": "PYTHON"}
    assert spec["metadata"]["name"] == METADATA["name"]
    assert spec["metadata"]["parameters"] == METADATA["parameters"]  # nothing dropped or changed


def test_gcloud_rejects_an_empty_help_text(tmp_path):
    broken = json.loads(json.dumps(METADATA))
    broken["parameters"][0]["helpText"] = ""
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(broken))
    result = flex_template_build(path, tmp_path / "gcloud")
    assert result.returncode != 0
    assert "helpText field is empty" in result.stderr


def test_build_script_template_command_passes_gcloud(tmp_path):
    env = {"PRINT": "1", "PROJECT": "feedcheck-dry", "REGION": "us-central1",
           "BUCKET": "feedcheck-dry"}
    printed = {}
    for command in (["image"], ["template"], ["batch", "gs://feedcheck-dry/in/*.gz", "gs://o/x"],
                    ["streaming", "projects/feedcheck-dry/subscriptions/deltas", "gs://o/x"]):
        result = run(["bash", str(TEMPLATES / "build_and_run.sh"), *command], **env)
        assert result.returncode == 0, result.stderr
        printed[command[0]] = shlex.split(result.stdout)
    assert "--config=templates/cloudbuild.yaml" in printed["image"]
    assert "--parameters=input_subscription=projects/feedcheck-dry/subscriptions/deltas," \
           "output=gs://o/x" in printed["streaming"]
    build = printed["template"]
    assert build[:4] == ["gcloud", "dataflow", "flex-template", "build"]
    assert "--metadata-file=templates/metadata.json" in build
    result = run([*build, "--print-only"], timeout=60, **gcloud_env(tmp_path))
    assert result.returncode == 0, result.stderr


# (c) Dataflow dry runs: the job graph is built, nothing is submitted or staged ----------------

@pytest.mark.parametrize("mode", ["batch", "streaming"])
def test_dataflow_dry_run_cli(mode):
    result = run([sys.executable, "-m", "beam_pipeline", *DATAFLOW,
                  *(BATCH if mode == "batch" else STREAMING)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dry run: the job graph was built and not submitted" in result.stdout
    for sign_of_network in ("googleapis.com", "credentials", "Retry with exponential backoff"):
        assert sign_of_network not in result.stderr


def test_dataflow_dry_run_through_the_template_launcher():
    """templates/main.py as the launcher calls it: --name=value parameters, no --runner, no
    --streaming; a subscription makes it a streaming job."""
    result = run([sys.executable, str(TEMPLATES / "main.py"), "--dry_run=True",
                  "--project=feedcheck-dry", "--region=us-central1",
                  "--temp_location=gs://feedcheck-dry/tmp",
                  "--staging_location=gs://feedcheck-dry/staging",
                  "--input_subscription=projects/feedcheck-dry/subscriptions/deltas",
                  "--output=gs://feedcheck-dry/out", "--recovery_topic=projects/feedcheck-dry/"
                  "topics/recovery", "--stall_timeout=60"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dry run" in result.stdout


def test_dry_run_with_an_invalid_bucket_fails_at_once():
    """gs://b is not a valid bucket name: Beam would spend minutes looking up a default bucket."""
    started = time.monotonic()
    result = run([sys.executable, "-m", "beam_pipeline", "--runner", "DataflowRunner",
                  "--dry_run=True", "--project", "feedcheck-dry", "--region", "us-central1",
                  "--temp_location", "gs://b/tmp", *BATCH], timeout=60)
    assert result.returncode == 2
    assert "needs --temp_location gs://<bucket>/<path> with a valid bucket name" in result.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("mode", ["batch", "streaming"])
def test_dataflow_dry_run_job_graph(mode):
    """Built as cli.main builds it, then the graph Dataflow would receive is inspected."""
    options = PipelineOptions(
        apply_profile([*DATAFLOW, *(BATCH if mode == "batch" else STREAMING)]),
        save_main_session=False)
    validate(options)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    result = pipeline.run()

    proto = pipeline.runner.proto_pipeline
    urns = {t.spec.urn for t in proto.components.transforms.values()}
    assert ("beam:transform:pubsub_read:v1" in urns) == (mode == "streaming")
    assert "beam:transform:group_by_key:v1" in urns
    names = " ".join(t.unique_name for t in proto.components.transforms.values())
    clean_sink = "Write/Commit_clean" if mode == "batch" else "Write/Write_clean"
    assert "Sequence" in names and clean_sink in names
    # --setup_file (runners/dataflow.py): our sdist is staged for the workers as workflow.tar.gz
    (environment,) = proto.components.environments.values()
    assert environment.urn == "beam:env:docker:v1"
    assert any(b"workflow.tar.gz" in d.role_payload for d in environment.dependencies)
    assert result.job.proto.type.name == f"JOB_TYPE_{mode.upper()}"


# (d) the image: env vars name files that the Dockerfile copies from the repository -------------

def dockerfile_env_and_copies():
    workdir, env, copies = "/", {}, []
    for line in (TEMPLATES / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "WORKDIR":
            workdir = words[1]
        elif words[0] == "ENV":
            key, value = words[1].split("=", 1)
            env[key] = value
        elif words[0] == "COPY":
            *sources, dest = words[1:]
            dest = os.path.normpath(os.path.join(workdir, dest))
            for source in sources:
                into_dir = len(sources) > 1 or words[-1].endswith("/")
                copies.append((source, f"{dest}/{Path(source).name}" if into_dir else dest))
    return env, copies


def test_dockerfile_env_vars_point_to_repository_files():
    env, copies = dockerfile_env_and_copies()
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == "/template/templates/main.py"
    assert env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"] == "/template/pyproject.toml"
    for key, path in env.items():
        if not key.startswith("FLEX_TEMPLATE_PYTHON_") or not key.endswith("_FILE"):
            continue
        sources = [REPO / source / os.path.relpath(path, target) for source, target in copies
                   if path == target or path.startswith(target + "/")]
        assert sources, f"{key}={path}: no COPY puts a file there"
        assert sources[-1].resolve().is_file(), f"{key}: {sources[-1]} is not in the repository"


def test_launcher_arguments():
    spec = importlib.util.spec_from_file_location("template_main", TEMPLATES / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    template_argv = module.template_argv
    assert template_argv(["--input=gs://x/y", "--output=gs://x/o"]) == [
        "--input=gs://x/y", "--output=gs://x/o", "--runner=DataflowRunner"]
    assert template_argv(["--runner=DataflowRunner", "--input_subscription=projects/a/"
                          "subscriptions/b"])[-1] == "--streaming"
    assert "--streaming" not in template_argv(["--input=gs://x/y", "--output=gs://x/o"])


# The package Dataflow workers install --------------------------------------------------------

def test_sdist_installs_with_the_dead_letter_schema(tmp_path):
    built = run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--outdir",
                 str(tmp_path / "dist"), str(REPO)])
    assert built.returncode == 0, built.stderr
    (sdist,) = (tmp_path / "dist").glob("feedcheck-*.tar.gz")
    installed = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                     "--no-build-isolation", "--target", str(tmp_path / "site"), str(sdist)])
    assert installed.returncode == 0, installed.stderr
    check = subprocess.run(
        [sys.executable, "-c", "import transforms.sinks as s; print(s.__file__); "
         "print(s.DEAD_LETTER_SCHEMA['name'])"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert check.returncode == 0, check.stderr
    module, schema = check.stdout.split()
    assert module.startswith(str(tmp_path / "site")) and schema == "feedcheck.DeadLetter"
