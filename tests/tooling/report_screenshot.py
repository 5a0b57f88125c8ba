"""Makes the README's screenshot of a real data-quality report: the shared cryptofeed captures with
a few faults injected, and Kraken's capture (a checksum venue) with one size altered, run with
--book_checks --report, rendered by headless Chromium.

    python -m tests.tooling.report_screenshot docs/report.png

Faults (each changes a copy; the shared files stay as they are):
  - spot NKNUSDT: five consecutive depth updates dropped (a gap of measured size);
  - futures SUSHIUSDT: twenty depth updates dropped (a gap of unknown size: it waits for a
    snapshot that never comes, so it becomes a corrupt period and the rest is unanchored);
  - futures KEEPUSDT: five depth updates sent twice (duplicates);
  - one spot line cut short (bad_json), one futures line with invalid UTF-8;
  - Kraken: one size among the best ten levels of a delta raised by 1, so that message's checksum
    fails: a checksum_mismatch period from it to the end of the data (no snapshot resyncs it).
"""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import tempfile

from tests.conftest import CAPTURES, REPO
from tests.tooling.checksum_fault import KRAKEN, alter_one_kraken_size

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--hide-scrollbars")
NAMES = ("BINANCE.ws.1.0", "BINANCE.http.0.0", "BINANCE_FUTURES.ws.1.0", "BINANCE_FUTURES.http.0.0")


def _depth_lines(lines, symbol: str) -> list[int]:
    pattern = re.compile(rb'"e":"depthUpdate".*"s":"' + symbol.encode() + rb'"')
    return [i for i, line in enumerate(lines) if pattern.search(line)]


def fault_captures(destination: str) -> None:
    os.makedirs(destination, exist_ok=True)
    for name in NAMES:
        shutil.copy(os.path.join(CAPTURES, name), os.path.join(destination, name))
    spot_path = os.path.join(destination, "BINANCE.ws.1.0")
    futures_path = os.path.join(destination, "BINANCE_FUTURES.ws.1.0")
    spot = open(spot_path, "rb").read().split(b"\n")
    nkn = _depth_lines(spot, "NKNUSDT")
    dropped = set(nkn[60:65])
    cut = nkn[100]
    spot[cut] = spot[cut][: len(spot[cut]) // 2]
    spot = [line for i, line in enumerate(spot) if i not in dropped]
    open(spot_path, "wb").write(b"\n".join(spot))
    futures = open(futures_path, "rb").read().split(b"\n")
    dropped = set(_depth_lines(futures, "SUSHIUSDT")[120:140])
    keep = _depth_lines(futures, "KEEPUSDT")[40:45]
    bad = _depth_lines(futures, "CTKUSDT")[90]
    futures[bad] = futures[bad].replace(b'"s":"CTKUSDT"', b'"s":"CTK\xff\xfeUSDT"')
    out = []
    for i, line in enumerate(futures):
        if i in dropped:
            continue
        out.append(line)
        if i in keep:
            out.append(line)
    open(futures_path, "wb").write(b"\n".join(out))


def screenshot(page: str, png: str, width: int = 1400, height: int = 3700) -> None:
    from PIL import Image

    chromium = subprocess.run(["bash", os.path.join(REPO, "scripts", "ensure_chromium.sh")],
                              capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as profile:
        shot = os.path.join(profile, "shot.png")
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}/p", f"--screenshot={shot}",
                        f"--window-size={width},{height}", f"file://{os.path.abspath(page)}"],
                       capture_output=True, check=True, timeout=180)
        image = Image.open(shot).convert("RGB")
    # 256 colours keep a page of text and flat charts sharp, at a fraction of the size.
    buffer = io.BytesIO()
    image.quantize(256).save(buffer, format="PNG", optimize=True)
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    open(png, "wb").write(buffer.getvalue())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tooling.report_screenshot",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("png", help="where to write the screenshot, e.g. docs/report.png")
    parser.add_argument("--work", default=None, help="folder for the faulted captures and the run "
                        "(default: a temporary folder, removed after)")
    args = parser.parse_args(argv)
    from beam_pipeline.cli import main as run

    work = args.work or tempfile.mkdtemp(prefix="report-shot-")
    try:
        fault_captures(os.path.join(work, "captures"))
        alter_one_kraken_size(os.path.join(work, "captures"))
        code = run(["--input", ",".join(os.path.join(work, "captures", name)
                                        for name in ("BINANCE*", KRAKEN)),
                    "--output", os.path.join(work, "out"), "--book_checks", "--report"])
        if code != 0:
            return code
        screenshot(os.path.join(work, "out", "report.html"), args.png)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.png} ({os.path.getsize(args.png):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
