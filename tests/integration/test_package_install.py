"""The package as a user installs it: `python -m build` makes an sdist and a wheel; the wheel,
pip-installed into a new virtual environment (its own site-packages, not the system's), gives the
`feedcheck`, `feedcheck-collect` and `feedcheck-publish` commands; `feedcheck` on the shared
captures writes the same outputs and summary as `python -m beam_pipeline` from the checkout; and
the installed copy stages itself for Dataflow's workers (runners/dataflow.py packs it into a wheel).

The new environment installs the runtime dependencies at the lock's versions (requirements.txt)
from pip's cache: about a minute and a half here, the one slow step (measured in the report).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.tooling.compare_runs import compare

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATAFLOW = [
    "--runner",
    "DataflowRunner",
    "--dry_run=True",
    "--project",
    "feedcheck-dry",
    "--region",
    "us-central1",
    "--temp_location",
    "gs://feedcheck-dry/tmp",
    "--input",
    "gs://feedcheck-dry/in/*.jsonl.gz",
    "--output",
    "gs://feedcheck-dry/out",
]


def run(cmd, cwd, timeout=600, env=None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environment, **(env or {})},
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run([sys.executable, "-m", "build", "--outdir", out, REPO], cwd=out)
    assert built.returncode == 0, built.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A new venv (no system site-packages) with the wheel pip-installed at the lock's versions."""
    folder = tmp_path_factory.mktemp("venv") / "env"
    base = getattr(sys, "_base_executable", sys.executable)
    made = run([base, "-m", "venv", folder], cwd=folder.parent)
    assert made.returncode == 0, made.stderr
    assert "include-system-site-packages = false" in (folder / "pyvenv.cfg").read_text()
    (wheel,) = dist.glob("feedcheck-*.whl")
    started = time.monotonic()
    installed = run(
        [
            folder / "bin" / "pip",
            "install",
            "-q",
            "--no-compile",
            "-r",
            REPO / "requirements.txt",
            wheel,
        ],
        cwd=folder.parent,
        timeout=1200,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    print(f"venv install: {time.monotonic() - started:.0f} s")
    return folder


def test_sdist_and_wheel_carry_the_product_and_not_the_tests(dist):
    (sdist,) = dist.glob("feedcheck-*.tar.gz")
    (wheel,) = dist.glob("feedcheck-*-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"beam_pipeline", "transforms", "runners", "feedcheck-0.1.0.dist-info"}, tops
    for data in (
        "beam_pipeline/schemas/dead_letter.avsc",
        "runners/flink_job_server/pom.xml",
        "feedcheck-0.1.0.dist-info/licenses/LICENSE",
        "feedcheck-0.1.0.dist-info/licenses/NOTICE",
    ):
        assert data in names
    metadata = zipfile.ZipFile(wheel).read("feedcheck-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Requires-Python: <3.12,>=3.11" in metadata
    assert "Requires-Dist: apache-beam[gcp]==2.75.0" in metadata


def test_the_installed_commands_answer_help(venv, tmp_path):
    commands = [
        (["feedcheck"], "usage: feedcheck"),
        (["feedcheck", "report"], "usage: feedcheck report"),
        (["feedcheck", "compact"], "usage: feedcheck compact"),
        (["feedcheck-collect"], "usage: feedcheck-collect"),
        (["feedcheck-publish"], "usage: feedcheck-publish"),
    ]
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    running = [
        subprocess.Popen(
            [venv / "bin" / command[0], *command[1:], "--help"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for command, _ in commands
    ]  # at once: imports
    for (command, words), process in zip(commands, running):
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, (command, stderr[-2000:])
        assert stdout.startswith(words), (command, stdout[:200])


def test_feedcheck_matches_python_m_beam_pipeline(venv, captures, tmp_path):
    where = run(
        [venv / "bin" / "python", "-c", "import beam_pipeline; print(beam_pipeline.__file__)"],
        cwd=tmp_path,
    )
    assert where.stdout.startswith(str(venv)), where.stdout  # the installed copy, not the repo
    installed = run(
        [venv / "bin" / "feedcheck", "--input", *captures, "--output", tmp_path / "installed"],
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    checkout = run(
        [
            sys.executable,
            "-m",
            "beam_pipeline",
            "--input",
            *captures,
            "--output",
            tmp_path / "checkout",
        ],
        cwd=REPO,
    )
    assert checkout.returncode == 0, checkout.stderr[-3000:]
    summaries = [
        json.loads((tmp_path / name / "summary.json").read_text())
        for name in ("installed", "checkout")
    ]
    # the same settings but each run's own --output folder
    settings = [summary.pop("settings") for summary in summaries]
    for run_settings in settings:
        run_settings["options"].pop("output")
    assert settings[0] == settings[1]
    assert summaries[0] == summaries[1]
    assert summaries[0]["balanced"] is True and summaries[0]["input_records"] > 0
    assert compare(str(tmp_path / "installed"), str(tmp_path / "checkout")) == []


STAGED = """
import json, sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from beam_pipeline.cli import validate
from beam_pipeline.pipeline import build_pipeline
from runners.profiles import apply_profile

argv = apply_profile(sys.argv[1:])
options = PipelineOptions(argv, save_main_session=False)
validate(options)
pipeline = beam.Pipeline(options=options)
build_pipeline(pipeline, options)
pipeline.run()
(environment,) = pipeline.runner.proto_pipeline.components.environments.values()
print(json.dumps({"argv": argv, "staged": [d.role_payload.decode("latin-1")
                                            for d in environment.dependencies]}))
"""


def test_an_installed_copy_stages_itself_for_dataflow(venv, tmp_path):
    """No pyproject.toml beside the installed packages: the installed distribution is packed into
    a wheel, staged with the job (a dry run stages locally), and that wheel installs and imports."""
    result = run([venv / "bin" / "python", "-c", STAGED, *DATAFLOW], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    (extra,) = [a.split("=", 1)[1] for a in found["argv"] if a.startswith("--extra_package=")]
    assert not any(a.startswith("--setup_file") for a in found["argv"])
    assert Path(extra).name == "feedcheck-0.1.0-py3-none-any.whl"
    assert any(Path(extra).name in payload for payload in found["staged"]), found["staged"]
    assert not Path(extra).exists(), "the packed wheel's temporary folder is removed at exit"

    # The same packing, kept this time, installs on its own (as a worker installs it).
    kept = run(
        [
            venv / "bin" / "python",
            "-c",
            "import sys, pathlib; from runners.dataflow import pack_installed; "
            "print(pack_installed('feedcheck', pathlib.Path(sys.argv[1])))",
            tmp_path,
        ],
        cwd=tmp_path,
    )
    assert kept.returncode == 0, kept.stderr
    wheel = Path(kept.stdout.strip())
    names = zipfile.ZipFile(wheel).namelist()
    assert "beam_pipeline/schemas/dead_letter.avsc" in names
    assert not [
        n for n in names if "__pycache__" in n or n.endswith(("INSTALLER", "direct_url.json"))
    ]
    target = tmp_path / "worker"
    installed = run(
        [venv / "bin" / "pip", "install", "-q", "--no-deps", "--target", target, wheel],
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    check = run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import transforms.sinks as s; "
            "print(s.__file__, s.DEAD_LETTER_SCHEMA['name'])",
            target,
        ],
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    module, schema = check.stdout.split()
    assert module.startswith(str(target)) and schema == "feedcheck.DeadLetter"
