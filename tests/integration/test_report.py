"""The data-quality report rendered in headless Chromium (Debian's package; scripts/ensure_chromium.sh
installs it when missing): not blank, no request leaves the file, the numbers shown are
summary.json's, and a `<script>` in the input is shown as text, never run."""
import io
import json
import os
import subprocess
import uuid

import numpy as np
import pytest
from PIL import Image

from beam_pipeline.cli import main
from tests.conftest import REPO
from tests.tooling.report_dom import ReportDom, summary_as_shown
from tests.tooling.synthetic import DEMO_BAD_RECORDS, default_faults, generate, write_lines

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio")
TITLE = "feedcheck data-quality report"
EVIL_SYMBOL = ("<script>document.title='PWNED';document.documentElement.setAttribute("
               "'data-pwned','1')</script></html>")
EVIL_PAYLOAD = (b'{"exchange":"binance","market":"spot","symbol":"</html><script>document.title='
                b"'PWNED2'</script><img src=x onerror=document.title='PWNED3'>")


@pytest.fixture(scope="session")
def chromium():
    done = subprocess.run(["bash", os.path.join(REPO, "scripts", "ensure_chromium.sh")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Browser:
    """One fresh headless Chromium per page load, with a net log of every request it made."""

    def __init__(self, binary: str, folder):
        self.binary, self.folder = binary, folder

    def _run(self, page, *args):
        name = uuid.uuid4().hex[:8]
        netlog = self.folder / f"net-{name}.json"
        command = [self.binary, *FLAGS, f"--user-data-dir={self.folder / f'profile-{name}'}",
                   f"--log-net-log={netlog}", *args, f"file://{page}"]
        done = subprocess.run(command, capture_output=True, timeout=180)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        return done.stdout, page_requests(netlog)

    def dom(self, page):
        """The DOM after loading (Chromium's serialization), and the page's network requests."""
        out, requests = self._run(page, "--dump-dom")
        return out.decode("utf-8"), requests

    def screenshot(self, page, height: int = 2400, width: int = 1280):
        shot = self.folder / f"shot-{uuid.uuid4().hex[:8]}.png"
        _, requests = self._run(page, f"--screenshot={shot}", f"--window-size={width},{height}")
        return Image.open(io.BytesIO(shot.read_bytes())).convert("RGB"), requests


def page_requests(netlog) -> list:
    """URLs the page itself asked for: requests whose network isolation key is the file:// page
    (the browser's own background requests carry another key, or none)."""
    text = netlog.read_text()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:           # a net log cut short lacks its closing brackets
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [event["params"]["url"] for event in log["events"]
            if event["type"] == start_job
            and "file://" in event.get("params", {}).get("network_isolation_key", "")]


@pytest.fixture
def browser(chromium, tmp_path):
    return Browser(chromium, tmp_path)


def assert_not_blank(image: Image.Image) -> None:
    pixels = np.asarray(image, dtype=np.float64)
    not_white = (pixels < 240).any(axis=2).mean()
    colours = len(np.unique(pixels.reshape(-1, 3)[::7], axis=0))
    assert pixels.std() > 20 and not_white > 0.03 and colours > 50, (pixels.std(), not_white, colours)


def assert_report_renders(browser, out) -> ReportDom:
    page = out / "report.html"
    summary = json.loads((out / "summary.json").read_text())
    image, shot_requests = browser.screenshot(page)
    assert_not_blank(image)
    dumped, dom_requests = browser.dom(page)
    assert shot_requests == [] and dom_requests == []
    dom = ReportDom(dumped)
    assert dom.title == TITLE
    assert dom.summary_numbers() == summary_as_shown(summary)
    assert sum(dom.numbers("data-clean-rows").values()) == summary["clean_records"]
    assert len(dom.numbers("data-clean-rows")) == summary["symbols"]
    return dom


def test_the_request_check_catches_a_page_that_loads_from_the_network(browser, tmp_path):
    """The control for 'no request leaves the file': a page with an external image is caught."""
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><title>c</title><img src="https://example.invalid/x.png">')
    _, requests = browser.dom(page)
    assert requests == ["https://example.invalid/x.png"]


def test_report_of_the_real_captures_renders(browser, captures, tmp_path):
    out = tmp_path / "out"
    assert main(["--input", ",".join(captures), "--output", str(out), "--report"]) == 0
    dom = assert_report_renders(browser, out)
    assert dom.summary_numbers()["input_records"] == 1808


def test_report_of_a_faulted_synthetic_feed_renders(browser, tmp_path):
    """With non-default thresholds (the page shows the run's own), at 1400 and 800 px: the
    trust grid has a cell per symbol and hour, each with its reason on hover (a title)."""
    lines, _ = generate(12_000, seed=11, faults=default_faults(), bad_records=DEMO_BAD_RECORDS,
                        ignored=5)
    write_lines(str(tmp_path / "feed.jsonl.gz"), lines)
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "feed.jsonl.gz"), "--output", str(out),
                 "--error_window", "10", "--alert_warning_count", "3"]) == 0
    assert main(["report", "--output", str(out)]) == 0
    dom = assert_report_renders(browser, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gaps"]["large"] == 1 and summary["corrupt_periods"] >= 2
    assert dom.numbers("data-dead-letter") == summary["dead_letters"]
    assert "error window 10 s; warning above 3 and critical above 100" in dom.text
    assert "from the run's settings (summary.json)" in dom.text
    # no phantom symbols: the unknown market's and exchange's records are dead letters only
    assert len(dom.numbers("data-trusted")) == summary["symbols"] == 4
    assert len(dom.trust_cells) == summary["symbols"] and all(
        cell["title"] and cell["class"].startswith("t-") for cell in dom.trust_cells.values())
    for width in (1400, 800):
        image, requests = browser.screenshot(out / "report.html", width=width)
        assert_not_blank(image)
        assert requests == []


def test_script_in_symbol_and_payload_is_shown_not_run(browser, tmp_path):
    lines, _ = generate(3_000, seed=3, faults=[("small_gap", 0)],
                        symbols=(("spot", EVIL_SYMBOL, 0.5), ("spot", "BTCUSDT", 0.5)))
    lines.insert(100, EVIL_PAYLOAD)
    write_lines(str(tmp_path / "feed.jsonl.gz"), lines)
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "feed.jsonl.gz"), "--output", str(out), "--report"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["symbols"] == 2 and summary["dead_letters"] == {"bad_json": 1}
    written = (out / "report.html").read_text()
    assert "<script" not in written.lower() and "<img src=x" not in written
    dom = assert_report_renders(browser, out)
    # Nothing ran: no script element, the title and the root element are as written ...
    assert "script" not in dom.elements
    assert dom.title == TITLE
    assert not [a for a in dom.attributes if a[1] == "data-pwned"]
    assert not [a for a in dom.attributes if a[1] == "onerror"]
    # ... and the text is there to read: the symbol (table, details) and the dead letter's bytes.
    assert dom.text.count(f"binance:spot:{EVIL_SYMBOL}") >= 2
    assert "</html><script>document.title='PWNED2'</script><img src=x onerror=" in dom.text


BOOK_REASONS = ("checksum_mismatch", "crossed_book", "bad_level", "unknown_level",
                "snapshot_mismatch")


def test_report_shows_book_checks_and_where_each_symbol_stands(browser, tmp_path):
    """Kraken's capture with one altered size, --book_checks: per symbol, the page's book checks
    failed, checksum verified messages and anchored and verified coverage, and its status row
    (last id, the open checksum_mismatch period), each equal to a figure computed here from
    clean/, corrupt_periods/, status/ and summary.json."""
    import duckdb

    from tests.tooling.checksum_fault import alter_one_kraken_size

    pair, start_id = alter_one_kraken_size(str(tmp_path / "in"))
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "in" / "*"), "--output", str(out), "--book_checks",
                 "--report"]) == 0
    dom = assert_report_renders(browser, out)
    names = [name.split(":", 2)[2] for name, _ in dom.tagged["data-clean-rows"]]

    def by_name(tag):
        return {names[int(rank) - 1]: shown for rank, shown in dom.numbers(tag).items()}
    periods = duckdb.sql(f"SELECT symbol, reason, start_id, epoch_ms(start_time), "
                         f"epoch_ms(end_time) FROM read_parquet('{out}/corrupt_periods/*.parquet')"
                         ).fetchall()
    assert [(symbol, reason, first) for symbol, reason, first, *_ in periods] == [
        (pair, "checksum_mismatch", start_id)]
    assert by_name("data-book-failed") == {
        name: sum(1 for p in periods if p[0] == name and p[1] in BOOK_REASONS) for name in names}
    checksums = dict(duckdb.sql(f"SELECT symbol, checksum_verified_messages FROM "
                                f"read_parquet('{out}/status/*.parquet')").fetchall())
    assert by_name("data-checksums") == checksums
    summary = json.loads((out / "summary.json").read_text())
    assert sum(checksums.values()) == summary["book_checks"]["checksums_verified"] > 0
    # anchored and verified: anchored segments' time minus the corrupt periods', over the span
    segments = duckdb.sql(f"""
        SELECT symbol, anchored, min(t), max(t), max(last_id) FROM (
          SELECT symbol, segment_id, anchored, last_id,
                 epoch_ms(coalesce(event_time, recv_time)) AS t
          FROM read_parquet('{out}/clean/*.parquet')) GROUP BY symbol, segment_id, anchored
        """).fetchall()
    expected, last_ids = {}, {}
    for name in names:
        mine = [s for s in segments if s[0] == name]
        span = max(s[3] for s in mine) - min(s[2] for s in mine)
        verified = sum(end - start - sum(max(min(end, p[4]) - max(start, p[3]), 0)
                                         for p in periods if p[0] == name)
                       for _, anchored, start, end, _ in mine if anchored)
        expected[name] = f"{int(verified / span * 10000) / 100:.2f} %"
        last_ids[name] = max(s[4] for s in mine)
    assert by_name("data-verified") == expected and expected[pair] != "100.00 %"
    assert by_name("data-status-last-id") == last_ids
    corrupt = by_name("data-status-corrupt")
    assert corrupt.pop(pair).startswith("checksum_mismatch since ") and str(start_id) in \
        dom.text and set(corrupt.values()) == {"none"}
