"""Reading runner flags from a command line (used by every runner profile; imports nothing of ours)."""
from __future__ import annotations


def flag_value(argv: list[str], name: str) -> str | None:
    """Value of ``--name=value`` / ``--name value`` in argv (last one wins, as in argparse), else
    None; a bare ``--name`` (a boolean flag) gives ""."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}":
            value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else ""
    return value


def runner_of(argv: list[str]) -> str:
    return flag_value(argv, "runner") or "DirectRunner"


def runner_kind(argv: list[str]) -> str:
    """"direct", "dataflow", "flink", ...: the runner's class name (a dotted path too), lower case,
    without "Runner", the way Beam itself accepts DataflowRunner, dataflow and the module path."""
    name = runner_of(argv).rsplit(".", 1)[-1].lower()
    return name[:-len("runner")] if name.endswith("runner") else name
