"""Check that the commands in the docs run as written on a fresh machine (make docs-check).

Every ```sh block of README.md, CONTRIBUTING.md, every page under docs/ (subfolders too) and
templates/README.md is read, continuation lines joined. Each command is checked:

- Python runs as `.venv/bin/python` and our commands as `.venv/bin/feedcheck`,
  `.venv/bin/feedcheck-collect`, `.venv/bin/feedcheck-publish` (what `make setup` creates), never a
  bare `python`, `pip` or `feedcheck`, and only the console scripts pyproject.toml declares;
- no absolute path outside the repository (`/shared/out/...`): paths are relative to the root;
- `make <target>` names a Makefile target; `scripts/...` and `templates/...` files exist;
- `feedcheck ...` (or `python -m beam_pipeline ...`), `feedcheck report|compact ...`,
  `feedcheck-collect ...` and `feedcheck-publish ...` pass their command line's own check (no
  unknown option).

With `--run`, the commands that need nothing outside this machine are run from the repository
root: batch runs on inputs that exist, reports of runs that exist, every command's `--help`, and
Dataflow dry runs. Each run's `--output`
folder under out/ is removed first, so the check can be repeated. Commands that need a service
(the Pub/Sub emulator, a Flink cluster, gcloud) are listed as not run.

    .venv/bin/python scripts/docs_check.py          # static checks
    .venv/bin/python scripts/docs_check.py --run    # and run what can run here
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("README.md", "CONTRIBUTING.md", "docs/**/*.md", "templates/README.md")
# The console scripts (pyproject.toml [project.scripts]) and the module each runs.
SCRIPTS = {".venv/bin/feedcheck": "beam_pipeline", ".venv/bin/feedcheck-collect":
           "beam_pipeline.collector", ".venv/bin/feedcheck-publish": "beam_pipeline.publish"}
BLOCK = re.compile(r"```(?:sh|bash)\n(.*?)```", re.S)


@dataclass
class Command:
    doc: str
    line: int
    text: str

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def commands(root: str = ROOT) -> list[Command]:
    """Every command of every sh block, continuation lines joined, heredoc bodies skipped."""
    found = []
    for pattern in DOCS:
        for path in sorted(glob.glob(os.path.join(root, pattern), recursive=True)):
            text = open(path).read()
            doc = os.path.relpath(path, root)
            for block in BLOCK.finditer(text):
                first_line = text[:block.start(1)].count("\n") + 1
                found += _block_commands(doc, first_line, block.group(1))
    return found


def _block_commands(doc: str, first_line: int, body: str) -> list[Command]:
    out, pending, start, heredoc = [], "", 0, None
    for offset, line in enumerate(body.splitlines()):
        if heredoc:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        if not pending:
            start = first_line + offset
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = (pending + stripped).strip()
        pending = ""
        if not text or text.startswith("#") or text.startswith("..."):
            continue            # a comment, or an elided example ("... --flag")
        marker = re.search(r"<<-?'?(\w+)'?", text)
        if marker:
            heredoc = marker.group(1)
        out.append(Command(doc, start, text))
    return out


def _programs(argv: list[str]) -> list[list[str]]:
    """The simple commands of a line (split at ;, &&, ||, |), `eval "$(...)"` opened up."""
    parts, current = [], []
    for word in argv:
        if word in (";", "&&", "||", "|"):
            parts.append(current)
            current = []
        else:
            current.append(word)
    parts.append(current)
    opened = []
    for part in parts:
        if part[:1] == ["eval"] and len(part) == 2 and part[1].startswith("$("):
            opened.append(shlex.split(part[1][2:-1]))
        elif part:
            opened.append(part)
    return opened


def _make_targets(root: str) -> set[str]:
    text = open(os.path.join(root, "Makefile")).read()
    return set(re.findall(r"^([\w.-]+):", text, re.M))


def problems(command: Command, root: str = ROOT) -> list[str]:
    """What would keep the command from running as written on a fresh machine."""
    found = []
    try:
        programs = _programs(command.argv)
    except ValueError as error:
        return [f"{command.where()}: cannot parse: {error}"]
    for argv in programs:
        program = argv[0]
        if program in ("python", "python3", "pip", "pip3", *(os.path.basename(s) for s in SCRIPTS)):
            found.append(f"{command.where()}: `{program}`: use .venv/bin/{program.rstrip('3')} "
                         "(make setup creates it; a fresh machine has no apache_beam elsewhere)")
        if program.startswith(".venv/bin/") and program not in (
                ".venv/bin/python", ".venv/bin/pip", *_declared_scripts(root)):
            found.append(f"{command.where()}: {program}: no such command in .venv (pyproject.toml "
                         "declares the console scripts)")
        for arg in argv[1:]:
            value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
            if value.startswith("/") and not value.startswith("/tmp/"):
                found.append(f"{command.where()}: absolute path {value}: use a path under the "
                             "repository (e.g. out/...)")
        if program == "make":
            missing = [t for t in argv[1:] if not t.startswith("-") and "=" not in t
                       and t not in _make_targets(root)]
            found += [f"{command.where()}: make {t}: no such target" for t in missing]
        if program.startswith(("scripts/", "templates/")) and not os.access(
                os.path.join(root, program), os.X_OK):
            found.append(f"{command.where()}: {program}: missing or not executable")
        if _is_feedcheck(argv) and "--help" not in argv:
            found += [f"{command.where()}: {error}" for error in _usage_errors(_args(argv))]
        elif _module(argv) in ("beam_pipeline.collector", "beam_pipeline.publish") \
                and "--help" not in argv:
            found += [f"{command.where()}: {error}"
                      for error in _tool_usage_errors(_module(argv), _args(argv))]
    return found


def _declared_scripts(root: str) -> list[str]:
    import tomllib

    path = os.path.join(root, "pyproject.toml")
    if not os.path.exists(path):
        return []
    with open(path, "rb") as handle:
        scripts = tomllib.load(handle).get("project", {}).get("scripts", {})
    return [f".venv/bin/{name}" for name in scripts]


def _module(argv: list[str]):
    """The module a command runs: `.venv/bin/python -m M ...` or a console script; else None."""
    if argv[:2] == [".venv/bin/python", "-m"] and len(argv) > 2:
        return argv[2]
    return SCRIPTS.get(argv[0]) if argv else None


def _args(argv: list[str]) -> list[str]:
    """The arguments after the program (and after `-m module`)."""
    return argv[3:] if argv[:2] == [".venv/bin/python", "-m"] else argv[1:]


def _tool_usage_errors(module: str, args: list[str]) -> list[str]:
    """Unknown options of feedcheck-collect or feedcheck-publish (their own parsers)."""
    import importlib

    parser = importlib.import_module(module).build_parser()
    _, unknown = parser.parse_known_args(args)
    return [f"{parser.prog}: unknown argument {unknown[0]}"] if unknown else []


def _usage_errors(args: list[str]) -> list[str]:
    """What the command line would refuse: the job's options, or the report or compact
    subcommand's."""
    from beam_pipeline.cli import UsageError, check_command_line

    if args[:1] == ["compact"]:
        from beam_pipeline.compact import UsageError as CompactUsage, parser as compact_parser

        try:
            compact_parser().parse_args(args[1:])
        except CompactUsage as error:
            return [f"compact: {error}"]
        return []
    if args[:1] == ["report"]:
        from beam_pipeline.options import add_report_arguments

        parser = argparse.ArgumentParser(prog="report", add_help=False)
        add_report_arguments(parser)
        _, unknown = parser.parse_known_args(args[1:])
        return [f"report: unknown argument {unknown[0]}"] if unknown else []
    try:
        check_command_line(args)
    except UsageError as error:
        return [str(error)]
    return []


def _is_report(argv: list[str]) -> bool:
    return _args(argv)[:1] == ["report"]


def _is_feedcheck(argv: list[str]) -> bool:
    return _module(argv) == "beam_pipeline"


def _option(argv: list[str], name: str):
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def why_not_run(command: Command, root: str = ROOT):
    """None when the command can run here as written; else what it needs."""
    programs = _programs(command.argv)
    if len(programs) != 1 or _module(programs[0]) not in SCRIPTS.values():
        return "not a feedcheck command (make, scripts and services are checked statically)"
    argv = programs[0]
    if "--help" in argv:
        return None
    if not _is_feedcheck(argv):
        return "needs a service (an exchange or Pub/Sub)"
    if "--dry_run=True" in argv:
        return None
    if _args(argv)[:1] == ["compact"]:
        return "compacts a streaming job's outputs (none here)"
    if _is_report(argv):
        folder = _option(argv, "output")
        html = _option(argv, "html")
        if html and os.path.isabs(html):
            return f"writes outside the repository ({html})"
        return None if folder and os.path.isdir(os.path.join(root, folder)) else \
            f"no run in {folder} here (run the batch command first)"
    if "--streaming" in argv or _option(argv, "runner") not in (None, "DirectRunner"):
        return "needs a service (Pub/Sub emulator or a Flink cluster)"
    pattern = _option(argv, "input")
    if pattern is None or not glob.glob(os.path.join(root, pattern)):
        return f"no file matches --input {pattern} here"
    return None


def run(command: Command, root: str = ROOT, python: str = None) -> subprocess.CompletedProcess:
    argv = _programs(command.argv)[0]
    output = _option(argv, "output")
    if output and output.startswith("out/") and not _is_report(argv):   # a report reads it
        shutil.rmtree(os.path.join(root, output), ignore_errors=True)
    if python:          # no .venv here: the same module with this interpreter
        argv = [python, "-m", _module(argv), *_args(argv)]
    return subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=600)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/docs_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="store_true", help="also run the commands that can run here")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    failures = []
    every = commands()
    for command in every:
        failures += problems(command)
    if args.run and not failures:
        # .venv/bin/python as written; a git worktree without its own venv runs this interpreter
        python = None if os.path.exists(os.path.join(ROOT, ".venv/bin/python")) else sys.executable
        for command in every:
            reason = why_not_run(command)
            if reason:
                print(f"not run  {command.where()}: {reason}")
                continue
            result = run(command, python=python)
            ok = result.returncode == 0 and "No module named" not in result.stderr
            print(f"{'ran' if ok else 'FAILED':<8} {command.where()}: {command.text[:90]}")
            if not ok:
                failures.append(f"{command.where()}: exit {result.returncode}: "
                                f"{(result.stderr or result.stdout).strip()[-500:]}")
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"{len(every)} commands checked, {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
