"""The report as one HTML page: plain HTML and CSS, the charts as data: URIs, no script at all.

Everything taken from the data (symbol names, sources, messages, payload bytes, reasons) passes
through `text()` or `raw_bytes()` before it reaches the page, and the page carries a
Content-Security-Policy that allows no script and no request outside the file: a `<script>` or
`</html>` in a symbol name or a dead letter is shown as text and never runs.
"""
from __future__ import annotations

import base64
import datetime as dt
import html

from beam_pipeline.report.data import (BUCKET_NAMES, DAY_MS, GAP_CLASSES, RECORD_KINDS,
                                       TRUST_NAMES, Report, StreamReport, conservation, iso_ms)

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
       "form-action 'none'")
LIST_LIMIT = 50            # rows per detail list; the rest are counted, not listed
WORST_LIMIT = 25
PAYLOAD_PREVIEW_BYTES = 160
MESSAGE_PREVIEW_CHARS = 300

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1360px;padding:16px 24px;color:#212121;background:#fff}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #e0e0e0}
h3{font-size:15px;margin:22px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #e0e0e0;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,.bytes{font:12px ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;overflow-wrap:break-word}
.bytes{word-break:break-all}
.ok{color:#2e7d32;font-weight:600}.bad{color:#c62828;font-weight:600}.warn{color:#ef6c00}
.muted{color:#757575}img{max-width:100%;height:auto;display:block;margin:6px 0}
nav a{margin-right:14px}.row{display:flex;gap:28px;align-items:flex-start}
.grow{flex:1;min-width:0}td.sym,td.time{white-space:nowrap}.detail{border-top:1px solid #eeeeee}
.scroll{overflow-x:auto;max-width:100%}
table.grid td,table.grid th{padding:0;min-width:14px;height:16px;font-size:10px;text-align:center}
table.grid td.sym,table.grid th.sym{padding:0 6px;text-align:left;font-size:12px}
.t-green{background:#66bb6a}.t-amber{background:#ffb74d}.t-red{background:#e53935}
.t-grey{background:#eeeeee}.key span{display:inline-block;width:14px;height:12px;margin:0 4px 0 10px}
"""


def text(value) -> str:
    """Any value from the data as HTML text (quotes escaped too: safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def raw_bytes(data: bytes | None, limit: int = PAYLOAD_PREVIEW_BYTES, total: int | None = None) -> str:
    """Bytes as readable escaped text: printable ASCII as is, everything else as \\xNN, then
    HTML-escaped. Says how many bytes were left out (of `total`, when `data` is a prefix)."""
    if data is None:
        return '<span class="muted">none</span>'
    shown = data[:limit]
    chars = []
    for byte in shown:
        if byte == 0x5C:
            chars.append("\\\\")
        elif 0x20 <= byte < 0x7F:
            chars.append(chr(byte))
        else:
            chars.append({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}.get(byte, f"\\x{byte:02x}"))
    rest = (len(data) if total is None else total) - len(shown)
    more = f' <span class="muted">... {rest:,} more bytes</span>' if rest else ""
    return f'<span class="bytes">{text("".join(chars))}</span>{more}'


def number(value) -> str:
    return f"{value:,}" if isinstance(value, int) else text(value)


def plural(count: int, word: str, words: str | None = None) -> str:
    """1 segment, 2 segments (thousands separated)."""
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def percent(share: float) -> str:
    """Rounded down, so 100.00 % means all of it."""
    return f"{int(share * 10000) / 100:.2f} %"


def duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    if minutes < 120:
        return f"{minutes:.1f} min"
    hours = minutes / 60
    return f"{hours:.1f} h" if hours < 72 else f"{hours / 24:.1f} days"


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def image(data: bytes | None, alt: str) -> str:
    if data is None:
        return ""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{text(alt)}" src="data:image/png;base64,{encoded}">'


def anchor(index: int) -> str:
    """A symbol's detail anchor: from its rank, never from its name."""
    return f"symbol-{index + 1}"


def _table(header, rows) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _td(value, key: str | None = None, attr: str = "data-summary") -> str:
    data = f' {attr}="{text(key)}"' if key else ""
    css = ' class="n"' if isinstance(value, (int, float)) else ""
    return f"<td{css}{data}>{number(value)}</td>"


def summary_section(report: Report, kinds_png: bytes) -> str:
    summary = report.summary
    law = conservation(summary)
    rows = [["<td>input records</td>", _td(law["input"], "input_records")]]
    for name, label in RECORD_KINDS:
        rows.append([f"<td>{text(label)}</td>", _td(law["terms"][name], name)])
    for reason, count in sorted(summary.get("dead_letters", {}).items()):
        rows.append([f'<td>&nbsp;&nbsp;dead letter: {text(reason)}</td>',
                     _td(count, f"dead_letters.{reason}")])
    for cls in GAP_CLASSES:
        rows.append([f"<td>gaps, {cls}</td>", _td(summary.get("gaps", {}).get(cls, 0), f"gaps.{cls}")])
    rows.append(["<td>corrupt periods</td>", _td(summary.get("corrupt_periods", 0), "corrupt_periods")])
    rows.append(["<td>symbols</td>", _td(summary.get("symbols", 0), "symbols")])
    recorded = summary.get("balanced")
    verdict = ('<span class="ok" data-summary="balanced">balanced: yes</span>' if law["balanced"]
               else '<span class="bad" data-summary="balanced">balanced: NO</span>')
    equation = (f"{law['input']:,} input = " + " + ".join(
        f"{law['terms'][name]:,} {label}" for name, label in RECORD_KINDS)
        + f" = {law['accounted']:,}")
    if not law["balanced"]:
        equation += f" (off by {law['input'] - law['accounted']:+,})"
    note = ""
    if recorded is not None and bool(recorded) != law["balanced"]:
        note += (f'<p class="bad">summary.json says balanced={text(recorded)}, but its counts '
                 f'add up otherwise.</p>')
    clean_note = (f"clean/ holds {report.clean_rows_read:,} distinct rows"
                  + (" (as summary.json says)." if report.clean_rows_read == law["terms"]["clean_records"]
                     else f"; summary.json counts {law['terms']['clean_records']:,} (a running job "
                          f"writes its files and its summary at different moments)."))
    return (f'<h2 id="summary">Summary</h2><div class="row"><div>{_table(["", "records"], rows)}'
            f'</div><div class="grow"><p>{verdict}: <code>{text(equation)}</code></p>{note}'
            f'{image(kinds_png, "record kinds")}<p class="muted">{text(clean_note)}</p></div></div>')


FILE_COLUMNS = ("records", "clean", "ignored", "duplicates", "superseded", "dead")


def files_section(report: Report) -> str:
    head = '<h2 id="files">Input files</h2>'
    if report.files is None:
        return head + ('<p data-files="not-recorded">Per-file counts: not recorded (this run\'s '
                       'summary.json has no "files" list).</p>')
    rows = []
    totals = dict.fromkeys(FILE_COLUMNS, 0)
    for entry in report.files:
        cells = [f"<td><code>{text(entry.get('file'))}</code></td>",
                 f"<td>{text(entry.get('format'))}</td>"]
        for column in FILE_COLUMNS:
            value = entry.get(column)
            if isinstance(value, int):
                totals[column] += value
            cells.append(_td(value if value is not None else "-", column, "data-file"))
        rows.append(cells)
    rows.append(["<td><b>all files</b></td>", "<td></td>"]
                + [_td(totals[c], c, "data-files-total") for c in FILE_COLUMNS])
    return head + _table(["file", "format"] + list(FILE_COLUMNS), rows)


def dead_letter_section(report: Report) -> str:
    head = '<h2 id="dead-letters">Dead letters</h2>'
    examples = report.dead_letters
    if not examples:
        return head + "<p>None.</p>"
    rows = []
    for example in examples:
        message = example["message"] or ""
        cut = len(message) > MESSAGE_PREVIEW_CHARS
        rows.append([f"<td><code>{text(example['reason'])}</code></td>",
                     _td(example["count"], example["reason"], "data-dead-letter"),
                     f"<td><code>{text(example['source'])}</code></td>",
                     f"<td>{text(example['stage'])}</td>",
                     f"<td>{text(message[:MESSAGE_PREVIEW_CHARS])}{'...' if cut else ''}</td>",
                     f"<td>{raw_bytes(example['payload'], total=example['payload_bytes'])}</td>"])
    return head + ("<p>Each reason with its count and its first record: where it came from "
                   "(file:line) and its first bytes, escaped.</p>"
                   + _table(["reason", "count", "example source", "stage", "message",
                             "first bytes"], rows))


def _symbol_link(index: int, stream: StreamReport) -> str:
    return f'<a href="#{anchor(index)}">{text(stream.name)}</a>'


def worst_section(report: Report) -> str:
    rank = {stream.name: i for i, stream in enumerate(report.streams)}
    periods = [(end - (start if start is not None else end), stream, start, end, reason, a, b)
               for stream in report.streams for start, end, reason, a, b in stream.corrupt]
    periods.sort(key=lambda p: (-p[0], p[1].name))
    corrupt_rows = [[f"<td class='sym'>{_symbol_link(rank[s.name], s)}</td>", f"<td>{when(start)}</td>",
                     f"<td>{when(end)}</td>", f"<td class=n>{duration(length)}</td>",
                     f"<td class=n>{number(a)} .. {number(b)}</td>", f"<td>{text(reason)}</td>"]
                    for length, s, start, end, reason, a, b in periods[:WORST_LIMIT]]
    level = {"critical": 0, "warning": 1, "info": 2}
    alerts = [(stream, alert) for stream in report.streams for alert in stream.alerts]
    alerts.sort(key=lambda p: (level.get(p[1]["level"], 3), -p[1]["count"], p[0].name,
                               p[1]["window_start"]))
    alert_rows = [[f"<td class='sym'>{_symbol_link(rank[s.name], s)}</td>",
                   f"<td>{text(a['window_start'])} .. {text(a['window_end'])}</td>",
                   f'<td class="{"bad" if a["level"] == "critical" else "warn"}">{text(a["level"])}</td>',
                   f"<td>{text(a['rule'])}</td>", _td(a["count"]), f"<td>{text(a['message'])}</td>"]
                  for s, a in alerts[:WORST_LIMIT]]
    out = '<h2 id="worst">Worst periods</h2>'
    out += f"<h3>Corrupt periods, longest first ({len(periods):,})</h3>"
    out += (_table(["symbol", "from", "to", "duration", "ids", "reason"], corrupt_rows)
            if corrupt_rows else "<p>None.</p>")
    out += f"<h3>Alerts, critical first ({len(alerts):,})</h3>"
    out += (_table(["symbol", "window", "level", "rule", "count", "message"], alert_rows)
            if alert_rows else "<p>None.</p>")
    return out


def trust_css(share: float) -> str:
    return "ok" if share >= 0.999 else ("warn" if share >= 0.95 else "bad")


def _book_cells(i: int, s: StreamReport) -> list:
    """--book_checks: anchored and verified coverage, checksum verified messages, book checks
    failed (corrupt periods the checks opened)."""
    verified = s.checksum_verified()
    failed = s.book_checks_failed()
    return [f'<td class="n {trust_css(s.verified_coverage())}" data-verified="{i + 1}">'
            f"{percent(s.verified_coverage())}</td>",
            f'<td class="n" data-checksums="{i + 1}">'
            f'{number(verified) if verified is not None else "-"}</td>',
            f'<td class="n{" bad" if failed else ""}" data-book-failed="{i + 1}">{failed:,}</td>']


BOOK_HEADER = ["anchored and verified", "checksum verified messages", "book checks failed"]
BOOK_NOTE = (" <b>Anchored and verified</b> (the run checked books: --book_checks): the share "
             "anchored and unbroken and outside every corrupt period, a failed book check's "
             "(checksum_mismatch, crossed_book, bad_level, unknown_level, snapshot_mismatch) "
             "among them. <b>Checksum verified messages</b>: messages whose venue checksum "
             "matched the rebuilt book (from status/; venues without checksums: 0). <b>Book "
             "checks failed</b>: the corrupt periods the book checks opened.")


def symbols_section(report: Report, overview_png: list, overview_rows: int) -> str:
    rows = []
    for i, s in enumerate(report.streams):
        gaps, alerts = s.gap_counts(), s.alert_counts()
        rows.append([f"<td class=n>{i + 1}</td>", f"<td class='sym'>{_symbol_link(i, s)}</td>",
                     f'<td class="n {trust_css(s.trusted())}" data-trusted="{i + 1}">'
                     f"{percent(s.trusted())}</td>",
                     *(_book_cells(i, s) if report.book_checks else []),
                     f'<td class="n" data-coverage="{i + 1}">{percent(s.coverage())}</td>',
                     f"<td class=n>{duration(s.span_ms)}</td>",
                     _td(s.clean_rows, s.name, "data-clean-rows"),
                     f"<td class=n>{s.segments:,} ({s.anchored_segments:,})</td>",
                     "".join(_td(gaps[c]) for c in GAP_CLASSES),
                     f"<td class=n>{len(s.corrupt):,} ({duration(s.corrupt_ms())})</td>",
                     _td(s.stalls()), f"<td class=n>{alerts['critical']:,} / {alerts['warning']:,}</td>",
                     _td(s.dead_letters)])
    header = ["#", "symbol", "anchored and unbroken", *(BOOK_HEADER if report.book_checks else []),
              "coverage", "span", "clean rows",
              "segments (anchored)", "small gaps", "medium", "large", "resets",
              "corrupt (time)", "stalls", "alerts crit / warn", "dead letters"]
    more = len([s for s in report.streams if s.first_ms is not None]) - overview_rows
    tail = f'<p class="muted">The map shows the worst {overview_rows:,}; {more:,} more are in the table.</p>' \
        if more > 0 else ""
    return ('<h2 id="symbols">Symbols, worst first</h2>'
            "<p>Symbols are the keys with depth data (clean rows, gaps or corrupt periods); a "
            "rejected record's key is in the dead letters only. <b>Anchored and unbroken</b>: the "
            "share of a symbol's time span (its first to its last record) inside segments that "
            "began at a snapshot and no gap broke: where the book can be rebuilt exactly. "
            "Coverage: the share inside any continuous segment, anchored or not. Order: least "
            "anchored and unbroken, then least coverage, then most corrupt periods, critical "
            "alerts, large gaps and resets." + (BOOK_NOTE if report.book_checks else "") + "</p>"
            + (_table(header, rows) if rows else "<p>No symbols.</p>")
            + status_section(report)
            + trust_section(report)
            + "".join(image(png, "timeline of the symbols") for png in overview_png) + tail)


def _held(status: dict) -> str:
    held = status.get("held_events") or 0
    if not held:
        return "0"
    return f"{held:,} ({text(status.get('hold_reason') or '?')})"


def _id(value) -> str:
    """An update id as the venue writes it (no thousands separators: ids are looked up, not read
    as amounts)."""
    return "-" if value is None else text(value)


def _open_gap(status: dict) -> str:
    if status.get("open_gap_last_good_id") is None:
        return '<span class="muted">none</span>'
    size = status.get("open_gap_size")
    return (f'<span class="bad">{f"{size:,} ids missing" if size is not None else "ids missing"}'
            f' after {_id(status["open_gap_last_good_id"])}</span>')


def _open_corrupt(status: dict) -> str:
    reason = status.get("open_corrupt_reason")
    if reason is None:
        return '<span class="muted">none</span>'
    since = status.get("open_corrupt_start_time")
    return (f'<span class="bad">{text(reason)}</span> since '
            f'{text(when(_as_ms(since))) if since is not None else "?"} (id '
            f'{_id(status.get("open_corrupt_start_id"))})')


def _as_ms(value) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def status_section(report: Report) -> str:
    """Where each symbol stands (status/: its latest row): the live view of a streaming job, a
    batch run's end."""
    if not report.has_status:
        return ""
    rows, newest = [], None
    for i, s in enumerate(report.streams):
        st = s.status
        if st is None:
            continue
        as_of = _as_ms(st["as_of"])
        newest = as_of if newest is None else max(newest, as_of)
        anchored = ('<span class="ok">yes</span>' if st.get("anchored")
                    else '<span class="warn">no</span>')
        if st.get("disconnected"):
            anchored += ' <span class="warn">(disconnected)</span>'
        rows.append([f"<td class='sym'>{_symbol_link(i, s)}</td>",
                     f'<td data-status-corrupt="{i + 1}">{_open_corrupt(st)}</td>',
                     f"<td>{_open_gap(st)}</td>",
                     f'<td class="n" data-status-held="{i + 1}">{_held(st)}</td>',
                     f"<td>{anchored}</td>",
                     f"<td class='time'>{when(_as_ms(st.get('last_event_time')))}</td>",
                     f'<td class="n" data-status-last-id="{i + 1}">{_id(st.get("last_id"))}</td>',
                     f'<td class="time" data-status-as-of="{i + 1}">{when(as_of)}</td>'])
    return (f'<h3 id="now">Where each symbol stands (as of {when(newest)})</h3>'
            "<p>The latest row of each symbol in status/: a streaming job writes one per symbol "
            "that changed every flush and one at a stop, a batch run one at its end. Held: "
            "events waiting (for a snapshot, or for earlier ids: reorder). An open gap waits for "
            "a snapshot; an open corrupt period is a failed book check no snapshot has resynced "
            "yet.</p>"
            + _table(["symbol", "open corrupt period", "open gap", "held", "anchored",
                      "last event", "last id", "as of"], rows))


def _cell_label(start_ms: int, cell_ms: int) -> tuple[str, str, str]:
    """(group label, short label, full UTC time) of a grid column: a day and its hour, or a
    month and its day."""
    moment = dt.datetime.fromtimestamp(start_ms / 1000, dt.timezone.utc)
    if cell_ms < DAY_MS:
        return moment.strftime("%Y-%m-%d"), moment.strftime("%H"), moment.strftime("%Y-%m-%d %H:00Z")
    return moment.strftime("%Y-%m"), moment.strftime("%d"), moment.strftime("%Y-%m-%d")


def trust_title(name: str, when_text: str, level: int, reasons: dict) -> str:
    """A cell's hover text: the symbol, the cell's time, its colour and why (minutes by reason)."""
    if level == 0:
        return f"{name}, {when_text}: outside the symbol's span"
    why = "; ".join(f"{plural(n, 'min', 'min')} {reason}" for reason, n in reasons.items())
    return f"{name}, {when_text}: {TRUST_NAMES[level]}" + (f" ({why})" if why else " (anchored and clean)")


def trust_section(report: Report) -> str:
    grid = report.grid
    if grid is None or not report.streams:
        return ""
    unit = "hour" if grid.cell_ms < DAY_MS else "day"
    labels = [_cell_label(start, grid.cell_ms) for start in grid.columns]
    groups = []                                   # (group label, columns), in order
    for group, _, _ in labels:
        if groups and groups[-1][0] == group:
            groups[-1][1] += 1
        else:
            groups.append([group, 1])
    head = ('<tr><th class="sym" rowspan="2">symbol</th>' + "".join(
        f'<th colspan="{n}">{text(group)}</th>' for group, n in groups) + "</tr><tr>" + "".join(
        f'<th title="{text(full)}">{text(short)}</th>' for _, short, full in labels) + "</tr>")
    rows = []
    for i, stream in enumerate(report.streams):
        cells = []
        for j in range(grid.cells):
            level = int(grid.levels[i][j])
            title = trust_title(stream.name, labels[j][2], level, grid.reasons[i][j])
            cells.append(f'<td class="t-{TRUST_NAMES[level]}" data-trust="{i + 1}:{j}" '
                         f'title="{text(title)}"></td>')
        rows.append(f"<tr><td class='sym'>{_symbol_link(i, stream)}</td>{''.join(cells)}</tr>")
    first, last = labels[0][2], labels[-1][2]
    key = ('<p class="key muted"><span class="t-green"></span>anchored and clean'
           '<span class="t-amber"></span>unanchored or small gaps only'
           '<span class="t-red"></span>corrupt period, medium or large gap (or reset), or no data'
           '<span class="t-grey"></span>outside the symbol\'s span</p>')
    return (f'<h3 id="trust">Which {unit}s can I use?</h3>'
            f"<p>Per symbol and {unit} (UTC, {text(first)} to {text(last)}; only the {unit}s "
            f"some symbol has data in), the colour of its worst minute. Hover a cell for its "
            f"reasons.</p>{key}"
            f'<div class="scroll"><table class="grid"><thead>{head}</thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def detail_section(index: int, stream: StreamReport, chart: bytes | None,
                   book_checks: bool = False) -> str:
    parts = [f'<div class="detail"><h3 id="{anchor(index)}">{index + 1}. {text(stream.name)}</h3>',
             f"<p>{when(stream.first_ms)} to {when(stream.last_ms)} ({duration(stream.span_ms)}); "
             f"anchored and unbroken {percent(stream.trusted())}, coverage "
             f"{percent(stream.coverage())}; {plural(stream.clean_rows, 'clean row')} in "
             f"{plural(stream.segments, 'segment')} ({stream.anchored_segments:,} anchored); "
             + (f"anchored and verified {percent(stream.verified_coverage())}, "
                f"{plural(stream.checksum_verified() or 0, 'checksum verified message')}, "
                f"{plural(stream.book_checks_failed(), 'book check')} failed; "
                if book_checks else "") +
             f"timeline per "
             f"{BUCKET_NAMES.get(stream.bucket_ms, '-')}.</p>"]
    if chart is not None:
        parts.append(image(chart, f"timeline of {stream.name}"))
    elif stream.first_ms is not None:
        parts.append('<p class="muted">No chart: past the report\'s chart limit (--detail_charts).</p>')
    corrupt = sorted(stream.corrupt, key=lambda c: -(c[1] - (c[0] if c[0] is not None else c[1])))
    if corrupt:
        rows = [[f"<td>{when(a)}</td>", f"<td>{when(b)}</td>",
                 f"<td class=n>{duration(b - (a if a is not None else b))}</td>",
                 f"<td class=n>{number(i)} .. {number(j)}</td>", f"<td>{text(r)}</td>"]
                for a, b, r, i, j in corrupt[:LIST_LIMIT]]
        parts.append("<p>Corrupt periods, longest first:</p>"
                     + _table(["from", "to", "duration", "ids", "reason"], rows) + _more(corrupt))
    gaps = sorted(stream.gaps, key=lambda g: (-GAP_CLASSES.index(g[1]) if g[1] in GAP_CLASSES else 0,
                                              -(g[2] or 0), g[0] or 0))
    if gaps:
        rows = [[f"<td>{when(t)}</td>", f"<td>{text(c)}</td>",
                 _td(size if size is not None else "unknown"), f"<td>{text(res)}</td>"]
                for t, c, size, res in gaps[:LIST_LIMIT]]
        parts.append("<p>Gaps, worst class and largest first:</p>"
                     + _table(["at", "class", "missing ids", "resolution"], rows) + _more(gaps))
    level = {"critical": 0, "warning": 1, "info": 2}
    alerts = sorted(stream.alerts, key=lambda a: (level.get(a["level"], 3), a["window_start"]))
    stalls = [r for r in stream.error_counts if r["error_type"] in ("stall", "stall_resolved")]
    if alerts:
        rows = [[f"<td>{text(a['window_start'])}</td>", f"<td>{text(a['level'])}</td>",
                 f"<td>{text(a['rule'])}</td>", f"<td>{text(a['message'])}</td>",
                 f"<td>{text(a['suggested_action'])}</td>"] for a in alerts[:LIST_LIMIT]]
        parts.append("<p>Alerts:</p>" + _table(["window", "level", "rule", "message", "action"], rows)
                     + _more(alerts))
    if stalls:
        rows = [[f"<td>{text(r['window_start'])}</td>", f"<td>{text(r['error_type'])}</td>",
                 _td(r["count"])] for r in sorted(stalls, key=lambda r: iso_ms(r["window_start"]))[:LIST_LIMIT]]
        parts.append("<p>Stalls (streaming: silent past the stall timeout) and their ends:</p>"
                     + _table(["window", "event", "count"], rows) + _more(stalls))
    parts.append("</div>")
    return "".join(parts)


def _more(items) -> str:
    rest = len(items) - LIST_LIMIT
    return f'<p class="muted">... and {rest:,} more.</p>' if rest > 0 else ""


def run_line(report: Report) -> str:
    """The runner, mode and versions of the run (its settings record), when it has one."""
    settings = report.settings or {}
    runner, versions = settings.get("runner") or {}, settings.get("versions") or {}
    if not runner and not versions:
        return ""
    parts = [f"{runner.get('name', '?')}, {runner.get('mode', '?')}"]
    parts += [f"{name} {value}" for name, value in versions.items() if value]
    return f'<span data-run="settings">Run: {text("; ".join(parts))}.</span> '


def page(report: Report, charts: dict, overview_rows: int, generated_ms: int) -> str:
    thresholds = report.thresholds
    settings = (f"error window {thresholds.error_window_s:g} s; warning above "
                f"{thresholds.warning_count} and critical above {thresholds.critical_count} errors "
                f"of one type in a window; gap rate critical above {thresholds.gap_rate:g}; stall "
                f"timeout {thresholds.stall_timeout_s:g} s; from {thresholds.source}.")
    details = "".join(detail_section(i, s, charts.get(("symbol", i)), report.book_checks)
                      for i, s in enumerate(report.streams))
    unattributed = charts.get("unattributed")
    unattributed_part = ""
    if unattributed is not None:
        unattributed_part = ('<h3 id="unattributed">Errors without a symbol</h3><p>Records whose '
                             'symbol could not be read (most dead letters) are counted per window '
                             'of their ingest time.</p>' + image(unattributed, "errors without a symbol"))
    now_link = '<a href="#now">now</a>' if report.has_status else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>feedcheck data-quality report</title>
<style>{STYLE}</style></head>
<body>
<h1>Data-quality report</h1>
<p class="muted">Outputs of <code>{text(report.output)}</code>, read {when(generated_ms)}.
{run_line(report)}Alert thresholds: {text(settings)} Disconnects are not a record of their own: a feed that drops
shows as a gap (batch) or a stall (streaming).</p>
<nav><a href="#summary">summary</a><a href="#files">files</a><a href="#dead-letters">dead letters</a>
<a href="#worst">worst periods</a><a href="#symbols">symbols</a>{now_link}<a href="#trust">trust grid</a>
<a href="#details">details</a></nav>
{summary_section(report, charts["kinds"])}
{files_section(report)}
{dead_letter_section(report)}
{worst_section(report)}
{symbols_section(report, charts.get("overview", []), overview_rows)}
<h2 id="details">Per symbol</h2>
{details}
{unattributed_part}
</body></html>
"""
