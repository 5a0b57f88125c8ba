"""Backpressure made visible: the job's input lag (now minus the publish time of the messages it is
reading) as a Beam metric, a summary figure and alerts.

Per bundle the largest lag is kept (one element per bundle, not per message); one stateful DoFn on a
single key turns the samples into a level (ok, warning, critical) and emits an alert when the level
changes, a `backpressure_resolved` alert when it falls back below --lag_warning. A job whose input
goes quiet has caught up: after a few seconds without messages its lag is taken as zero.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from beam_pipeline.core.runtime import iso_ms, now_ms

OK, WARNING, CRITICAL = 0, 1, 2
LEVEL_NAMES = {WARNING: "warning", CRITICAL: "critical"}
QUIET_S = 5          # no message for this long: the input has caught up (lag 0)
ACTION = ("The job reads older messages than it should: it is behind its input. Give it more CPU "
          "or workers, or look for a slow stage; a backlog after downtime drains by itself.")


class _LargestLagPerBundle(beam.DoFn):
    """(publish ms, ingest ms) per message -> the bundle's largest lag, once per bundle."""

    def setup(self):
        self.lag_metric = Metrics.distribution("feedcheck", "input_lag_ms")
        self.current = Metrics.gauge("feedcheck", "input_lag_ms_now")

    def start_bundle(self):
        self.largest = None

    def process(self, sample):
        publish, ingest = sample
        lag = max(ingest - publish, 0)
        self.lag_metric.update(lag)
        if self.largest is None or lag > self.largest[0]:
            self.largest = (lag, ingest)

    def finish_bundle(self):
        if self.largest is not None:
            self.current.set(self.largest[0])
            yield WindowedValue((None, self.largest), Timestamp.of(self.largest[1] / 1000),
                                [GlobalWindow()])


# A backpressure alert is the job's, not a symbol's: no key, error type input_lag.
NO_KEY = {"exchange": None, "market": None, "symbol": None, "error_type": "input_lag"}


def level_of(lag_ms: int, warning_ms: int, critical_ms: int) -> int:
    return CRITICAL if lag_ms > critical_ms else WARNING if lag_ms > warning_ms else OK


def backpressure_alert(level: int, lag_ms: int, at_ms: int, warning_ms: int, critical_ms: int) -> dict:
    """An alert in the shape of the error-count alerts (alerts/ and the alerts topic)."""
    when = iso_ms(at_ms)
    if level == OK:
        return {**NO_KEY, "level": "info", "rule": "backpressure_resolved",
                "window_start": when, "window_end": when, "count": lag_ms // 1000,
                "message": f"input lag back to {lag_ms / 1000:.1f} s (<= {warning_ms / 1000:g} s)",
                "suggested_action": "None: the job has caught up with its input."}
    threshold = critical_ms if level == CRITICAL else warning_ms
    return {**NO_KEY, "level": LEVEL_NAMES[level], "rule": "backpressure",
            "window_start": when, "window_end": when, "count": lag_ms // 1000,
            "message": f"input lag {lag_ms / 1000:.1f} s (> {threshold / 1000:g} s): the job reads "
                       f"messages published that long ago", "suggested_action": ACTION}


class _LagLevels(beam.DoFn):
    """(None, (lag ms, at ms)) -> alerts on level changes (main) and ("latest.input_lag_ms",
    (at ms, lag ms)) / ("max.input_lag_ms", lag ms) tallies for the summary (`tally`)."""

    LEVEL = ReadModifyWriteStateSpec("level", VarIntCoder())
    QUIET = TimerSpec("quiet", TimeDomain.REAL_TIME)

    def __init__(self, warning_s: float, critical_s: float):
        self.warning_ms, self.critical_ms = int(warning_s * 1000), int(critical_s * 1000)

    def process(self, element, level=beam.DoFn.StateParam(LEVEL),
                quiet=beam.DoFn.TimerParam(QUIET)):
        _, (lag, at) = element
        quiet.set(Timestamp.of(at / 1000) + Duration(seconds=QUIET_S))
        yield from self._observe(lag, at, level)

    @on_timer(QUIET)
    def caught_up(self, level=beam.DoFn.StateParam(LEVEL)):
        yield from self._observe(0, now_ms(), level)

    def _observe(self, lag, at, level):
        yield beam.pvalue.TaggedOutput("tally", ("latest.input_lag_ms", (at, lag)))
        yield beam.pvalue.TaggedOutput("tally", ("max.input_lag_ms", lag))
        new = level_of(lag, self.warning_ms, self.critical_ms)
        old = level.read() or OK
        if new != old:
            level.write(new)
            yield backpressure_alert(new, lag, at, self.warning_ms, self.critical_ms)


class MonitorInputLag(beam.PTransform):
    """Input-lag samples -> outputs `alerts` (dicts) and `tally` (summary figures)."""

    def __init__(self, lag_warning_s: float, lag_critical_s: float):
        super().__init__()
        self.lag_warning_s, self.lag_critical_s = lag_warning_s, lag_critical_s

    def expand(self, samples):
        return (samples
                | "LargestPerBundle" >> beam.ParDo(_LargestLagPerBundle())
                | "Levels" >> beam.ParDo(_LagLevels(self.lag_warning_s, self.lag_critical_s))
                .with_outputs("tally", main="alerts"))
