"""The real command on embedded Flink is quiet: Beam's and Flink's ~12,000 INFO lines go to the log
file, the terminal shows the summary and where the outputs are, and no warning says our own
profile's flag is discarded."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_embedded_flink_run_is_quiet_and_keeps_its_logs(captures, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "beam_pipeline", "--runner", "FlinkRunner", "--input", captures[0],
         "--output", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    assert result.stdout.splitlines()[-1] == f"outputs: {out}"
    assert "balanced: yes" in result.stdout
    log = (out / "_logs" / "feedcheck.log").read_text()
    assert log.count("\n") > 1000 and "FlinkJarJobServer" in log      # Flink's logs are kept
    assert "Discarding unparseable args" not in log + result.stdout
