"""Every venue through the whole batch job with injected faults: one synthetic cryptofeed capture
per venue (tests/tooling/venue_frames.py: the venue's own wire format, its REST snapshot lines where
it has them) with a dropped message, a duplicated one and a bad record, run once for all venues.
A dropped message is exactly one gap row carrying the venue's ids (venues with per-key ids), a
message sent twice is a duplicate (venues with ids), the bad record a dead letter with its reason
and stream; venues without per-key ids report their records unverified, and declare no gap but
Bitfinex, whose lost message breaks its connection's numbers (a gap of cause connection_break).
"""
import os

import pytest

from beam_pipeline.cli import main
from tests.conftest import Outputs
from tests.tooling.venue_frames import VENUES, cryptofeed_capture, feed

DROPPED, DUPLICATED = 6, 8


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("venue_faults")
    expected = {}
    for venue in VENUES:
        items, ids = feed(venue)
        bad = (venue.bad_price(ids[3], ids[2], items[3][1]), items[3][1], 0, False)
        faulted = items[:DROPPED] + items[DROPPED + 1:DUPLICATED + 1] + [items[DUPLICATED]] \
            + items[DUPLICATED + 1:] + [bad]
        path = folder / f"{venue.exchange}.ws.1.0"
        path.write_bytes(b"\n".join(cryptofeed_capture(venue, faulted)) + b"\n")
        expected[venue.exchange] = (venue, ids, len(faulted))
    out = folder / "out"
    code = main(["--input", str(folder / "*.ws.1.0"), "--output", str(out)])
    return code, Outputs(out), expected


def test_the_faulted_captures_balance(run):
    code, out, expected = run
    summary = out.summary()
    assert summary["balanced"] and code == 0
    assert summary["dead_letters"] == {"bad_price_level": len(VENUES)}


@pytest.mark.parametrize("venue", VENUES, ids=[venue.exchange for venue in VENUES])
def test_each_venue_reports_its_faults(run, venue):
    _, out, expected = run
    _, ids, records = expected[venue.exchange]
    rows = {os.path.basename(row["file"]): row for row in out.summary()["files"]}
    row = rows[f"{venue.exchange}.ws.1.0"]
    has_ids = venue.checked or venue.exchange == "bitfinex"   # its connection numbers dedup
    #                                                           and show a lost message
    ignored = 1 if venue.exchange == "bitfinex" else 0        # its subscribed reply
    assert (row["records"], row["dead"], row["ignored"]) == (records + ignored, 1, ignored)
    assert row["duplicates"] == (1 if has_ids else 0)
    assert row.get("unverified_records", 0) == (0 if venue.checked else records - 1)
    gaps = [(g["exchange"], g["market"], g["symbol"], g["last_good_id"], g["next_first_id"])
            for g in out.parquet_rows("gaps") if g["exchange"] == venue.exchange]
    key = (venue.exchange, venue.market, venue.symbol)
    assert gaps == ([(*key, ids[DROPPED - 1], ids[DROPPED + 1])] if has_ids else [])
    dead = [d for d in out.dead_letters() if d["source"].rsplit(":", 1)[0].endswith(f"{venue.exchange}.ws.1.0")]
    assert [(d["reason"], d["exchange"], d["market"], d["symbol"]) for d in dead] == \
        [("bad_price_level", *key)]
