"""Tests of transforms/aggregate.py: Summarize and CountErrorsAndAlert on Created inputs (batch)."""
import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipeline.core.model import DELTA, SNAPSHOT, CorruptPeriod, DeadLetter, ErrorEvent, Event, Gap
from tests.tooling.synthetic import PER_FILE_KEYS, Expected
from transforms.tables import clean_table, table_row_times
from transforms.aggregate import (ACTIONS, AlertRules, CountErrorsAndAlert, Summarize,
                                  dead_letter_error, format_summary, is_balanced)

# ---- Summarize --------------------------------------------------------------------------------

T = 1_700_000_000_000


def letter(reason):
    return DeadLetter(reason, "m", "decode", b"{", "f:1", T)


def gap(cls):
    return Gap("binance", "spot", "BTCUSDT", 10, 20, 9, cls, "continue_with_warning", "continued", T)


CORRUPT = CorruptPeriod("binance", "spot", "BTCUSDT", 11, 19, T - 100, T, "large_gap")


def summarize(p, label, tallies, letters, gaps, corrupt):
    parts = tuple(p | f"{label}{name}" >> beam.Create(values) for name, values in
                  (("Tallies", tallies), ("Letters", letters), ("Gaps", gaps),
                   ("Corrupt", corrupt)))
    return parts | label >> Summarize(streaming=False)


def test_summarize_balanced_unbalanced_and_empty():
    with TestPipeline() as p:
        balanced = summarize(
            p, "Balanced",
            [("input_records", 25), ("input_records", 15), ("clean_records", 20),
             ("clean_records", 10), ("ignored", 3), ("duplicates", 2), ("superseded", 1),
             ("symbols", 4)],
            [letter("bad_json")] * 3 + [letter("invalid_ids")],
            [gap("small"), gap("small"), gap("medium")], [CORRUPT])
        assert_that(balanced, equal_to([{
            "input_records": 40, "clean_records": 30, "ignored": 3, "duplicates": 2,
            "superseded": 1, "control": 0, "dead_letters": {"bad_json": 3, "invalid_ids": 1},
            "gaps": {"small": 2, "medium": 1, "large": 0, "reset": 0}, "corrupt_periods": 1, "symbols": 4,
            "reconnects": 0, "balanced": True,
            # the dead letters' source "f:1" names their file: it gets a row
            "files": [{"file": "f", "format": None, "records": 0, "clean": 0, "ignored": 0,
                       "duplicates": 0, "superseded": 0, "dead": 4}],
            "file_dead_letters": {"f": [
                {"reason": "bad_json", "count": 3, "example": {"source": "f:1", "message": "m"}},
                {"reason": "invalid_ids", "count": 1, "example": {"source": "f:1", "message": "m"}}]},
            "skipped_files": []}]), label="CheckBalanced")

        # one record unaccounted for: 10 in, 8 clean + 1 dead letter
        missing = summarize(p, "Missing", [("input_records", 10), ("clean_records", 8)],
                            [letter("read_error")], [gap("large")], [CORRUPT, CORRUPT])
        assert_that(missing, equal_to([{
            "input_records": 10, "clean_records": 8, "ignored": 0, "duplicates": 0,
            "superseded": 0, "control": 0, "dead_letters": {"read_error": 1},
            "gaps": {"small": 0, "medium": 0, "large": 1, "reset": 0}, "corrupt_periods": 2, "symbols": 0,
            "reconnects": 0, "balanced": False,
            "files": [{"file": "f", "format": None, "records": 0, "clean": 0, "ignored": 0,
                       "duplicates": 0, "superseded": 0, "dead": 1}],
            "file_dead_letters": {"f": [
                {"reason": "read_error", "count": 1, "example": {"source": "f:1", "message": "m"}}]},
            "skipped_files": [], "read_error_files": {"f": 1}}]), label="CheckMissing")

        # counted twice: more accounted for than read
        twice = summarize(p, "Twice", [("input_records", 5), ("clean_records", 5), ("ignored", 1)],
                          [], [], [])
        assert_that(twice | beam.Map(lambda s: s["balanced"]), equal_to([False]),
                    label="CheckTwice")

        empty = summarize(p, "Empty", [], [], [], [])
        assert_that(empty, equal_to([{
            "input_records": 0, "clean_records": 0, "ignored": 0, "duplicates": 0,
            "superseded": 0, "control": 0, "dead_letters": {}, "gaps": {"small": 0, "medium": 0, "large": 0, "reset": 0},
            "corrupt_periods": 0, "symbols": 0, "reconnects": 0, "balanced": True, "files": [],
            "file_dead_letters": {}, "skipped_files": []}]), label="CheckEmpty")


def test_summary_counts_per_file_and_keeps_one_example_per_file_and_reason():
    from collections import Counter

    counts = Counter({("input_records", "a.gz"): 10, ("clean_records", "a.gz"): 6,
                      ("ignored", "a.gz"): 2, ("duplicates", "a.gz"): 1, ("superseded", "a.gz"): 1,
                      ("format.hftbacktest", "a.gz"): 1, ("input_records", "b"): 3,
                      ("dead_letters.bad_json", "b"): 2, ("dead_letters.unknown_format", "b"): 1,
                      ("format.unknown", "b"): 1, ("reconnects", "a.gz"): 2,
                      ("skipped_files", "README.md"): 1, "symbols": 1})
    examples = {(("dead_letters.bad_json", "b")): ("b:1", "not JSON"),
                (("dead_letters.unknown_format", "b")): ("b:3", "no input format")}
    summary = format_summary(counts, examples)
    assert (summary["input_records"], summary["clean_records"], summary["reconnects"]) == (13, 6, 2)
    assert summary["dead_letters"] == {"bad_json": 2, "unknown_format": 1} and summary["balanced"]
    assert summary["files"] == [
        {"file": "a.gz", "format": "hftbacktest", "records": 10, "clean": 6, "ignored": 2,
         "duplicates": 1, "superseded": 1, "dead": 0},
        {"file": "b", "format": "unknown", "records": 3, "clean": 0, "ignored": 0,
         "duplicates": 0, "superseded": 0, "dead": 3}]
    assert summary["file_dead_letters"] == {"b": [
        {"reason": "bad_json", "count": 2, "example": {"source": "b:1", "message": "not JSON"}},
        {"reason": "unknown_format", "count": 1,
         "example": {"source": "b:3", "message": "no input format"}}]}
    assert summary["skipped_files"] == ["README.md"]


def test_summary_has_the_fields_of_the_synthetic_expectation():
    from collections import Counter

    summary = format_summary(Counter({"input_records": 2, "clean_records": 1,
                                      "dead_letters.bad_json": 1}))
    # still_being_written and read_error_files are there only when there are such files
    assert set(summary) == (set(Expected().summary()) | {"balanced"}
                            | set(PER_FILE_KEYS) - {"still_being_written", "read_error_files"})
    assert summary["dead_letters"] == {"bad_json": 1} and summary["balanced"] is True
    assert not is_balanced(dict(summary, ignored=1))


# ---- CountErrorsAndAlert ----------------------------------------------------------------------

W0 = 1_700_000_040_000                    # a window start: a multiple of 60 s
WINDOWS = {-1: ("2023-11-14T22:13:00.000Z", "2023-11-14T22:14:00.000Z"),
           0: ("2023-11-14T22:14:00.000Z", "2023-11-14T22:15:00.000Z"),
           1: ("2023-11-14T22:15:00.000Z", "2023-11-14T22:16:00.000Z")}
S1, S2, S3 = "binance:spot:BTCUSDT", "binance:usdm:SOLUSDT", "binance:spot:ETHUSDT"


def errors(error_type, symbol, count, start=W0, step=500):
    return [ErrorEvent(error_type, symbol, start + i * step) for i in range(count)]


def key_columns(stream):
    """The exchange, market and symbol columns of a stream name, all None for "-"."""
    names = ("exchange", "market", "symbol")
    return dict(zip(names, stream.split(":"))) if stream != "-" else dict.fromkeys(names)


def row(index, error_type, symbol, count):
    start, end = WINDOWS[index]
    return {**key_columns(symbol), "window_start": start, "window_end": end,
            "error_type": error_type, "count": count}


def alert(index, level, rule, key, count, message, action):
    """An alert of a count: `key` is <error type>/<stream>, split into its columns."""
    start, end = WINDOWS[index]
    error_type, stream = key.split("/")
    return {**key_columns(stream), "error_type": error_type, "level": level, "rule": rule,
            "window_start": start, "window_end": end, "count": count, "message": message,
            "suggested_action": ACTIONS[action]}


def count_rows(counts):
    """error_counts rows without the pane index (always 0 in batch; checked separately)."""
    return counts | "Rows" >> beam.Map(lambda r: {k: v for k, v in r.items() if k != "pane"})


def clean_rows(symbol, times, kind=DELTA):
    """The RowTimes of a clean table as the streaming sequencer emits it."""
    exchange, market, name = symbol.split(":")
    [row_times] = table_row_times(clean_table([(Event(exchange, market, name, kind, 1, 1, None,
                               t if kind == DELTA else None, t, b"[]", b"[]", "range_plus_one"), 0, True)
                        for t in times]))
    return row_times


def test_error_counts_per_window_and_count_alerts():
    errs = (errors("dead_letter:bad_json", "-", 10, step=5_999)          # 10: no alert
            + errors("dead_letter:invalid_ids", S1, 11, step=5_399)      # 11: warning
            + errors("corrupt_period", S1, 100, step=599)                # 100: warning
            + errors("dead_letter:bad_price_level", S2, 101, step=590)   # 101: critical
            + [ErrorEvent("stall", S3, W0 + 5)]                          # any stall: critical
            + [ErrorEvent("stall_resolved", S3, W0 + 30_000)]
            # window boundaries: the last ms of a window, the first of the next
            + [ErrorEvent("corrupt_period", S3, W0 - 1), ErrorEvent("corrupt_period", S3, W0),
               ErrorEvent("corrupt_period", S3, W0 + 59_999),
               ErrorEvent("corrupt_period", S3, W0 + 60_000)])
    clean = [clean_rows(S1, range(W0, W0 + 60_000, 1000))]   # no gaps: no gap-rate alert
    with TestPipeline() as p:
        out = ((p | "Errors" >> beam.Create(errs), p | "Clean" >> beam.Create(clean))
               | CountErrorsAndAlert(60, AlertRules(10, 100, 0.001), allowed_lateness=0,
                                     streaming=False))
        assert_that(count_rows(out["error_counts"]), equal_to([
            row(0, "dead_letter:bad_json", "-", 10),
            row(0, "dead_letter:invalid_ids", S1, 11),
            row(0, "corrupt_period", S1, 100),
            row(0, "dead_letter:bad_price_level", S2, 101),
            row(0, "stall", S3, 1),
            row(0, "stall_resolved", S3, 1),
            row(-1, "corrupt_period", S3, 1),
            row(0, "corrupt_period", S3, 2),
            row(1, "corrupt_period", S3, 1),
        ]), label="Counts")
        assert_that(out["error_counts"] | "Panes" >> beam.Map(lambda r: r.get("pane", 0)),
                    equal_to([0] * 9), label="Panes")
        assert_that(out["alerts"], equal_to([
            alert(0, "warning", "error_count", f"dead_letter:invalid_ids/{S1}", 11,
                  "11 dead_letter:invalid_ids in one window (> 10)", "dead_letter"),
            alert(0, "warning", "error_count", f"corrupt_period/{S1}", 100,
                  "100 corrupt_period in one window (> 10)", "default"),
            alert(0, "critical", "error_count", f"dead_letter:bad_price_level/{S2}", 101,
                  "101 dead_letter:bad_price_level in one window (> 100)", "dead_letter"),
            alert(0, "critical", "stall", f"stall/{S3}", 1,
                  f"{S3} silent past the stall timeout", "stall"),
            alert(0, "info", "stall_resolved", f"stall_resolved/{S3}", 1,
                  f"{S3} is receiving data again", "default"),
        ]), label="Alerts")


def test_gap_rate_alerts():
    errs = ([ErrorEvent("gap_small", S1, W0 + 30_000)]                      # 1 / 999: raised
            + [ErrorEvent("gap_medium", S2, W0 + 59_999)]                   # 1 / 1000: not raised
            + [ErrorEvent("gap_small", S3, W0 + 1), ErrorEvent("gap_large", S3, W0 + 2)]  # 2 / 1999
            + [ErrorEvent("gap_small", S1, W0 + 60_000)]                    # 1 / 0 events: raised
            + [ErrorEvent("dead_letter:bad_json", S2, W0 + 1)] * 5)         # not a gap
    clean = [
        clean_rows(S1, range(W0, W0 + 999 * 60, 60)),
        # S2: 1000 events in window 0, the last on its last ms; the next ms is window 1
        clean_rows(S2, list(range(W0, W0 + 998 * 60, 60)) + [W0 + 59_999, W0 + 60_000]),
        clean_rows(S2, [W0 + 59_000], kind=SNAPSHOT),                       # timed by recv_time
        clean_rows(S3, range(W0, W0 + 1999 * 30, 30)),
    ]
    with TestPipeline() as p:
        out = ((p | "Errors" >> beam.Create(errs), p | "Clean" >> beam.Create(clean))
               | CountErrorsAndAlert(60, AlertRules(10, 100, 0.001), allowed_lateness=0,
                                     streaming=False))
        assert_that(out["alerts"] | beam.Map(lambda a: (
            a["level"], a["rule"], f"{a['error_type']}/{a['exchange']}:{a['market']}:{a['symbol']}",
            a["window_start"], a["count"],
            a["suggested_action"], a["message"].split(" (")[1].split(")")[0])), equal_to([
                ("critical", "gap_rate", f"gaps/{S1}", WINDOWS[0][0], 1, ACTIONS["gap_rate"],
                 "1 gaps / 999 events"),
                ("critical", "gap_rate", f"gaps/{S3}", WINDOWS[0][0], 2, ACTIONS["gap_rate"],
                 "2 gaps / 1999 events"),
                ("critical", "gap_rate", f"gaps/{S1}", WINDOWS[1][0], 1, ACTIONS["gap_rate"],
                 "1 gaps / 0 events"),
            ]), label="Alerts")
        assert_that(count_rows(out["error_counts"]), equal_to([
            row(0, "gap_small", S1, 1), row(0, "gap_medium", S2, 1), row(0, "gap_small", S3, 1),
            row(0, "gap_large", S3, 1), row(1, "gap_small", S1, 1),
            row(0, "dead_letter:bad_json", S2, 5)]), label="Counts")


def test_alert_rules_thresholds():
    rules = AlertRules(warning_count=10, critical_count=100, gap_rate=0.001)
    base = {"window_start": "a", "window_end": "b", **key_columns(S1)}
    levels = {count: [a["level"] for a in rules.for_count(dict(base, error_type="gap_small",
                                                               count=count))]
              for count in (1, 10, 11, 100, 101)}
    assert levels == {1: [], 10: [], 11: ["warning"], 100: ["warning"], 101: ["critical"]}
    assert [a["level"] for a in rules.for_count(dict(base, error_type="stall", count=1))] == [
        "critical"]
    row_ = dict(base, error_type="gaps")
    assert list(rules.for_gap_rate(row_, 1, 1000)) == []
    assert list(rules.for_gap_rate(row_, 0, 0)) == []
    assert [a["count"] for a in rules.for_gap_rate(row_, 2, 1000)] == [2]
    strict = AlertRules(warning_count=0, critical_count=1, gap_rate=0.5)
    assert [a["level"] for a in strict.for_count(dict(base, error_type="x", count=1))] == [
        "warning"]
    assert list(strict.for_gap_rate(row_, 1, 2)) == []


def test_dead_letter_error():
    assert dead_letter_error(letter("bad_json")) == ErrorEvent("dead_letter:bad_json", "-", T)
    known = DeadLetter("late", "m", "sequence", b"", "f:2", T, symbol=S1, first_id=3, last_id=4)
    assert dead_letter_error(known) == ErrorEvent("dead_letter:late", S1, T)
    # one time base: the record's own time when it yielded one, the ingest time only without
    dated = DeadLetter("invalid_ids", "m", "decode", b"{}", "f:3", T, symbol=S1, first_id=9,
                       last_id=6, event_time=W0)
    assert dead_letter_error(dated) == ErrorEvent("dead_letter:invalid_ids", S1, W0)
