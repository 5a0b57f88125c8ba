"""Pick the runner profile for a command line: each profile only adds default options."""
from __future__ import annotations


def runner_of(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and i + 1 < len(argv):
            return argv[i + 1]
    return "DirectRunner"


def apply_profile(argv: list[str]) -> list[str]:
    runner = runner_of(argv)
    if runner in ("FlinkRunner", "flink"):
        from runners import flink

        return flink.apply_profile(argv)
    return list(argv)
