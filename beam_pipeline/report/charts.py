"""The report's PNG charts (matplotlib, Agg: no display, no global pyplot state).

Every chart draws aggregates (per bucket or per error window), never a point per event. Text from
the data (symbol names, error types) goes into charts through `plain()`, so a `$` in a name is a
dollar sign, not the start of mathtext.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import matplotlib.ticker  # noqa: E402

from beam_pipeline.report.data import (BUCKET_NAMES, GAP_CLASSES, RECORD_KINDS,  # noqa: E402
                                       Report, StreamReport, Thresholds, choose_bucket, iso_ms)

matplotlib.rcParams.update({"font.size": 8, "axes.titlesize": 9})

COLORS = {"anchored": "#2e7d32", "unanchored": "#f9a825", "corrupt": "#c62828",
          "small": "#64b5f6", "medium": "#1565c0", "large": "#6a1b9a", "reset": "#212121",
          "stall": "#ef6c00", "critical": "#c62828", "warning": "#ef6c00", "info": "#757575",
          "none": "#eeeeee", "gap": "#1565c0"}
KIND_COLORS = {"clean_records": "#2e7d32", "ignored": "#9e9e9e", "duplicates": "#64b5f6",
               "superseded": "#8d6e63", "dead_letters": "#c62828"}
DAY_MS = 86_400_000
DPI = 96


def plain(label: str) -> str:
    """A label from the data, shown literally (matplotlib reads $...$ as mathtext)."""
    return str(label).replace("$", r"\$")


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _dates(ms) -> np.ndarray:
    """ms since the epoch -> matplotlib date numbers (days since 1970-01-01)."""
    return np.asarray(ms, dtype=np.float64) / DAY_MS


def _date_axis(ax) -> None:
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def record_kinds(summary: dict) -> bytes:
    """The record kinds of the conservation law as one stacked bar, input records as its length."""
    figure = Figure(figsize=(9, 1.3))
    figure.subplots_adjust(left=0.02, right=0.98, top=0.95, bottom=0.55)
    ax = figure.add_subplot()
    left = 0
    values = {name: summary.get(name, 0) for name, _ in RECORD_KINDS if name != "dead_letters"}
    values["dead_letters"] = sum(summary.get("dead_letters", {}).values())
    total = max(sum(values.values()), summary.get("input_records", 0), 1)
    for name, label in RECORD_KINDS:
        value = values[name]
        ax.barh(0, value, left=left, color=KIND_COLORS[name], label=f"{label} {value:,}")
        left += value
    ax.set_xlim(0, total)
    ax.set_yticks([])
    ax.set_xlabel(f"records (input {summary.get('input_records', 0):,})")
    figure.legend(loc="lower center", ncol=5, frameon=False)
    return png(figure)


def _runs(mask: np.ndarray):
    """Start index and length of each run of True."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), (edges[1::2] - edges[::2]).tolist()))


# Heat map states, worst wins within a bucket.
_STATES = ("none", "anchored", "unanchored", "gap", "corrupt")


def active_periods(streams: list) -> list[list]:
    """Groups the symbols whose time spans overlap or lie close together (a gap shorter than the
    group's span so far), so that one map per group is not mostly empty: captures of two days
    months apart make two maps."""
    groups = []
    for stream in sorted(streams, key=lambda s: s.first_ms):
        if groups and stream.first_ms - groups[-1][1] <= max(groups[-1][1] - groups[-1][0], 1):
            groups[-1][1] = max(groups[-1][1], stream.last_ms)
            groups[-1][2].append(stream)
        else:
            groups.append([stream.first_ms, stream.last_ms, [stream]])
    return [members for _, _, members in groups]


def overview(report: Report, max_rows: int, max_buckets: int = 1000) -> list[bytes]:
    """One map per active period: one row per symbol (worst first, as in the table), one column
    per bucket: anchored, unanchored, a gap in the bucket, corrupt, or no clean data."""
    shown = [s for s in report.streams if s.first_ms is not None][:max_rows]
    rank = {s.name: i for i, s in enumerate(shown)}
    return [_overview_map(sorted(group, key=lambda s: rank[s.name]), max_buckets)
            for group in active_periods(shown)]


def _overview_map(streams: list, max_buckets: int) -> bytes:
    first = min(s.first_ms for s in streams)
    last = max(s.last_ms for s in streams)
    bucket = choose_bucket(max(last - first, 1), max_buckets)
    # A stream's own buckets must fit whole into the map's: never finer than the finest stream's.
    bucket = max([bucket] + [s.bucket_ms for s in streams])
    start = first - first % bucket
    columns = (last - start) // bucket + 1
    grid = np.zeros((len(streams), columns), np.int8)
    for row, stream in enumerate(streams):
        _fill_overview_row(grid[row], stream, start, bucket)
    height = 0.75 + 0.14 * len(streams)
    height = max(height, 1.6)
    figure = Figure(figsize=(10, height))
    label_px = 30 + 5.5 * max(len(s.name) for s in streams)
    figure.subplots_adjust(left=min(label_px / (10 * DPI), 0.4), right=0.98,
                           top=1 - 0.3 / height, bottom=0.75 / height)
    ax = figure.add_subplot()
    ax.imshow(grid, aspect="auto", interpolation="nearest", vmin=0, vmax=len(_STATES) - 1,
              cmap=ListedColormap([COLORS[s] for s in _STATES]),
              extent=(_dates(start)[()], _dates(start + columns * bucket)[()], len(streams), 0))
    ax.set_yticks(np.arange(len(streams)) + 0.5, [plain(s.name) for s in streams])
    ax.tick_params(axis="y", labelsize=7)
    _date_axis(ax)
    ax.set_title(f"per {BUCKET_NAMES[bucket]}: worst symbols at the top")
    handles = [Patch(color=COLORS[s], label=label) for s, label in zip(
        _STATES, ("no clean data", "anchored", "unanchored", "gap", "corrupt"))]
    figure.legend(handles=handles, loc="lower center", ncol=5, frameon=False)
    return png(figure)


def _fill_overview_row(row: np.ndarray, stream: StreamReport, start: int, bucket: int) -> None:
    """Re-bins a stream's own buckets (of another width) onto the overview's columns."""
    def fill(mask, state):
        for first, length in _runs(mask):
            begin = stream.start_ms + first * stream.bucket_ms
            end = begin + length * stream.bucket_ms - 1
            view = row[(begin - start) // bucket:(end - start) // bucket + 1]
            np.maximum(view, state, out=view)

    fill(stream.anchored_buckets, 1)
    fill(stream.unanchored_buckets, 2)
    for time, *_ in stream.gaps:
        if time is not None:
            row[(time - start) // bucket] = max(row[(time - start) // bucket], 3)
    for begin, end, *_ in stream.corrupt:
        begin = end if begin is None else begin
        row[(begin - start) // bucket:(end - start) // bucket + 1] = 4


def stream_detail(stream: StreamReport, thresholds: Thresholds) -> bytes:
    """A symbol's timeline (segments anchored or not, corrupt periods, gaps by class, stalls,
    alerts), its error counts per window against the alert thresholds, and its gap rate per window
    against the gap-rate threshold."""
    has_gaps = bool(stream.gaps)
    rows = 3 if has_gaps else 2
    height = 2.2 + 1.5 * (rows - 1)
    figure = Figure(figsize=(10, height))
    figure.subplots_adjust(left=0.1, right=0.8, top=1 - 0.3 / height, bottom=0.45 / height,
                           hspace=0.45)
    axes = figure.subplots(rows, 1, sharex=True,
                           height_ratios=[1.6] + [1] * (rows - 1))
    _timeline(axes[0], stream, thresholds)
    _error_counts(axes[1], stream, thresholds)
    if has_gaps:
        _gap_rate(axes[2], stream, thresholds)
    pad = max(stream.span_ms * 0.01, stream.bucket_ms)
    axes[0].set_xlim(_dates(stream.first_ms - pad)[()], _dates(stream.last_ms + pad)[()])
    _date_axis(axes[-1])
    return png(figure)


_LANES = ("alerts", "stalls", "gaps", "corrupt", "unanchored", "anchored")


def window_point(stream: StreamReport, start_ms: int, window_ms: int) -> int:
    """Where a window's count is drawn: the middle of the part of the window inside the symbol's
    span (a 60 s window is longer than a short capture)."""
    first = max(start_ms, stream.first_ms)
    last = min(start_ms + window_ms, stream.last_ms)
    return (first + last) // 2 if first <= last else start_ms + window_ms // 2


def _timeline(ax, stream: StreamReport, thresholds: Thresholds) -> None:
    bucket_days = stream.bucket_ms / DAY_MS
    origin = _dates(stream.start_ms)[()]
    lane = {name: i for i, name in enumerate(_LANES)}
    for name, spanned in (("anchored", stream.anchored_buckets),
                          ("unanchored", stream.unanchored_buckets)):
        bars = [(origin + i * bucket_days, n * bucket_days) for i, n in _runs(spanned)]
        ax.broken_barh(bars, (lane[name] - 0.35, 0.7), color=COLORS[name])
    min_width = max(stream.span_ms / 400, 1) / DAY_MS       # a corrupt period stays visible
    corrupt = [(_dates(end if start is None else start)[()],
                max(_dates(end - (end if start is None else start))[()], min_width))
               for start, end, *_ in stream.corrupt]
    ax.broken_barh(corrupt, (lane["corrupt"] - 0.35, 0.7), color=COLORS["corrupt"])
    _markers(ax, stream, lane["gaps"], [(t, cls) for t, cls, *_ in stream.gaps if t is not None],
             GAP_CLASSES, "|")
    window_ms = int(thresholds.error_window_s * 1000)
    stalls = [(window_point(stream, iso_ms(r["window_start"]), window_ms), "stall")
              for r in stream.error_counts if r["error_type"] == "stall"]
    _markers(ax, stream, lane["stalls"], stalls, ("stall",), "v")
    alerts = [(window_point(stream, iso_ms(a["window_start"]), window_ms), a["level"])
              for a in stream.alerts]
    _markers(ax, stream, lane["alerts"], alerts, ("critical", "warning", "info"), "D")
    ax.set_yticks(range(len(_LANES)), _LANES)
    ax.set_ylim(-0.6, len(_LANES) - 0.4)
    if ax.get_legend_handles_labels()[0]:     # gap classes, stalls, alert levels met
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False,
                  title="markers (count)", title_fontsize=7)
    ax.set_title(f"{plain(stream.name)}: timeline per {BUCKET_NAMES[stream.bucket_ms]}", loc="left")
    ax.grid(axis="x", color="#dddddd")


def _markers(ax, stream: StreamReport, y: int, items, kinds, marker: str) -> None:
    """One marker per bucket and kind (its size grows with the count), never one per item."""
    for kind in kinds:
        times = np.array([t for t, k in items if k == kind], np.int64)
        if len(times) == 0:
            continue
        buckets, counts = np.unique(times - times % stream.bucket_ms, return_counts=True)
        ax.scatter(_dates(buckets + stream.bucket_ms // 2), np.full(len(buckets), y),
                   s=30 + 20 * np.log2(counts), marker=marker, color=COLORS[kind],
                   label=f"{kind} ({len(times):,})", zorder=3)


def _per_bucket_max(bucket_ms: int, window_ms: int, values: dict, stream: StreamReport = None):
    """{window start ms: value} -> (the middle of each point's time, its value). Buckets wider
    than a window show their largest window (thresholds apply per window); otherwise each window
    is its own point."""
    if not values:
        return np.zeros(0, np.int64), np.zeros(0)
    starts = np.fromiter(values.keys(), np.int64, len(values))
    numbers = np.fromiter(values.values(), np.float64, len(values))
    if bucket_ms <= window_ms:
        if stream is None:
            return starts + window_ms // 2, numbers
        points = [window_point(stream, int(start), window_ms) for start in starts]
        return np.array(points, np.int64), numbers
    unique, inverse = np.unique(starts - starts % bucket_ms, return_inverse=True)
    peak = np.zeros(len(unique))
    np.maximum.at(peak, inverse, numbers)
    return unique + bucket_ms // 2, peak


def _window_title(what: str, bucket_ms: int, window_ms: int) -> str:
    window = f"{window_ms / 1000:g} s"
    if bucket_ms <= window_ms:
        return f"{what} per {window} window"
    return f"{what} per {window} window (the largest window of each {BUCKET_NAMES[bucket_ms]})"


def _error_counts(ax, stream: StreamReport, thresholds: Thresholds) -> None:
    by_type: dict = {}
    for row in stream.error_counts:
        by_type.setdefault(row["error_type"], {})[iso_ms(row["window_start"])] = row["count"]
    top = sorted(by_type, key=lambda t: -sum(by_type[t].values()))
    palette = matplotlib.colormaps["tab10"]
    window_ms = int(thresholds.error_window_s * 1000)
    shown = top[:9]
    dodge = max(stream.span_ms, 1) / 250          # types of one window side by side, not stacked
    for i, error_type in enumerate(shown):
        x, y = _per_bucket_max(stream.bucket_ms, window_ms, by_type[error_type], stream)
        dates = _dates(x + (i - (len(shown) - 1) / 2) * dodge)
        ax.vlines(dates, 0, y, color=palette(i), linewidth=1)
        ax.scatter(dates, y, color=palette(i), s=14, label=plain(error_type), zorder=3)
    _threshold_lines(ax, thresholds)
    ax.set_ylim(0, max(thresholds.critical_count * 2,
                       max((max(v.values()) for v in by_type.values()), default=0) * 2))
    ax.set_ylabel("errors")
    ax.set_title(_window_title("error counts of each type", stream.bucket_ms, window_ms)
                 + ", with the alert thresholds", loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ax.grid(axis="x", color="#dddddd")


def _gap_rate(ax, stream: StreamReport, thresholds: Thresholds) -> None:
    rates = stream.gap_rates()
    window_ms = int(thresholds.error_window_s * 1000)
    x, y = _per_bucket_max(stream.bucket_ms, window_ms, rates, stream)
    dates = _dates(x)
    ax.vlines(dates, 0, y, color=COLORS["gap"], linewidth=1)
    ax.scatter(dates, y, color=COLORS["gap"], s=14, zorder=3, label="gaps / events")
    ax.axhline(thresholds.gap_rate, color=COLORS["critical"], linestyle="--", linewidth=1,
               label=f"critical > {thresholds.gap_rate:g}")
    ax.set_yscale("log")
    low = min(thresholds.gap_rate / 10, y.min() / 2 if len(y) else thresholds.gap_rate / 10)
    ax.set_ylim(low, max(1.0, y.max() * 2 if len(y) else 1.0))
    ax.set_ylabel("gap rate")
    ax.set_title(_window_title("gaps per clean event", stream.bucket_ms, window_ms)
                 + ", with the gap-rate threshold", loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ax.grid(axis="x", color="#dddddd")


def unattributed_errors(rows: list, thresholds: Thresholds) -> bytes | None:
    """Error counts of records without a symbol (most dead letters: stamped with their ingest
    time, so on the clock of the run, not of the feed)."""
    if not rows:
        return None
    by_type: dict = {}
    for row in rows:
        by_type.setdefault(row["error_type"], {})[iso_ms(row["window_start"])] = row["count"]
    figure = Figure(figsize=(10, 2.2))
    figure.subplots_adjust(left=0.1, right=0.72, top=0.86, bottom=0.2)
    ax = figure.add_subplot()
    starts = [s for v in by_type.values() for s in v]
    span = max(starts) - min(starts) if starts else 0
    bucket_ms = choose_bucket(max(span, 1), 720)
    window_ms = int(thresholds.error_window_s * 1000)
    palette = matplotlib.colormaps["tab10"]
    for i, error_type in enumerate(sorted(by_type)[:10]):
        x, y = _per_bucket_max(bucket_ms, window_ms, by_type[error_type])
        ax.scatter(_dates(x), y, color=palette(i), s=16, label=plain(error_type), zorder=3)
        ax.vlines(_dates(x), 0, y, color=palette(i), linewidth=1)
    _threshold_lines(ax, thresholds)
    ax.set_ylim(0, thresholds.critical_count * 2)
    if span == 0:
        pad = 60_000
        ax.set_xlim(_dates(min(starts) - pad)[()], _dates(min(starts) + 2 * pad)[()])
    _date_axis(ax)
    ax.set_title("errors without a symbol per window (processing time)", loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    return png(figure)


def _threshold_lines(ax, thresholds) -> None:
    """The alert thresholds on an error-count axis (symlog: counts span orders of magnitude)."""
    ax.axhline(thresholds.warning_count, color=COLORS["warning"], linestyle="--", linewidth=1,
               label=f"warning > {thresholds.warning_count}")
    ax.axhline(thresholds.critical_count, color=COLORS["critical"], linestyle="--", linewidth=1,
               label=f"critical > {thresholds.critical_count}")
    ax.set_yscale("symlog", linthresh=1)
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
