"""Reads what a data-quality report page shows: the numbers it tags, its text, its links.

Works on the page as written and on Chromium's --dump-dom of it (the DOM after loading)."""
from __future__ import annotations

from html.parser import HTMLParser

# The report tags each number taken from summary.json or a per-file count with one of these.
TAGS = ("data-summary", "data-file", "data-files-total", "data-dead-letter", "data-clean-rows",
        "data-coverage", "data-trusted", "data-verified", "data-checksums", "data-book-failed",
        "data-status-last-id", "data-status-corrupt", "data-status-held")


class ReportDom(HTMLParser):
    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tagged = {tag: [] for tag in TAGS}   # tag -> [(attribute value, shown text)]
        self.elements = []                        # every start tag's name
        self.attributes = []                      # (tag name, attribute name, value)
        self.title = ""
        self.ids = set()
        self.trust_cells = {}                     # data-trust "<symbol rank>:<cell>" -> attributes
        self._open = []                           # [tag attribute, value, text parts]
        self._in_title = False
        self._text = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append(tag)
        if any(name == "data-trust" for name, _ in attrs):
            cell = dict(attrs)
            self.trust_cells[cell["data-trust"]] = cell
        for name, value in attrs:
            self.attributes.append((tag, name, value or ""))
            if name == "id":
                self.ids.add(value)
            if name in TAGS:
                self._open.append([name, value, [], tag])
        if tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if self._open and self._open[-1][3] == tag:
            name, value, parts, _ = self._open.pop()
            self.tagged[name].append((value, "".join(parts).strip()))

    def handle_data(self, data):
        self._text.append(data)
        if self._in_title:
            self.title += data
        for entry in self._open:
            entry[2].append(data)

    @property
    def text(self) -> str:
        return "".join(self._text)

    def numbers(self, tag: str) -> dict:
        """{attribute value: the number shown} for one tag (thousands separators removed)."""
        out = {}
        for key, shown in self.tagged[tag]:
            cleaned = shown.replace(",", "")
            out[key] = int(cleaned) if cleaned.lstrip("-").isdigit() else shown
        return out

    def summary_numbers(self) -> dict:
        return self.numbers("data-summary")


def summary_as_shown(summary: dict) -> dict:
    """summary.json in the keys the report tags its numbers with."""
    shown = {"input_records": summary["input_records"], "clean_records": summary["clean_records"],
             "ignored": summary["ignored"], "duplicates": summary["duplicates"],
             "superseded": summary["superseded"],
             "dead_letters": sum(summary["dead_letters"].values()),
             "corrupt_periods": summary["corrupt_periods"], "symbols": summary["symbols"],
             "balanced": "balanced: yes" if summary["balanced"] else "balanced: NO"}
    shown.update({f"dead_letters.{reason}": n for reason, n in summary["dead_letters"].items()})
    shown.update({f"gaps.{cls}": n for cls, n in summary["gaps"].items()})
    return shown
