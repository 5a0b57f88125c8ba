"""The demo (make demo): its sample holds every fault class the batch job reports, and the summary
the job writes diffs cleanly against the one the generator expects."""
from __future__ import annotations

import re
from pathlib import Path

from beam_pipeline.cli import main
from tests.tooling import synthetic

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_covers_every_fault_and_its_summary_diffs_cleanly(tmp_path):
    feed, expected = tmp_path / "feed.jsonl.gz", tmp_path / "expected_summary.json"
    assert synthetic.main(["--events", "12000", "--output", str(feed),
                           "--expected", str(expected)]) == 0
    assert main(["--input", str(feed), "--output", str(tmp_path / "out")]) == 0
    written = tmp_path / "out" / "summary.json"
    assert synthetic.check_summary(str(expected), str(written)) == 0     # the diff is empty
    assert synthetic.json.loads(expected.read_text()) == synthetic.totals(
        synthetic.json.loads(written.read_text()))

    summary = synthetic.json.loads(written.read_text())
    assert summary["balanced"] is True
    reasons = {synthetic.REASON_OF[kind] for kind in synthetic.DEMO_BAD_RECORDS}
    assert set(summary["dead_letters"]) == reasons
    assert {"symbol_mismatch", "unknown_market", "unsupported_exchange", "invalid_ids"} <= reasons
    assert all(summary["gaps"][cls] >= 1 for cls in ("small", "medium", "large", "reset"))
    assert summary["gaps"]["reset"] == 2 and summary["duplicates"] >= 2
    assert summary["superseded"] > 0 and summary["corrupt_periods"] >= 3 and summary["ignored"] == 25


def test_make_demo_runs_the_same_commands_and_diffs_the_summaries():
    recipe = re.search(r"^demo:.*?\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert "-m tests.tooling.synthetic" in recipe and "--expected sample/expected_summary.json" in recipe
    assert "/bin/feedcheck --input sample/feed.jsonl.gz --output out/demo --overwrite" in recipe
    assert "-m tests.tooling.synthetic --check out/demo/summary.json --expected " \
           "sample/expected_summary.json" in recipe
