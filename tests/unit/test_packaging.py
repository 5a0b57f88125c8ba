"""Dependencies are declared once (pyproject.toml, compatible ranges) and locked once
(requirements.txt, requirements-dev.txt: exact pins), and the two agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pins(name: str) -> dict[str, Requirement]:
    found = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def declared(requirements: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, requirements)}


@pytest.mark.parametrize(
    "lock, declared_in",
    [
        ("requirements.txt", lambda: PROJECT["dependencies"]),
        ("requirements-dev.txt", lambda: PROJECT["optional-dependencies"]["dev"]),
    ],
)
def test_every_declared_dependency_is_pinned_within_its_range(lock, declared_in):
    locked, wanted = pins(lock), declared(declared_in())
    assert set(locked) == set(wanted), f"{lock} and pyproject.toml list different packages"
    for name, requirement in wanted.items():
        (pin,) = locked[name].specifier
        assert pin.operator == "==", f"{lock}: {name} is not pinned exactly"
        assert requirement.specifier.contains(pin.version), (
            f"{lock} pins {name}=={pin.version}, outside pyproject.toml's {requirement.specifier}"
        )
        assert locked[name].extras == requirement.extras, name


def test_beam_is_exact_and_the_flink_job_server_is_built_for_it():
    beam = declared(PROJECT["dependencies"])["apache-beam"]
    (spec,) = beam.specifier
    assert spec.operator == "==" and "gcp" in beam.extras
    flink = (REPO / "runners" / "flink.py").read_text()
    assert re.search(rf'BEAM_VERSION\s*=\s*"{re.escape(spec.version)}"', flink), (
        "runners/flink.py names another Beam version"
    )


def test_console_scripts_point_at_functions_that_exist():
    import importlib

    scripts = PROJECT["scripts"]
    assert set(scripts) == {"feedcheck", "feedcheck-collect", "feedcheck-publish"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_python_3_11_only():
    assert PROJECT["requires-python"] == ">=3.11,<3.12"
    versions = [
        c for c in PROJECT["classifiers"] if c.startswith("Programming Language :: Python :: 3.")
    ]
    assert versions == ["Programming Language :: Python :: 3.11"]
