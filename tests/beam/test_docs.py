"""The docs: their commands run as written on a fresh machine (scripts/docs_check.py, make
docs-check); the generated reference pages match the code (scripts/gen_docs.py, make docs); the site
builds with `mkdocs build --strict`; every page is in its navigation, every input format and venue
has a page; the user docs hold no development history (that is CHANGELOG.md)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("docs_check", REPO / "scripts" / "docs_check.py")
docs_check = importlib.util.module_from_spec(spec)
sys.modules["docs_check"] = docs_check      # dataclasses look their module up
spec.loader.exec_module(docs_check)
spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
gen_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen_docs)
DOCS = REPO / "docs"


def test_every_documented_command_passes_the_static_checks():
    commands = docs_check.commands()
    assert len(commands) > 20
    assert [p for c in commands for p in docs_check.problems(c)] == []


def test_the_checks_catch_what_fails_on_a_fresh_machine(tmp_path):
    (tmp_path / "Makefile").write_text("demo:\n\techo\n")
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (tmp_path / "README.md").write_text(
        "```sh\n"
        "python -m beam_pipeline --input a --output out/x\n"
        ".venv/bin/python -m beam_pipeline --input a \\\n    --output /shared/out/run1\n"
        ".venv/bin/python -m beam_pipeline --input a --output o --max_bad_rate 0.1\n"
        "make demo && make docs\n"
        "scripts/missing.sh start\n"
        "feedcheck --input a --output o\n"
        ".venv/bin/feedcheck-typo --help\n"
        ".venv/bin/feedcheck-publish --topic projects/p/topics/t --record_per_message 5 a.gz\n"
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
        "README.md:7: scripts/missing.sh: missing or not executable",
        "README.md:8: `feedcheck`: use .venv/bin/feedcheck (make setup creates it; a fresh machine "
        "has no apache_beam elsewhere)",
        "README.md:9: .venv/bin/feedcheck-typo: no such command in .venv (pyproject.toml declares "
        "the console scripts)",
        "README.md:10: feedcheck-publish: unknown argument --record_per_message"]


def test_the_readme_batch_command_runs_as_written():
    runnable = [c for c in docs_check.commands() if c.doc == "README.md"
                and docs_check.why_not_run(c) is None and "--input" in c.argv]
    assert runnable, "the README shows a batch run on files that exist"
    result = docs_check.run(runnable[0], python=sys.executable)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1].startswith("outputs: out/")
    assert "balanced: yes" in result.stdout


def test_every_page_under_docs_is_read_by_the_check():
    pages = {str(p.relative_to(REPO)) for p in DOCS.rglob("*.md")}
    checked = {c.doc for c in docs_check.commands()}
    assert {"docs/running/flink.md", "docs/getting-started.md"} <= checked <= pages | {
        "README.md", "CONTRIBUTING.md", "templates/README.md"}


def test_the_generated_pages_match_the_code():
    assert gen_docs.stale() == [], "run make docs (scripts/gen_docs.py) and commit the pages"
    options = (DOCS / "reference" / "options.md").read_text()
    for command in ("## feedcheck\n", "## feedcheck report", "## feedcheck compact",
                    "## feedcheck-collect", "## feedcheck-publish"):
        assert command in options
    for option in ("`--max_bad_record_rate", "`--symbols", "`--records_per_message", "`--before"):
        assert option in options


def test_a_changed_option_makes_the_generated_page_stale(tmp_path):
    page = tmp_path / "docs" / "reference" / "options.md"
    page.parent.mkdir(parents=True)
    page.write_text((DOCS / "reference" / "options.md").read_text().replace("Default: 0.5", "0.4"))
    (tmp_path / "docs" / "reference" / "schemas.md").write_text(gen_docs.schemas_page())
    assert gen_docs.stale(str(tmp_path)) == ["docs/reference/options.md"]


def nav_pages(items) -> list[str]:
    found = []
    for item in items:
        if isinstance(item, str):
            found.append(item)
        else:
            for value in item.values():
                found += nav_pages(value) if isinstance(value, list) else [value]
    return found


def test_every_page_is_in_the_navigation_and_every_format_and_venue_has_one():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    nav = nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    from beam_pipeline.core import adapters, framings

    for name in framings.names():
        assert f"inputs/{name}.md" in nav, f"input format {name}: add docs/inputs/{name}.md"
    for module in adapters.adapters():
        venue = module.__name__.rsplit(".", 1)[-1]
        assert f"venues/{venue}.md" in nav, f"venue {venue}: add docs/venues/{venue}.md"


HISTORY = re.compile(r"issue \d+|\b(?:HEAD|commit) [0-9a-f]{7}|this (?:2-core )?machine|"
                     r"seen on main|before this (?:work|rule)", re.I)


def test_user_docs_hold_no_development_history():
    found = [f"{p.relative_to(REPO)}:{n}: {line.strip()}"
             for p in [REPO / "README.md", *DOCS.rglob("*.md")]
             for n, line in enumerate(p.read_text().splitlines(), 1) if HISTORY.search(line)]
    assert found == [], "development history goes to CHANGELOG.md"
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


def test_the_site_builds_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir",
         str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    html = (tmp_path / "site" / "reference" / "options" / "index.html").read_text()
    assert "--input_format" in html and (tmp_path / "site" / "report.png").is_file()
