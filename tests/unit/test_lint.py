"""The code passes its linters as configured in pyproject.toml: ruff (pyflakes and pycodestyle
rules on every file; `ruff format` style on the files listed below) and mypy on the Beam-free core
(beam_pipeline/core). `make lint` runs this."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# The files kept in `ruff format` style. Formatting the rest would rewrite 136 of 172 files at once
# (quotes, wrapping) while other branches change them; a file joins this list when it is new or
# rewritten (CONTRIBUTING.md).
FORMATTED = [
    "beam_pipeline/__main__.py",
    "runners/dataflow.py",
    "scripts/gen_docs.py",
    "tests/beam/test_venue_synthetic.py",
    "tests/integration/test_package_install.py",
    "tests/unit/test_lint.py",
    "tests/unit/test_packaging.py",
    "tests/tooling/synthetic_venues.py",
]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_ruff_finds_nothing():
    result = run("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_ruff_catches_an_unused_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    result = run("ruff", "check", "--no-cache", "--config", str(REPO / "pyproject.toml"), str(bad))
    assert result.returncode == 1 and "F401" in result.stdout


def test_the_formatted_files_stay_formatted():
    result = run("ruff", "format", "--check", "--no-cache", *FORMATTED)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_mypy_checks_the_core_clean():
    result = run("mypy", "--no-incremental")  # files and settings: pyproject.toml
    assert result.returncode == 0, result.stdout[-3000:]
    assert "no issues found in" in result.stdout
    count = int(result.stdout.split("no issues found in ")[1].split()[0])
    assert count == len(list((REPO / "beam_pipeline" / "core").rglob("*.py")))
