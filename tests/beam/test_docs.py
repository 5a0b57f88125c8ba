"""The docs' commands run as written on a fresh machine (scripts/docs_check.py, make docs-check)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("docs_check", REPO / "scripts" / "docs_check.py")
docs_check = importlib.util.module_from_spec(spec)
sys.modules["docs_check"] = docs_check      # dataclasses look their module up
spec.loader.exec_module(docs_check)


def test_every_documented_command_passes_the_static_checks():
    commands = docs_check.commands()
    assert len(commands) > 20
    assert [p for c in commands for p in docs_check.problems(c)] == []


def test_the_checks_catch_what_fails_on_a_fresh_machine(tmp_path):
    (tmp_path / "Makefile").write_text("demo:\n\techo\n")
    (tmp_path / "README.md").write_text(
        "```sh\n"
        "python -m beam_pipeline --input a --output out/x\n"
        ".venv/bin/python -m beam_pipeline --input a \\\n    --output /shared/out/run1\n"
        ".venv/bin/python -m beam_pipeline --input a --output o --max_bad_rate 0.1\n"
        "make demo && make docs\n"
        "scripts/missing.sh start\n"
        ".venv/bin/python - <<'EOF'\nprint('python in a heredoc is not a command')\nEOF\n"
        "```\n")
    found = [p for c in docs_check.commands(str(tmp_path))
             for p in docs_check.problems(c, str(tmp_path))]
    assert found == [
        "README.md:2: `python`: use .venv/bin/python (make setup creates it; a fresh machine has "
        "no apache_beam elsewhere)",
        "README.md:3: absolute path /shared/out/run1: use a path under the repository (e.g. out/...)",
        "README.md:5: unknown option --max_bad_rate (did you mean --max_bad_file_rate or "
        "--max_bad_record_rate?)",
        "README.md:6: make docs: no such target",
        "README.md:7: scripts/missing.sh: missing or not executable"]


def test_the_readme_batch_command_runs_as_written():
    runnable = [c for c in docs_check.commands() if c.doc == "README.md"
                and docs_check.why_not_run(c) is None and "--input" in c.argv]
    assert runnable, "the README shows a batch run on files that exist"
    result = docs_check.run(runnable[0], python=sys.executable)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1].startswith("outputs: out/")
    assert "balanced: yes" in result.stdout
