"""Aggregation: the run summary, error counts per event-time window, and the alerts they raise.

Every error record (dead letter, gap, corrupt period, stall) becomes an ErrorEvent stamped with its
event time; counts are per fixed window (--error_window) by error type and symbol, in batch and
streaming alike. Alert rules turn counts into alerts.
"""
from __future__ import annotations

import typing
from collections import Counter

import apache_beam as beam
import numpy as np
from apache_beam.coders import VarIntCoder
from apache_beam.transforms import trigger, window
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import Timestamp

from beam_pipeline.core import tallies
from beam_pipeline.core.model import ErrorEvent, stream_key
from beam_pipeline.core.runtime import iso_ms
from beam_pipeline.core.reasons import GAP_ERROR_TYPES, ErrorType, GapClass
from transforms.tags import ALERTS, ERROR_COUNTS

SUMMARY_COUNTS = ("input_records", "clean_records", "ignored", "duplicates", "superseded",
                  "control")
GAP_CLASSES = tuple(gap_class.value for gap_class in GapClass)      # plain strings: summary keys
GAP_TYPES = tuple(error_type.value for error_type in GAP_ERROR_TYPES)
ACTIONS = {
    "stall": "Check the collector and the exchange connection for this symbol.",
    "gap_rate": "Check network connectivity and data source health; request snapshots.",
    "dead_letter": "Inspect dead_letter/ for this reason; fix the producer or the adapter.",
    "default": "Look at the records of this type in the window.",
}


# ---- summary ---------------------------------------------------------------------------------

IN_FLIGHT_NOTE = ("streaming: records read but not yet through the sequencer (reorder buffer, a "
                  "wait for a snapshot, or a pane not yet fired) are in flight; the summary balances "
                  "once they are written, and when the job is drained")


class _CounterFn(beam.CombineFn):
    """Tallies -> the summary. An item is (key, n), or (key, n, example) for a dead letter, the
    example (source, message) kept once per (file, reason) for the per-file report. Counts are
    summed, except gauges (such as the input lag): a "max." name keeps its largest value, a
    "latest." name its newest (at, value) pair."""

    def __init__(self, streaming: bool = False):
        self.streaming = streaming

    def create_accumulator(self):
        return Counter(), {}

    def add_input(self, acc, item):
        counts, examples = acc
        if isinstance(item[0], str) and item[0].startswith(GAUGES):
            counts[item[0]] = max(counts[item[0]], item[1]) if item[0] in counts else item[1]
        else:
            counts[item[0]] += item[1]
        if len(item) > 2 and isinstance(item[0], tuple):
            examples.setdefault(item[0], item[2])
        return acc

    def merge_accumulators(self, accs):
        total, examples = Counter(), {}
        for counts, found in accs:
            for key, n in counts.items():
                self.add_input((total, examples), (key, n))
            for key, example in found.items():
                examples.setdefault(key, example)
        return total, examples

    def extract_output(self, acc):
        return format_summary(*acc, streaming=self.streaming)


GAUGES = ("max.", "latest.")
FILE_COLUMNS = ("records", "clean", "ignored", "duplicates", "superseded", "dead")
_FILE_COLUMN_OF = {tallies.INPUT_RECORDS: "records", tallies.CLEAN_RECORDS: "clean",
                   tallies.IGNORED: "ignored", tallies.DUPLICATES: "duplicates",
                   tallies.SUPERSEDED: "superseded"}
READ_ERROR = tallies.DEAD_LETTERS + "read_error"    # a file's read errors (its damage)
EXAMPLE_REASONS = 3          # per failing file: its top reasons, one example each
EXAMPLE_FILES = 100          # examples are kept for this many files, most dead letters first


def format_summary(counts: Counter, examples: dict = None, streaming: bool = False) -> dict:
    """Tallies (keys: name, or (name, file)) -> the summary dict, with a per-file table."""
    totals, by_file, formats, skipped, unfinished = Counter(), {}, {}, [], set()
    gauges = {key: counts[key] for key in counts if isinstance(key, str) and key.startswith(GAUGES)}
    for key, n in counts.items():
        if key in gauges:
            continue
        name, file = (key, None) if isinstance(key, str) else key
        totals[name] += n
        if file is None:
            continue
        if name == tallies.SKIPPED_FILES:
            skipped.append(file)
            continue
        if name == tallies.STILL_BEING_WRITTEN:
            unfinished.add(file)
            continue
        row = by_file.setdefault(file, Counter())
        if (name.startswith(tallies.IGNORED_BY) or name == tallies.UNVERIFIED
                or name == tallies.CONNECTION_BREAKS):
            row[name] += n
        elif name.startswith(tallies.FORMAT):
            formats[file] = name[len(tallies.FORMAT):]
        elif name.startswith(tallies.DEAD_LETTERS):
            row["dead"] += n
            row[name] += n
        elif name in _FILE_COLUMN_OF:
            row[_FILE_COLUMN_OF[name]] += n
    summary = {name: totals.get(name, 0) for name in SUMMARY_COUNTS}
    summary["dead_letters"] = {name.split(".", 1)[1]: n for name, n in sorted(totals.items())
                               if name.startswith(tallies.DEAD_LETTERS)}
    summary["gaps"] = {cls: totals.get(f"gaps.{cls}", 0) for cls in GAP_CLASSES}
    summary["corrupt_periods"] = totals.get("corrupt_periods", 0)
    summary["symbols"] = totals.get(tallies.SYMBOLS, 0)
    summary["reconnects"] = totals.get(tallies.RECONNECTS, 0)
    book_checks = {name[len(tallies.BOOK_CHECKS):]: n for name, n in sorted(totals.items())
                   if name.startswith(tallies.BOOK_CHECKS)}
    if book_checks:      # --book_checks: what they counted (not record outcomes: no conservation)
        summary["book_checks"] = book_checks
    if "latest.input_lag_ms" in gauges:          # streaming from Pub/Sub: backpressure figures
        summary["input_lag_s"] = gauges["latest.input_lag_ms"][1] / 1000
        summary["input_lag_max_s"] = gauges["max.input_lag_ms"] / 1000
    summary["balanced"] = is_balanced(summary)
    if streaming:   # a running job is unbalanced by the records on their way: say so, with how many
        in_flight = summary["input_records"] - accounted(summary)
        summary["in_flight"] = in_flight > 0
        summary["in_flight_records"] = in_flight
        if in_flight:
            summary["note"] = IN_FLIGHT_NOTE
    summary["files"] = [dict({"file": file, "format": formats.get(file)},
                             **{column: by_file[file].get(column, 0) for column in FILE_COLUMNS},
                             **_ignored_and_unverified(by_file[file]))
                        for file in sorted(by_file)]
    summary.update(_ignored_and_unverified(totals))
    summary["file_dead_letters"] = _file_reasons(by_file, examples or {})
    summary["skipped_files"] = sorted(skipped)
    if unfinished:   # only when there are: a young file's torn tail was left out (--quiet_seconds)
        summary["still_being_written"] = sorted(unfinished)
    damaged = {file: row[READ_ERROR] for file, row in sorted(by_file.items()) if row.get(READ_ERROR)}
    if damaged:      # only when there are: files cut short (a torn gzip member, an unreadable block)
        summary["read_error_files"] = damaged
    return summary


def _ignored_and_unverified(counts) -> dict:
    """Present only where there are any (venues other than Binance): `ignored_reasons`, what was
    ignored by reason (subscription, heartbeat, status, a channel's name, other_stream), and
    `unverified_records`, the decoded events whose continuity no rule could check (venues and
    captures without per-key ids: never clean and green until the book checks exist), and
    `connection_breaks`, the skips in a connection's own numbers (each a gap of every key it
    carried)."""
    out = {}
    reasons = {name[len(tallies.IGNORED_BY):]: n for name, n in sorted(counts.items())
               if name.startswith(tallies.IGNORED_BY) and n}
    if reasons and set(reasons) != {"other_stream"}:
        out["ignored_reasons"] = reasons
    if counts.get(tallies.UNVERIFIED):
        out["unverified_records"] = counts[tallies.UNVERIFIED]
    if counts.get(tallies.CONNECTION_BREAKS):
        out["connection_breaks"] = counts[tallies.CONNECTION_BREAKS]
    return out


def _file_reasons(by_file: dict, examples: dict) -> dict:
    """file -> its top dead-letter reasons, each with its count and one example (source, message),
    for the files with the most dead letters."""
    worst = sorted((file for file, row in by_file.items() if row["dead"]),
                   key=lambda file: (-by_file[file]["dead"], file))[:EXAMPLE_FILES]
    out = {}
    for file in worst:
        reasons = sorted(((name, n) for name, n in by_file[file].items()
                          if name.startswith(tallies.DEAD_LETTERS)), key=lambda kv: (-kv[1], kv[0]))
        out[file] = [{"reason": name[len(tallies.DEAD_LETTERS):], "count": n,
                      "example": _example(examples.get((name, file)))}
                     for name, n in reasons[:EXAMPLE_REASONS]]
    return out


def _example(found):
    if found is None:
        return None
    source, message = found
    return {"source": source, "message": message}


def dead_letter_tally(letter):
    """A dead letter -> its tally item: counted by reason and file, with itself as an example."""
    name = tallies.DEAD_LETTERS + letter.reason
    file = tallies.file_of_source(letter.source)
    if file is None:
        return name, 1
    return (name, file), 1, (letter.source, letter.message[:300])


def accounted(summary: dict) -> int:
    return (summary["clean_records"] + summary["ignored"] + summary["duplicates"]
            + summary["superseded"] + summary.get("control", 0)
            + sum(summary["dead_letters"].values()))


def is_balanced(summary: dict) -> bool:
    """The conservation law: every input record is accounted for exactly once (clean, ignored,
    duplicate, superseded, control or dead-lettered)."""
    return summary["input_records"] == accounted(summary)


def bad_record_rate(summary: dict) -> float:
    return sum(summary["dead_letters"].values()) / max(summary["input_records"], 1)


class BadRecordRateExceeded(RuntimeError):
    pass


class EnforceBadRecordRate(beam.DoFn):
    """Streaming: fail the job once dead letters pass --max_bad_record_rate of the input (like
    Beam's with_exception_handling threshold). Batch runs check the final summary instead."""

    def __init__(self, limit: float):
        self.limit = limit

    def process(self, summary: dict):
        rate = bad_record_rate(summary)
        if rate > self.limit:
            raise BadRecordRateExceeded(
                f"bad-record rate {rate:.2%} of {summary['input_records']} input records exceeds "
                f"--max_bad_record_rate={self.limit:.2%}; dead letters: {summary['dead_letters']}")
        yield summary


class Summarize(beam.PTransform):
    """Tallies, dead letters, gaps and corrupt periods -> one summary dict (running in streaming)."""

    def __init__(self, streaming: bool):
        super().__init__()
        self.streaming = streaming

    def expand(self, parts):
        tallies, dead_letters, gaps, corrupt_periods = parts
        counts = (
            tallies,
            dead_letters | "DeadLetterCounts" >> beam.Map(dead_letter_tally),
            gaps | "GapCounts" >> beam.Map(lambda g: (f"gaps.{g.gap_class}", 1)),
            corrupt_periods | "CorruptCounts" >> beam.Map(lambda c: ("corrupt_periods", 1)),
        ) | "AllCounts" >> beam.Flatten()
        if self.streaming:
            counts = counts | "Running" >> beam.WindowInto(
                window.GlobalWindows(), trigger=trigger.Repeatedly(trigger.AfterProcessingTime(5)),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING)
            return counts | "Summary" >> beam.CombineGlobally(_CounterFn(True)).without_defaults()
        return counts | "Summary" >> beam.CombineGlobally(_CounterFn())


# ---- error counts and alerts -----------------------------------------------------------------

def dead_letter_error(letter) -> ErrorEvent:
    """Counted at the letter's own time (event, else receive, else ingest: DeadLetter.time), the
    base gaps and corrupt periods are counted in too."""
    return ErrorEvent(ErrorType.of_dead_letter(letter.reason), letter.symbol or "-", letter.time)


def _stamped(error: ErrorEvent):
    return window.TimestampedValue(error, error.event_time / 1000.0)


def _clean_counts(row_times, window_ms: int):
    """RowTimes (symbol, int64 times) -> ((symbol, window start), count), stamped at the window
    start."""
    symbol, times = row_times
    times = np.frombuffer(times, dtype=np.int64)
    starts = (times - times % window_ms).tolist()          # times are >= 0
    for start, count in Counter(starts).items():
        yield window.TimestampedValue((symbol, count), start / 1000.0)


class _WithWindow(beam.DoFn):
    def process(self, element, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        (error_type, stream), count = element
        # Streaming fires a window early and again later: `pane` tells a reader which is newest.
        yield count_row(error_type, stream, win, count, pane.index if pane else 0)


def count_row(error_type: str, stream: str, win, count: int, pane: int = 0) -> dict:
    """An error_counts/ row: the key columns as in clean/ (null where the records had none)."""
    exchange, market, symbol = stream_key(stream)
    return {"exchange": exchange, "market": market, "symbol": symbol, "error_type": error_type,
            "window_start": _iso(win.start), "window_end": _iso(win.end), "count": count,
            "pane": pane}


def stream_of_row(row: dict) -> str:
    """exchange:market:symbol of an output row, for messages ("-" when it has none)."""
    parts = [row.get("exchange"), row.get("market"), row.get("symbol")]
    return ":".join(part or "?" for part in parts) if any(parts) else "-"


def _iso(ts: Timestamp) -> str:
    return iso_ms(ts.micros // 1000)


class AlertRules:
    """Thresholds from the options; each rule turns a window's counts into zero or more alerts."""

    def __init__(self, warning_count: int, critical_count: int, gap_rate: float):
        self.warning_count, self.critical_count, self.gap_rate = warning_count, critical_count, gap_rate

    def for_count(self, row: dict):
        error_type, count = row["error_type"], row["count"]
        if error_type == ErrorType.STALL:
            yield self._alert("critical", "stall", row, count,
                              f"{stream_of_row(row)} silent past the stall timeout", "stall")
        elif error_type == ErrorType.STALL_RESOLVED:
            yield self._alert("info", "stall_resolved", row, count,
                              f"{stream_of_row(row)} is receiving data again", "default")
        elif count > self.critical_count:
            yield self._alert("critical", "error_count", row, count,
                              f"{count} {error_type} in one window (> {self.critical_count})",
                              _action_of(error_type))
        elif count > self.warning_count:
            yield self._alert("warning", "error_count", row, count,
                              f"{count} {error_type} in one window (> {self.warning_count})",
                              _action_of(error_type))

    def for_gap_rate(self, row: dict, gaps: int, events: int):
        rate = gaps / max(events, 1)
        if gaps and rate > self.gap_rate:
            yield self._alert("critical", "gap_rate", row, gaps,
                              f"gap rate {rate:.2%} ({gaps} gaps / {events} events) "
                              f"exceeds {self.gap_rate:.2%}", "gap_rate")

    @staticmethod
    def _alert(level, rule, row, count, message, action):
        """An alerts/ row (and alerts-topic message): the key columns and error type of the count
        that raised it."""
        return {"exchange": row["exchange"], "market": row["market"], "symbol": row["symbol"],
                "error_type": row["error_type"], "level": level, "rule": rule,
                "window_start": row["window_start"], "window_end": row["window_end"],
                "count": count, "message": message, "suggested_action": ACTIONS[action]}


def alert_id(alert: dict) -> tuple:
    """What one alert is about: its rule, error type, key and window (levels may rise)."""
    return (alert["rule"], alert["error_type"], alert["exchange"], alert["market"],
            alert["symbol"], alert["window_start"])


def _action_of(error_type: str) -> str:
    if error_type.startswith("dead_letter:"):
        return "dead_letter"
    return "gap_rate" if error_type in GAP_TYPES else "default"


class _GapRateAlerts(beam.DoFn):
    def __init__(self, rules: AlertRules):
        self.rules = rules

    def process(self, element, win=beam.DoFn.WindowParam):
        stream, grouped = element
        gaps, events = sum(grouped["gaps"]), sum(grouped["events"])
        row = count_row("gaps", stream, win, gaps)
        yield from self.rules.for_gap_rate(row, gaps, events)


class _OncePerLevel(beam.DoFn):
    """Early firings repeat a window's alert as its count grows: pass each (rule, key, window)
    only when its level rises."""

    LEVEL = ReadModifyWriteStateSpec("level", VarIntCoder())
    RANK = {"info": 0, "warning": 1, "critical": 2}

    def process(self, element, level=beam.DoFn.StateParam(LEVEL)):
        _, alert = element
        rank = self.RANK[alert["level"]]
        shown = level.read()
        if shown is None or rank > shown:
            level.write(rank)
            yield alert


class CountErrorsAndAlert(beam.PTransform):
    """ErrorEvents and the clean rows' RowTimes (transforms/tables.py) -> outputs `error_counts`
    rows and `alerts`.

    In streaming, error counts fire early (on every new error) so an alert is written within
    moments of the event that caused it, not when the window closes."""

    def __init__(self, window_seconds: float, rules: AlertRules, allowed_lateness: float,
                 streaming: bool):
        super().__init__()
        self.window_seconds = window_seconds
        self.rules = rules
        self.allowed_lateness = allowed_lateness
        self.streaming = streaming

    def _windowed(self, label, pcoll):
        fire = None
        if self.streaming:   # fire a window on every new record while it is open, and on each late one
            fire = trigger.AfterWatermark(early=trigger.AfterCount(1),
                                          late=trigger.AfterCount(1))
        return pcoll | label >> beam.WindowInto(
            window.FixedWindows(self.window_seconds), trigger=fire,
            allowed_lateness=self.allowed_lateness,
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING)

    def expand(self, parts):
        errors, clean_times = parts
        stamped = errors | "Stamp" >> beam.Map(_stamped)
        windowed_errors = self._windowed("WindowErrors", stamped)
        counts = (windowed_errors
                  # str(): a plain string key (Beam's key coder would pickle an ErrorType)
                  | "ByTypeAndSymbol" >> beam.Map(lambda e: ((str(e.error_type), e.symbol), 1))
                  | "Count" >> beam.CombinePerKey(sum)
                  | "Rows" >> beam.ParDo(_WithWindow()))
        count_alerts = counts | "CountRules" >> beam.FlatMap(self.rules.for_count)

        window_ms = int(self.window_seconds * 1000)
        events = self._windowed("WindowEvents", clean_times | "EventCounts" >> beam.FlatMap(
            _clean_counts, window_ms)) | "EventsPerSymbol" >> beam.CombinePerKey(sum)
        gaps = (windowed_errors
                | "OnlyGaps" >> beam.Filter(lambda e: e.error_type in GAP_TYPES)
                | "GapsBySymbol" >> beam.Map(lambda e: (e.symbol, 1))
                | "GapsPerSymbol" >> beam.CombinePerKey(sum))
        rate_alerts = ({"gaps": gaps, "events": events}
                       | "JoinGapsEvents" >> beam.CoGroupByKey()
                       | "GapRate" >> beam.ParDo(_GapRateAlerts(self.rules)))
        alerts = ((count_alerts, rate_alerts)
                  | "AllAlerts" >> beam.Flatten()
                  | "KeyAlerts" >> beam.Map(lambda a: (repr(alert_id(a)), a))
                  .with_output_types(typing.Tuple[str, dict])
                  | "OncePerLevel" >> beam.ParDo(_OncePerLevel()))
        return {ERROR_COUNTS: counts, ALERTS: alerts}
