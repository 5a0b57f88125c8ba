"""Pick the runner profile for a command line: each profile only adds default options."""
from __future__ import annotations

from runners import dataflow, direct, flink
from runners.flags import runner_kind


def apply_profile(argv: list[str]) -> list[str]:
    kind = runner_kind(argv)
    if kind == "flink":
        return flink.apply_profile(argv)
    if kind == "dataflow":
        return dataflow.apply_profile(argv)
    if kind == "direct":
        return direct.apply_profile(argv)
    return list(argv)
