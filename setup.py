"""Packaging for Dataflow workers and the Flex Template image.

Dataflow builds an sdist from this file (``--setup_file``, added by runners/dataflow.py) and
installs it on every worker, so the workers import the same ``beam_pipeline``, ``transforms`` and
``runners`` packages as the launcher. The dead-letter Avro schema ships as package data of
``beam_pipeline``; MANIFEST.in adds requirements.txt (read below) to the sdist.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def requirements() -> list[str]:
    """requirements.txt without comments and pip options (MANIFEST.in puts it in the sdist)."""
    text = (ROOT / "requirements.txt").read_text()
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("-")]


setup(
    name="feedcheck",
    version="0.1.0",
    description="Apache Beam pipeline that checks crypto order-book delta feeds for continuity.",
    python_requires=">=3.10",
    packages=find_packages(exclude=["tests", "tests.*"]),
    package_data={"beam_pipeline": ["schemas/*.avsc"]},
    install_requires=requirements(),
)
