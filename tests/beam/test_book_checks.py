"""--book_checks through the whole batch job (beam_pipeline.cli.main, in process): the real
Binance captures as they are report no book problem; with a crossed book and a stale REST snapshot
injected into copies of them, each is one corrupt period with its reason, ids and detail."""
import json
import os
import re

from beam_pipeline.cli import main
from tests.conftest import CAPTURE_FILES, REPO

SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
UNCHANGED = CAPTURE_FILES + [os.path.join(SHARED, "hftbacktest", "ethusdt_20240808.gz"),
                             os.path.join(SHARED, "cryptofeed-current", "BINANCE-b38f7c.0")]


def _run(inputs, output):
    return main(["--input", ",".join(inputs), "--output", str(output), "--book_checks"])


def test_unchanged_captures_report_no_book_problem(tmp_path, outputs):
    assert _run(UNCHANGED, tmp_path / "out") == 0
    out = outputs(tmp_path / "out")
    assert out.parquet_rows("corrupt_periods") == []
    assert out.summary()["balanced"]


def test_injected_crossed_book_and_drift_are_each_reported_once(tmp_path, outputs):
    ws, http = CAPTURE_FILES[0], CAPTURE_FILES[1]
    with open(ws) as handle:
        lines = handle.read().split("\n")
    nkn = [i for i, line in enumerate(lines) if '"s":"NKNUSDT"' in line]
    # a bid far above the best ask in the 100th NKNUSDT delta: crossed from there to the end
    crossed_at = nkn[100]
    frame = json.loads(lines[crossed_at].partition(": ")[2])
    lines[crossed_at] = lines[crossed_at].replace('"b":[', '"b":[["0.40000000","1.00000000"],', 1)
    last_u = json.loads(lines[nkn[-1]].partition(": ")[2])["data"]["u"]
    # the first REST snapshot again, stamped as taken at the end of the 60th delta: stale
    stale_u = json.loads(lines[nkn[60]].partition(": ")[2])["data"]["u"]
    with open(http) as handle:
        rest = handle.read().rstrip("\n").split("\n")
    stale = re.sub(r'"lastUpdateId":\d+', f'"lastUpdateId":{stale_u}', rest[0])
    stale = stale.replace(" -> 1633998512.320639:", " -> 1633998522.2:")
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "BINANCE.ws.1.0").write_text("\n".join(lines))
    (tmp_path / "ws" / "BINANCE.http.0.0").write_text("\n".join(rest + [stale]) + "\n")
    assert _run([str(tmp_path / "ws" / "*")], tmp_path / "out") == 0
    rows = sorted(outputs(tmp_path / "out").parquet_rows("corrupt_periods"),
                  key=lambda r: r["start_id"])
    assert [(r["symbol"], r["reason"], r["start_id"], r["end_id"]) for r in rows] == [
        ("NKNUSDT", "snapshot_mismatch", 499869752 + 1, stale_u),
        ("NKNUSDT", "crossed_book", frame["data"]["U"], last_u)]
    assert re.fullmatch(r"[1-9]\d* levels differ from the book rebuilt since snapshot 499869752",
                        rows[0]["detail"])
    assert rows[1]["detail"].startswith("best bid 0.40000000 >= best ask")


# ---- checksum venues ------------------------------------------------------------------------

EXCHANGES = os.path.join(SHARED, "exchanges")
CHECKSUM_CAPTURES = ["OKX.ws.1.0.gz", "KRAKEN.ws.50.0.gz", "BITGET.ws.1.0.gz"]


def test_checksum_captures_report_no_mismatch(tmp_path, outputs):
    assert _run([os.path.join(EXCHANGES, name) for name in CHECKSUM_CAPTURES],
                tmp_path / "out") == 0
    out = outputs(tmp_path / "out")
    assert out.parquet_rows("corrupt_periods") == []
    summary = out.summary()
    assert summary["balanced"]
    # every checksum the captures carry (counted by test_books.py's own reader of the raw files:
    # OKX 290, Kraken 4,269, Bitget 443) is verified; every clean message is checked
    from beam_pipeline.core.books.checksums import NOT_SENT
    from tests.unit.test_books import CAPTURES
    expected = sum(1 for name in CHECKSUM_CAPTURES for m in CAPTURES[name][0](name)
                   if m[6] is not None and m[6] != NOT_SENT)
    checks = summary["book_checks"]
    assert checks["checksums_verified"] == expected
    # none of the three captures has per-key ids: each verified message was unverified by ids
    assert checks["unverified_checksum_verified"] == expected
    assert summary["unverified_records"] == summary["clean_records"]
    assert checks["messages_checked"] == summary["clean_records"]
    assert checks["failed"] == checks["checksum_mismatch"] == checks["crossed_book"] == 0


def test_one_altered_kraken_size_is_one_checksum_mismatch_at_that_message(tmp_path, outputs):
    import gzip
    from decimal import Decimal

    from tests.unit.test_books import CAPTURES, _target
    reader, profile, _ = CAPTURES["KRAKEN.ws.50.0.gz"]
    messages = list(reader("KRAKEN.ws.50.0.gz"))
    target, side, j = _target(messages, profile)
    pair, number, recv, _, bids, asks, _ = messages[target]
    price, size = (bids, asks)[side - 4][j]
    with gzip.open(os.path.join(EXCHANGES, "KRAKEN.ws.50.0.gz"), "rt") as handle:
        lines = handle.read().split("\n")
    old = f'["{price}","{size}"'
    assert lines[number - 1].count(old) == 1
    lines[number - 1] = lines[number - 1].replace(old, f'["{price}","{Decimal(size) + 1}"')
    copy = tmp_path / "in" / "KRAKEN.ws.50.0.gz"
    copy.parent.mkdir()
    with gzip.open(copy, "wt") as handle:
        handle.write("\n".join(lines))
    assert _run([str(copy)], tmp_path / "out") == 0
    rows = outputs(tmp_path / "out").parquet_rows("corrupt_periods")
    # no ids on Kraken: a message's id is its receive ms x 10^6 + its line number
    assert [(r["symbol"], r["reason"], r["start_id"]) for r in rows] == [
        (pair, "checksum_mismatch", recv * 10**6 + number)]
    assert rows[0]["detail"].startswith("sent ")
    checks = outputs(tmp_path / "out").summary()["book_checks"]
    assert checks["failed"] == checks["checksum_mismatch"] == 1
    # status/: the pair's book is still in that period at the end (no snapshot resyncs it); a
    # streaming run of the same file ends with the same status per key, counts included
    from beam_pipeline.readback import read_status
    status = {r["symbol"]: r for r in read_status(str(tmp_path / "out")).to_pylist()}
    assert (status[pair]["open_corrupt_reason"], status[pair]["open_corrupt_start_id"],
            status[pair]["book_checks_failed"]) == ("checksum_mismatch", recv * 10**6 + number, 1)
    assert sum(r["checksum_verified_messages"] for r in status.values()) == \
        checks["checksums_verified"]
    assert main(["--streaming", "--input", str(copy), "--output", str(tmp_path / "stream"),
                 "--book_checks"]) == 0
    streamed = read_status(str(tmp_path / "stream")).drop(["as_of"]).to_pylist()
    assert streamed == read_status(str(tmp_path / "out")).drop(["as_of"]).to_pylist()
