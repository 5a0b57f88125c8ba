"""The data-quality report: one self-contained HTML page about a run's outputs, PNG charts beside it.

    python -m beam_pipeline report --output out/run1              # -> out/run1/report.html
    python -m beam_pipeline report --output out/live --html /tmp/live.html
    python -m beam_pipeline --input ... --output out/run1 --report   # batch: written at the end

Reads a finished batch run's or a running streaming job's outputs (each row once, as readback
does) and shows: the summary with its conservation check, the per-file counts, the dead-letter
reasons with one example each, the worst periods, and per symbol (worst first) a timeline of its
segments, gaps, corrupt periods, stalls and alerts, its coverage, and its error counts per window
against the alert thresholds. The page has no script and loads nothing: its charts are embedded
as data: URIs (the same PNGs are written to <page name>_files/ beside it for reuse).
"""
from __future__ import annotations

import argparse
import re
import sys
import time

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.options import add_report_arguments
from beam_pipeline.report import charts as chart
from beam_pipeline.report.data import NoOutputs, build
from beam_pipeline.report.page import page

__all__ = ["write_report", "main", "NoOutputs"]


def default_html_path(output: str) -> str:
    return f"{output.rstrip('/')}/report.html"


def charts_folder(html_path: str) -> str:
    stem = html_path[:-5] if html_path.endswith(".html") else html_path
    return f"{stem}_files"


def write_report(output: str, html_path: str | None = None, detail_charts: int | None = None,
                 overview_rows: int | None = None) -> dict:
    """Writes the report of `output`; returns {"html", "charts", "symbols", "seconds"}.
    Limits left None take their defaults from options.py."""
    defaults = _defaults()
    detail_charts = defaults.detail_charts if detail_charts is None else detail_charts
    overview_rows = defaults.overview_rows if overview_rows is None else overview_rows
    started = time.monotonic()
    html_path = html_path or default_html_path(output)
    report = build(output)
    pngs = {"kinds": chart.record_kinds(report.summary),
            "overview": chart.overview(report, overview_rows),
            "unattributed": chart.unattributed_errors(report.unattributed_counts, report.thresholds)}
    files = {"kinds.png": pngs["kinds"], "unattributed.png": pngs["unattributed"]}
    files.update({f"overview-{i + 1}.png": data for i, data in enumerate(pngs["overview"])})
    for index, stream in enumerate(report.streams[:detail_charts]):
        if stream.first_ms is not None:
            pngs[("symbol", index)] = files[f"symbol-{index + 1}.png"] = chart.stream_detail(
                stream, report.thresholds)
    folder = charts_folder(html_path)
    _remove_old_charts(folder)
    written = 0
    for name, data in files.items():
        if data is not None:
            _write(f"{folder}/{name}", data)
            written += 1
    _write(html_path, page(report, pngs, overview_rows, int(time.time() * 1000)).encode("utf-8"))
    return {"html": html_path, "charts": written, "symbols": len(report.streams),
            "seconds": round(time.monotonic() - started, 2)}


_CHART_NAME = re.compile(r"(kinds|unattributed|overview-\d+|symbol-\d+)\.png")


def _remove_old_charts(folder: str) -> None:
    """A report written again over an earlier one: drop the charts this one does not rewrite
    (only names the report itself gives)."""
    match = FileSystems.match([f"{folder}/*.png"])[0]
    old = [m.path for m in match.metadata_list if _CHART_NAME.fullmatch(m.path.rsplit("/", 1)[-1])]
    if old:
        FileSystems.delete(old)


def _write(path: str, data: bytes) -> None:
    with FileSystems.create(path) as handle:
        handle.write(data)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedcheck report",
        description="Write the data-quality report of a run's output folder: one HTML page "
                    "(no script, nothing loaded from the network) with its PNG charts beside it.")
    add_report_arguments(parser)
    return parser


def _defaults() -> argparse.Namespace:
    return _parser().parse_args(["--output", "-"])


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        result = write_report(args.output, args.html, args.detail_charts, args.overview_rows)
    except NoOutputs as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {result['html']} ({result['symbols']} symbols, {result['charts']} charts, "
          f"{result['seconds']} s)")
    return 0
