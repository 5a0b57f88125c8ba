"""The shared captures of other venues (../shared/data/exchanges/, cryptofeed raw logs) through the
whole batch job, once for all of them, checked against facts this test derives on its own: a small
scan of each raw file with the json module (not the adapters) counts its records, connect lines,
order-book messages, snapshots and symbols, and replays each venue's continuity rule over its ids
to count the breaks the file really holds. Every capture must be read with no dead letter at all
(no unknown_format, no unsupported_exchange).
"""
import ast
import gzip
import json
import os
import re
from collections import defaultdict
from urllib.parse import parse_qs, urlparse

import pytest

from beam_pipeline.cli import format_summary_table, main
from tests.conftest import REPO, Outputs

EXCHANGES = os.path.join(os.path.dirname(REPO), "shared", "data", "exchanges")
SENT = re.compile(r"^\S+ <- \d")
CONNECT = re.compile(r"^\S+ <-> \d")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("venues") / "out"
    code = main(["--input", os.path.join(EXCHANGES, "*.gz"), "--output", str(out)])
    return code, Outputs(out)


def lines(name):
    with gzip.open(os.path.join(EXCHANGES, name), "rt") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line.strip():
                yield line


def frame(line):
    body = line.partition(": ")[2]
    if body.startswith(("b'", 'b"')):                       # HTX: gzip bytes (trusted test data)
        return json.loads(gzip.decompress(ast.literal_eval(body)))
    return json.loads(body)


class Scan:
    """What one raw file holds, by this test's own reading."""

    def __init__(self, name):
        self.name, self.records, self.connects = name, 0, 0
        self.book, self.snapshots, self.symbols = 0, 0, set()
        self.ids = defaultdict(list)         # symbol -> [(kind, first, last, prev)] in file order
        self.rest = {}                       # symbol -> REST snapshot id
        chans = {}
        for line in lines(name):
            if CONNECT.match(line):
                self.connects += 1
                continue
            if SENT.match(line):
                continue
            self.records += 1
            if " -> " in line.split(": ", 1)[0]:          # a REST line: url -> ts: body
                url = line.split(" -> ", 1)[0]
                query = parse_qs(urlparse(url).query)
                symbol = (query.get("symbol") or query.get("currency_pair") or query.get("contract"))[0]
                body = frame(line)
                self.rest[symbol] = int(body["data"]["sequence"] if "data" in body else body["id"])
                self.book, self.snapshots = self.book + 1, self.snapshots + 1
                self.symbols.add(symbol)
                continue
            m = frame(line)
            if isinstance(m, dict) and m.get("event") == "subscribed" and "chanId" in m:
                chans[m["chanId"]] = m
            found = self.book_message(m, chans)
            if found:
                symbol, kind, first, last, prev = found
                self.book += 1
                self.snapshots += kind == "snapshot"
                self.symbols.add(symbol)
                self.ids[symbol].append((kind, first, last, prev))

    def book_message(self, m, chans):
        """(symbol, kind, first id, last id, previous id) of an order-book message, else None."""
        venue = self.name.split(".")[0]
        if venue == "OKX" and isinstance(m, dict) and m.get("arg", {}).get("channel") == "books" \
                and "data" in m:
            return m["arg"]["instId"], m["action"], None, None, None
        if venue == "KRAKEN" and isinstance(m, list) and str(m[-2]).startswith("book"):
            return m[-1], "snapshot" if "as" in m[1] else "delta", None, None, None
        if venue == "DERIBIT" and isinstance(m, dict) and m.get("method") == "subscription" \
                and m["params"]["channel"].startswith("book."):
            d = m["params"]["data"]
            return (d["instrument_name"], "snapshot" if d["type"] == "snapshot" else "delta",
                    d["change_id"], d["change_id"], d.get("prev_change_id"))
        if venue == "KUCOIN" and isinstance(m, dict) and str(m.get("topic")).startswith("/market/level2"):
            d = m["data"]
            return d["symbol"], "delta", d["sequenceStart"], d["sequenceEnd"], None
        if venue.startswith("GATEIO") and isinstance(m, dict) \
                and str(m.get("channel")).endswith(".order_book_update") and m.get("event") == "update":
            r = m["result"]
            return r["s"], "delta", r["U"], r["u"], None
        if venue == "BITFINEX" and isinstance(m, list) and m[1] != "hb" \
                and chans.get(m[0], {}).get("channel") == "book":
            kind = "snapshot" if isinstance(m[1][0], list) else "delta"
            return chans[m[0]]["symbol"], kind, m[2], m[2], None
        if venue == "KRAKEN_FUTURES" and isinstance(m, dict) and "event" not in m \
                and m.get("feed") in ("book", "book_snapshot"):
            kind = "snapshot" if m["feed"] == "book_snapshot" else "delta"
            return m["product_id"], kind, m["seq"], m["seq"], None
        if venue == "BITGET" and isinstance(m, dict) and m.get("arg", {}).get("channel") == "books" \
                and "data" in m:
            return m["arg"]["instId"], m["action"], None, None, None
        if venue == "COINBASE" and isinstance(m, dict) and m.get("type") in ("snapshot", "l2update"):
            return m["product_id"], "snapshot" if m["type"] == "snapshot" else "delta", None, None, None
        if venue == "BYBIT" and isinstance(m, dict) and str(m.get("topic")).startswith("orderBookL2_25"):
            seq = int(m["cross_seq"])
            return m["topic"].split(".")[1], m["type"], seq, seq, None
        if venue == "HUOBI" and isinstance(m, dict) and ".depth." in str(m.get("ch")):
            return m["ch"].split(".")[1], "snapshot", None, None, None
        return None

    def breaks_and_superseded(self, rest):
        """Replays the venue's rule: (breaks after the first anchor, deltas a snapshot covered)."""
        breaks = superseded = 0
        venue = self.name.split(".")[0]
        for symbol, messages in self.ids.items():
            cursor = rest.get(symbol)
            for kind, first, last, prev in messages:
                if kind == "snapshot":
                    cursor = last
                    continue
                if cursor is None:
                    continue
                if venue == "DERIBIT":
                    breaks += prev != cursor
                elif last <= cursor:
                    superseded += 1
                    continue
                elif not first <= cursor + 1 <= last:
                    breaks += 1
                cursor = last
        return breaks, superseded


WS_FILES = {   # file -> (exchange, market(s), rule checked per key)
    "OKX.ws.1.0.gz": ("okx", {"spot", "swap", "futures"}, False),
    "KRAKEN.ws.50.0.gz": ("kraken", {"spot"}, False),
    "DERIBIT.ws.1.0.gz": ("deribit", {"option"}, True),
    "KUCOIN.ws.1.0.gz": ("kucoin", {"spot"}, True),
    "GATEIO.ws.1.0.gz": ("gateio", {"spot"}, True),
    "GATEIO_FUTURES.ws.1.0.gz": ("gateio", {"futures"}, True),
    "BITFINEX.ws.11.0.gz": ("bitfinex", {"spot"}, False),
    "KRAKEN_FUTURES.ws.1.0.gz": ("kraken_futures", {"futures_inverse"}, True),
    "BITGET.ws.1.0.gz": ("bitget", {"sp"}, False),
    "COINBASE.ws.28.0.gz": ("coinbase", {"spot"}, False),
    "BYBIT.ws.25.0.gz": ("bybit", {"linear"}, False),
    "HUOBI.ws.44.0.gz": ("htx", {"spot"}, True),
}
REST_OF = {"KUCOIN.ws.1.0.gz": "KUCOIN.http.0.0.gz", "GATEIO.ws.1.0.gz": "GATEIO.http.0.0.gz",
           "GATEIO_FUTURES.ws.1.0.gz": "GATEIO_FUTURES.http.0.0.gz"}


def test_every_capture_is_read_without_a_dead_letter_and_balances(run):
    code, out = run
    summary = out.summary()
    assert code == 0 and summary["balanced"] and summary["dead_letters"] == {}
    assert out.dead_letters() == []
    files = {os.path.basename(row["file"]) for row in summary["files"]}
    assert files == {name for name in os.listdir(EXCHANGES) if name.endswith(".gz")}
    assert all(row["format"] == "cryptofeed" for row in summary["files"])
    # what no rule could check is said, in the summary and in the table the run prints
    unverified = sum(Scan(name).book for name, (_, _, checked) in WS_FILES.items() if not checked)
    assert summary["unverified_records"] == unverified == 19_601
    table = format_summary_table(summary, per_file=False)
    assert f"unverified (no per-key ids)        {unverified:,}" in table


@pytest.mark.parametrize("name", sorted(WS_FILES))
def test_each_capture_holds_what_its_raw_file_says(run, name):
    code, out = run
    summary = out.summary()
    rows = {os.path.basename(row["file"]): row for row in summary["files"]}
    exchange, markets, checked = WS_FILES[name]
    scan = Scan(name)
    rest = Scan(REST_OF[name]) if name in REST_OF else None
    row = rows[name]
    assert (row["records"], row["dead"], row["duplicates"]) == (scan.records, 0, 0)
    # every record that is not an order-book message is ignored, by a named reason
    assert row["ignored"] == scan.records - scan.book
    assert sum(row["ignored_reasons"].values()) == row["ignored"]
    assert "other_stream" not in row["ignored_reasons"]
    assert row["clean"] + row["superseded"] == scan.book
    assert row.get("unverified_records", 0) == (0 if checked else scan.book)
    clean = [r for r in out.parquet_rows("clean") if r["exchange"] == exchange
             and r["market"] in markets]           # one capture per exchange and market
    assert {r["symbol"] for r in clean} == scan.symbols
    assert {r["market"] for r in clean} == markets
    assert sum(r["kind"] == "snapshot" for r in clean) == scan.snapshots + (
        rest.snapshots if rest else 0)
    assert len(clean) == row["clean"] + (rest.book if rest else 0)
    # the gaps and reconnects the file really holds (one connection each: no reconnect)
    gaps = [g for g in out.parquet_rows("gaps") if g["exchange"] == exchange
            and g["symbol"] in scan.symbols]
    if checked:
        breaks, superseded = scan.breaks_and_superseded(rest.rest if rest else {})
        assert row["superseded"] == superseded
        assert len(gaps) == breaks
    else:                                   # no per-key ids: no gap can be told, all unverified
        assert gaps == [] and row["superseded"] == 0
    assert scan.connects == 1 and summary["reconnects"] == 0
    if rest is not None:
        rest_row = rows[REST_OF[name]]
        assert (rest_row["records"], rest_row["clean"], rest_row["ignored"]) == (
            rest.records, rest.records, 0)
        assert rest.symbols == scan.symbols


def test_bitfinex_connection_sequence_is_whole():
    """SEQ_ALL: every array message of the connection (books, tickers, trades, heartbeats) carries
    the next number. The capture's 1,670 run 1..1670 without a break, so its books lost nothing;
    the pipeline orders each book by these numbers (rule connection_sequence, unverified)."""
    seqs = [frame(line)[-1] for line in lines("BITFINEX.ws.11.0.gz")
            if not CONNECT.match(line) and not SENT.match(line) and isinstance(frame(line), list)]
    assert seqs == list(range(1, 1671))


def test_the_captures_measured_facts(run):
    """The figures the README's capture table states, as this test's scan measures them."""
    facts = {name: (Scan(name).records, Scan(name).book) for name in
             ("OKX.ws.1.0.gz", "DERIBIT.ws.1.0.gz", "BITFINEX.ws.11.0.gz", "HUOBI.ws.44.0.gz")}
    assert facts == {"OKX.ws.1.0.gz": (410, 290), "DERIBIT.ws.1.0.gz": (136, 46),
                     "BITFINEX.ws.11.0.gz": (1693, 1600), "HUOBI.ws.44.0.gz": (362, 292)}
    _, out = run
    assert out.summary()["gaps"] == {"small": 0, "medium": 0, "large": 0, "reset": 0}
