"""The data-quality report (beam_pipeline/report): what it reads, computes and writes.

Rendering in a browser is tested in tests/integration/test_report.py."""
import json
import os
import re
import shutil

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline import readback
from beam_pipeline.cli import main
from beam_pipeline.options import FeedCheckOptions
from beam_pipeline.report import data as report_data
from beam_pipeline.report import write_report
from beam_pipeline.report.page import percent, raw_bytes, text
from tests.tooling.report_dom import ReportDom, summary_as_shown
from tests.tooling.synthetic import (BAD_RECORDS, DEMO_BAD_RECORDS, default_faults, generate,
                                     write_lines)


@pytest.fixture(scope="module")
def faulted_run(tmp_path_factory):
    """A small synthetic feed with every gap class, duplicates, reordering and bad records, run
    with --report."""
    folder = tmp_path_factory.mktemp("faulted")
    lines, expected = generate(12_000, seed=11, faults=default_faults(), bad_records=BAD_RECORDS,
                               ignored=5)
    write_lines(str(folder / "feed.jsonl.gz"), lines)
    code = main(["--input", str(folder / "feed.jsonl.gz"), "--output", str(folder / "out"),
                 "--report"])
    assert code == 0
    return folder / "out", expected


def _page(path) -> ReportDom:
    return ReportDom(open(path, encoding="utf-8").read())


def test_batch_report_flag_writes_page_and_charts(faulted_run):
    out, _ = faulted_run
    page = out / "report.html"
    assert page.exists()
    charts = sorted(os.listdir(out / "report_files"))
    assert {"kinds.png", "overview-1.png", "symbol-1.png"} <= set(charts)
    for name in charts:
        assert (out / "report_files" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = _page(page)
    assert "script" not in dom.elements
    # Every image is embedded: the page needs nothing beside it or on the network.
    sources = [v for tag, name, v in dom.attributes if name in ("src", "href")]
    assert sources and all(v.startswith(("data:image/png;base64,", "#")) for v in sources)
    csp = [v for tag, name, v in dom.attributes if tag == "meta" and name == "content"
           and "default-src" in v]
    assert csp == ["default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                   "base-uri 'none'; form-action 'none'"]


def test_numbers_shown_equal_summary(faulted_run):
    out, expected = faulted_run
    summary = json.loads((out / "summary.json").read_text())
    dom = _page(out / "report.html")
    assert dom.summary_numbers() == summary_as_shown(summary)
    assert summary["balanced"] and summary["dead_letters"] == dict(expected.dead_letters)
    # dead-letter reasons: each with its count, as in the summary
    assert dom.numbers("data-dead-letter") == summary["dead_letters"]
    # one row per symbol, with its clean rows; together they are the summary's clean records
    clean = dom.numbers("data-clean-rows")
    assert len(clean) == summary["symbols"] == 4
    assert sum(clean.values()) == summary["clean_records"]


def test_symbols_worst_first_and_linked(faulted_run):
    out, _ = faulted_run
    report = report_data.build(str(out))
    dom = _page(out / "report.html")
    headlines = [s.trusted() for s in report.streams]       # worst first: least anchored time
    assert headlines == sorted(headlines)
    by_name = {s.name: s for s in report.streams}
    assert by_name["binance:spot:BTCUSDT"].gap_counts() == {"small": 1, "medium": 2, "large": 1,
                                                            "reset": 0}
    assert len(by_name["binance:spot:BTCUSDT"].corrupt) == 2
    # spot ETHUSDT has only duplicates and reordering: one anchored segment, last
    assert report.streams[-1].name == "binance:spot:ETHUSDT"
    assert report.streams[-1].coverage(True) == 1.0 and report.streams[-1].segments == 1
    assert all(s.coverage() < 1.0 for s in report.streams[:-1])
    links = [v for tag, name, v in dom.attributes if tag == "a" and name == "href"
             and v.startswith("#symbol-")]
    assert links and all(link[1:] in dom.ids for link in links)
    assert {f"symbol-{i + 1}" for i in range(len(report.streams))} <= dom.ids


def test_clean_rows_written_twice_are_counted_once(faulted_run, tmp_path):
    """Sinks are at-least-once after a restore: the report deduplicates as readback does."""
    out, _ = faulted_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for folder in ("clean", "dead_letter"):
        for name in os.listdir(copy / folder):
            shutil.copy(copy / folder / name, copy / folder / f"zz-again-{name}")
    assert report_data.CLEAN_KEY == readback.KEYS["clean"]
    # read_dead_letters keys a payload by its digest: the rest of readback's key as it is
    assert readback.KEYS["dead_letter"] == ("reason", "stage", "source", "payload")
    first, again = report_data.build(str(out)), report_data.build(str(copy))
    assert again.clean_rows_read == first.clean_rows_read == again.summary["clean_records"]
    assert [(s.name, s.clean_rows, s.coverage(), s.coverage(True)) for s in again.streams] == \
        [(s.name, s.clean_rows, s.coverage(), s.coverage(True)) for s in first.streams]
    assert again.dead_letters == first.dead_letters
    assert {e["reason"]: e["count"] for e in again.dead_letters} == again.summary["dead_letters"]


def test_report_of_real_captures(captures, tmp_path):
    out = tmp_path / "out"
    assert main(["--input", ",".join(captures), "--output", str(out)]) == 0
    assert main(["report", "--output", str(out), "--html", str(tmp_path / "r" / "q.html")]) == 0
    dom = _page(tmp_path / "r" / "q.html")
    summary = json.loads((out / "summary.json").read_text())
    assert dom.summary_numbers() == summary_as_shown(summary)
    assert os.path.exists(tmp_path / "r" / "q_files" / "overview-2.png")
    report = report_data.build(str(out))
    # Every symbol of the captures is continuous and anchored from its snapshot on.
    assert len(report.streams) == 8
    assert all(s.coverage() == 1.0 and s.coverage(True) == 1.0 and s.segments == 1
               for s in report.streams)
    # the run's summary.json has per-file counts (issue 11): the page's table adds up to them
    assert "not recorded" not in dom.text
    assert dom.numbers("data-files-total") == {"records": 1808, "clean": 929, "ignored": 859,
                                               "duplicates": 0, "superseded": 20, "dead": 0}


def test_per_file_table_from_summary(faulted_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(faulted_run[0], out)
    summary = json.loads((out / "summary.json").read_text())
    summary["files"] = [
        {"file": "a/<b>.gz", "format": "envelope", "records": 10, "clean": 7, "ignored": 1,
         "duplicates": 1, "superseded": 0, "dead": 1},
        {"file": "c.gz", "format": "cryptofeed", "records": 5, "clean": 5, "ignored": 0,
         "duplicates": 0, "superseded": 0, "dead": 0}]
    (out / "summary.json").write_text(json.dumps(summary))
    write_report(str(out))
    dom = _page(out / "report.html")
    assert dom.numbers("data-files-total") == {"records": 15, "clean": 12, "ignored": 1,
                                               "duplicates": 1, "superseded": 0, "dead": 1}
    assert "a/<b>.gz" in dom.text and "not recorded" not in dom.text
    assert "<b>.gz" not in (out / "report.html").read_text()


def test_thresholds_from_settings_or_defaults(tmp_path):
    defaults = PipelineOptions([]).view_as(FeedCheckOptions)
    none = report_data.load_thresholds(str(tmp_path), {})
    assert (none.warning_count, none.critical_count, none.gap_rate, none.error_window_s) == (
        defaults.alert_warning_count, defaults.alert_critical_count, defaults.alert_gap_rate,
        defaults.error_window)
    assert "defaults" in none.source
    given = report_data.load_thresholds(str(tmp_path), {"settings": {"options": {
        "alert_warning_count": 3, "alert_critical_count": 7, "error_window": 10}}})
    assert (given.warning_count, given.critical_count, given.error_window_s) == (3, 7, 10.0)
    assert given.gap_rate == defaults.alert_gap_rate and "summary.json" in given.source
    (tmp_path / "_job.json").write_text(json.dumps({"settings": {"options": {"alert_gap_rate": 0.5}}}))
    from_job = report_data.load_thresholds(str(tmp_path), {})
    assert from_job.gap_rate == 0.5 and "_job.json" in from_job.source


def test_a_runs_own_settings_are_recorded_and_the_report_uses_them(tmp_path):
    """--error_window 10 --alert_warning_count 3: summary.json and _job.json record every option
    (secrets redacted), and the report's thresholds, windows and gap rates are the run's."""
    # DEMO_BAD_RECORDS: also records of an unknown market and an unknown exchange (no symbols)
    lines, _ = generate(12_000, seed=11, faults=default_faults(), bad_records=DEMO_BAD_RECORDS)
    write_lines(str(tmp_path / "feed.jsonl.gz"), lines)
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "feed.jsonl.gz"), "--output", str(out), "--report",
                 "--error_window", "10", "--alert_warning_count", "3",
                 "--dataflow_endpoint", "https://me:hunter2@example.com/df?token=abc&x=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    job = json.loads((out / "_job.json").read_text())
    for settings in (summary["settings"], job["settings"]):
        options = settings["options"]
        assert set(options) == set(PipelineOptions([]).view_as(FeedCheckOptions)
                                   .get_all_options()) & set(options)
        assert options["error_window"] == 10 and options["alert_warning_count"] == 3
        assert options["alert_critical_count"] == FeedCheckOptions.defaults().alert_critical_count
        assert options["report"] is True and options["output"] == str(out)
        assert settings["runner"]["name"] == "DirectRunner" and settings["runner"]["mode"] == "batch"
        assert settings["runner"]["options"]["dataflow_endpoint"] == \
            "https://me:<redacted>@example.com/df?token=<redacted>&x=1"
        assert settings["versions"]["apache_beam"] and settings["versions"]["python"]
    assert "hunter2" not in (out / "summary.json").read_text() + (out / "_job.json").read_text()
    report = report_data.build(str(out))
    assert (report.thresholds.error_window_s, report.thresholds.warning_count) == (10.0, 3)
    dom = _page(out / "report.html")
    assert "error window 10 s; warning above 3 and critical above 100" in dom.text
    assert "from the run's settings (summary.json)" in dom.text and "defaults" not in dom.text
    assert "DirectRunner, batch" in dom.text
    # the gap-rate chart's figures: gaps per clean row of the same 10 s window, not per nothing
    rates = [rate for stream in report.streams for rate in stream.gap_rates().values()]
    assert rates and all(0 < rate < 0.5 for rate in rates)
    starts = {report_data.iso_ms(row["window_start"]) for row in report_data.read_error_counts(str(out))}
    assert starts and all(start % 10_000 == 0 for start in starts)
    assert any(start % 60_000 for start in starts)
    # no phantom symbols: the symbols are the keys with depth data; the rejected records of an
    # unknown market or exchange are dead letters only
    assert {"unknown_market", "unsupported_exchange"} <= set(summary["dead_letters"])
    clean_keys = {":".join(k.values()) for k in readback.read_clean(str(out)).select(
        ["exchange", "market", "symbol"]).to_pylist()}
    assert {s.name for s in report.streams} == clean_keys and len(clean_keys) == summary["symbols"]
    assert len(dom.numbers("data-clean-rows")) == summary["symbols"]
    assert dom.numbers("data-dead-letter")["unknown_market"] == summary["dead_letters"]["unknown_market"]


def test_secrets_are_redacted_from_a_settings_record():
    from beam_pipeline.settings import REDACTED, effective_settings, redact

    assert redact("input", ["gs://b/x", "https://u:pw@h/f.gz"]) == ["gs://b/x", f"https://u:{REDACTED}@h/f.gz"]
    assert redact("service_account_token", "abc") == REDACTED
    assert redact("dataflow_kms_key", None) is None
    assert redact("flink_master", "http://h:8081/?api_key=s3cr3t") == f"http://h:8081/?api_key={REDACTED}"
    settings = effective_settings(PipelineOptions(["--input", "https://u:pw@h/f.gz", "--output", "o"]))
    assert settings["options"]["input"] == [f"https://u:{REDACTED}@h/f.gz"]
    assert settings["options"]["error_window"] == FeedCheckOptions.defaults().error_window


def test_streaming_panes_and_alert_levels(tmp_path):
    """A streaming window fired more than once: the highest pane is its count; an alert passed at
    two levels shows its highest."""
    import pyarrow.parquet as pq

    from transforms.tables import ALERT_SCHEMA, ERROR_COUNT_SCHEMA, dict_table

    (tmp_path / "error_counts").mkdir()
    (tmp_path / "alerts").mkdir()
    window = {"window_start": "2024-01-01T00:00:00.000Z", "window_end": "2024-01-01T00:01:00.000Z",
              "error_type": "gap_small", "exchange": "binance", "market": "spot", "symbol": "X"}
    pq.write_table(dict_table([dict(window, count=n, pane=n - 1) for n in (1, 3, 2)],
                              ERROR_COUNT_SCHEMA), tmp_path / "error_counts" / "a.parquet")
    alert = dict(window, rule="error_count", count=11, message="m", suggested_action="s")
    pq.write_table(dict_table([dict(alert, level="warning"), dict(alert, level="critical")],
                              ALERT_SCHEMA), tmp_path / "alerts" / "a.parquet")
    counts = report_data.read_error_counts(str(tmp_path))
    assert [(r["count"], r["pane"], r["window_start"]) for r in counts] == [
        (3, 2, "2024-01-01T00:00:00.000Z")]
    alerts = report_data.read_alerts(str(tmp_path))
    assert [a["level"] for a in alerts] == ["critical"]
    assert report_data.stream_of(alerts[0]) == "binance:spot:X"


def test_missing_output_is_a_usage_error(tmp_path, capsys):
    assert main(["report", "--output", str(tmp_path / "nothing")]) == 2
    assert "no summary.json" in capsys.readouterr().err


def test_a_long_span_is_aggregated_not_drawn_per_event():
    """A month of one symbol: the timeline keeps at most the bucket limit, and a bucket is
    continuous where a segment spans it, even without a row of its own."""
    stream = report_data.StreamReport("binance:spot:X")
    month = 30 * 86_400_000
    stream._extend_span(0, month)
    # two anchored segments, a silent hour inside the first, a hole of three hours between them
    stream.segment_starts = np.array([0, 15 * 86_400_000], np.int64)
    stream.segment_ends = np.array([15 * 86_400_000 - 3 * 3_600_000, month], np.int64)
    stream.segment_anchored = np.array([True, False])
    report_data._bucket_rows(stream, 720)
    assert stream.bucket_ms == 3_600_000
    assert len(stream.anchored_buckets) == 721
    hole = ~(stream.anchored_buckets | stream.unanchored_buckets)
    assert hole.sum() == 2              # the hours strictly between the segments' buckets
    assert stream.anchored_buckets[:357].all() and stream.unanchored_buckets[360:].all()


def test_union_length_and_coverage():
    union = report_data.union_length
    assert union(np.array([0, 5, 20]), np.array([10, 12, 30])) == 22
    assert union(np.array([0, 2]), np.array([10, 4])) == 10          # one inside another
    assert union(np.array([], np.int64), np.array([], np.int64)) == 0
    assert percent(0.99996) == "99.99 %" and percent(1.0) == "100.00 %"


def test_text_and_bytes_are_escaped():
    assert text('<script>alert("x")</script>') == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    shown = raw_bytes(b'</html><script>\xff\x00\n\\', limit=100)
    assert "&lt;/html&gt;&lt;script&gt;\\xff\\x00\\n\\\\" in shown
    assert not re.search(r"<(?!/?span)", shown)
    assert "5 more bytes" in raw_bytes(b"0123456789", limit=5)


def test_clean_rows_of_mixed_files_keep_the_first_written(tmp_path):
    """Streaming files hold many symbols, in several row groups; a row written again (a restore)
    counts once, as first written (files in name order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.tables import CLEAN_SCHEMA

    def rows(symbols, first_ids, segment):
        return pa.Table.from_pylist([
            {"exchange": "binance", "market": "spot", "symbol": symbol, "kind": "delta",
             "first_id": first, "last_id": first, "prev_id": None, "event_time": first * 1000,
             "recv_time": first * 1000, "bids": [], "asks": [], "segment_id": segment,
             "anchored": True} for symbol, first in zip(symbols, first_ids)], schema=CLEAN_SCHEMA)

    (tmp_path / "clean").mkdir()
    with pq.ParquetWriter(tmp_path / "clean" / "part-1.parquet", CLEAN_SCHEMA) as writer:
        writer.write_table(rows(["A", "B", "A"], [1, 1, 2], segment=1))    # row group 1
        writer.write_table(rows(["C<x>", "B"], [5, 2], segment=1))        # row group 2
    pq.write_table(rows(["B", "A", "D"], [2, 3, 9], segment=7), tmp_path / "clean" / "part-2.parquet")
    clean = report_data.read_clean_rows(str(tmp_path))
    got = sorted(zip((clean.streams[i] for i in clean.stream), clean.time.tolist(),
                     clean.segment_id.tolist()))
    assert got == [("binance:spot:A", 1000, 1), ("binance:spot:A", 2000, 1),
                   ("binance:spot:A", 3000, 7), ("binance:spot:B", 1000, 1),
                   ("binance:spot:B", 2000, 1), ("binance:spot:C<x>", 5000, 1),
                   ("binance:spot:D", 9000, 7)]


# ---- the headline and the trust grid, against references computed here from the outputs -------

MINUTE = 60_000


def _ms_of(value):
    return None if value is None else int(value.timestamp() * 1000)


def _reference_streams(out) -> dict:
    """Per key (exchange:market:symbol): its span, its segments' extents (anchored or not), its
    gaps and corrupt periods, from readback's rows, in plain Python."""
    streams = {}

    def of(row):
        name = f"{row['exchange']}:{row['market']}:{row['symbol']}"
        return streams.setdefault(name, {"times": [], "segments": {}, "gaps": [], "corrupt": []})

    for row in readback.read_clean(str(out)).to_pylist():
        time = _ms_of(row["event_time"]) if row["event_time"] is not None else _ms_of(row["recv_time"])
        stream = of(row)
        stream["times"].append(time)
        low, high, anchored = stream["segments"].get(row["segment_id"], (time, time, row["anchored"]))
        stream["segments"][row["segment_id"]] = (min(low, time), max(high, time), anchored)
    for row in readback.read(str(out), "gaps").to_pylist():
        of(row)["gaps"].append((_ms_of(row["event_time"]), row["gap_class"]))
        of(row)["times"].append(_ms_of(row["event_time"]))
    for row in readback.read(str(out), "corrupt_periods").to_pylist():
        start, end = _ms_of(row["start_time"]), _ms_of(row["end_time"])
        of(row)["corrupt"].append((start if start is not None else end, end))
        of(row)["times"] += [t for t in (start, end) if t is not None]
    for stream in streams.values():
        stream["first"], stream["last"] = min(stream["times"]), max(stream["times"])
    return streams


def _union(intervals) -> int:
    total, reach = 0, None
    for low, high in sorted(intervals):
        if reach is None or low > reach:
            total += high - low
            reach = high
        elif high > reach:
            total += high - reach
            reach = high
    return total


def test_the_headline_is_the_anchored_unbroken_share_of_each_symbols_time(faulted_run):
    out, _ = faulted_run
    dom = _page(out / "report.html")
    report = report_data.build(str(out))
    reference = _reference_streams(out)
    shown = dom.numbers("data-trusted")
    assert len(shown) == len(reference) == len(report.streams)
    for rank, stream in enumerate(report.streams, start=1):
        ref = reference[stream.name]
        anchored = [(low, high) for low, high, is_anchored in ref["segments"].values() if is_anchored]
        share = min(_union(anchored) / (ref["last"] - ref["first"]), 1.0)
        assert shown[str(rank)] == percent(share), stream.name
    # a symbol with gaps and corrupt periods is not shown as whole: its headline is below 95 %
    btc = next(i for i, s in enumerate(report.streams, 1) if s.name == "binance:spot:BTCUSDT")
    assert float(shown[str(btc)].split()[0]) < 95
    css = [v for tag, name, v in dom.attributes if tag == "td" and name == "class" and "n " in v]
    assert any("bad" in v for v in css)


def _reference_cell(ref, cell_start: int, cell_ms: int):
    """(colour, reasons) of one grid cell from its minutes, by the rules of the issue: red for a
    corrupt period, a medium, large or reset gap, or no data; amber for unanchored only or a
    small gap; green otherwise; grey outside the symbol's span."""
    first_minute, last_minute = ref["first"] // MINUTE, ref["last"] // MINUTE
    worst, reasons = "grey", set()
    rank = {"grey": 0, "green": 1, "amber": 2, "red": 3}
    for minute in range(cell_start // MINUTE, (cell_start + cell_ms) // MINUTE):
        if not first_minute <= minute <= last_minute:
            continue
        covering = [anchored for low, high, anchored in ref["segments"].values()
                    if low // MINUTE <= minute <= high // MINUTE]
        why = set()
        if any(low // MINUTE <= minute <= high // MINUTE for low, high in ref["corrupt"]):
            why.add("corrupt period")
        if any(t // MINUTE == minute and c != "small" for t, c in ref["gaps"]):
            why.add("medium, large or reset gap")
        if not covering:
            why.add("no data")
        level = "red" if why else "green"
        if covering and not any(covering):
            why.add("unanchored")
        if any(t // MINUTE == minute and c == "small" for t, c in ref["gaps"]):
            why.add("small gap")
        if level == "green" and why:
            level = "amber"
        reasons |= why
        worst = max(worst, level, key=rank.get)
    return worst, reasons


def test_the_trust_grid_equals_a_reference_computed_from_the_outputs(faulted_run):
    out, _ = faulted_run
    dom = _page(out / "report.html")
    report = report_data.build(str(out))
    grid = report.grid
    reference = _reference_streams(out)
    assert grid.cell_ms == 3_600_000                        # minutes of feed: a cell per hour
    colours = set()
    for rank, stream in enumerate(report.streams, start=1):
        for cell in range(grid.cells):
            shown = dom.trust_cells[f"{rank}:{cell}"]
            colour, reasons = _reference_cell(reference[stream.name],
                                              grid.columns[cell], grid.cell_ms)
            assert shown["class"] == f"t-{colour}", (stream.name, cell, shown, reasons)
            assert all(reason in shown["title"] for reason in reasons), (shown, reasons)
            assert shown["title"].startswith(stream.name)
            colours.add(colour)
    assert {"red", "green"} <= colours
    assert len(dom.trust_cells) == len(report.streams) * grid.cells
