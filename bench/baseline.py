"""The plain-Python baseline: what a user would write to check a capture without Beam.

Read the gzip file line by line, parse each line with orjson, and check continuity per
(exchange, market, symbol):

  spot (range_plus_one)  U <= c+1 <= u
  usdm (previous_link)   pu == c   (right after a snapshot also U <= c <= u, Binance's bridge rule)

A snapshot sets the cursor c to its lastUpdateId; a delta with u <= c is stale (duplicate or covered
by a snapshot) and skipped. No outputs are written: it counts and reports.

    python -m bench.baseline FILE.jsonl.gz        # prints one JSON object
"""
from __future__ import annotations

import gzip
import sys
import time

import orjson


def check(path: str) -> dict:
    cursors: dict = {}      # key -> last update id the book is complete up to
    bridging: dict = {}     # key -> the last accepted event was a snapshot
    records = clean = gaps = stale = ignored = unanchored = 0
    uncompressed = 0
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        for line in handle:
            uncompressed += len(line)
            records += 1
            env = orjson.loads(line)
            payload = env["payload"]
            key = (env["exchange"], env["market"], env["symbol"])
            kind = env["type"]
            if kind == "snapshot":
                cursors[key] = payload["lastUpdateId"]
                bridging[key] = True
                clean += 1
                continue
            if kind != "delta":
                ignored += 1
                continue
            first, last = payload["U"], payload["u"]
            c = cursors.get(key)
            if c is None:                      # no snapshot yet: start an unanchored segment
                unanchored += 1
            elif last <= c:
                stale += 1
                continue
            else:
                prev = payload.get("pu")
                if prev is not None:
                    ok = prev == c or (bridging[key] and first <= c <= last)
                else:
                    ok = first <= c + 1 <= last
                if not ok:
                    gaps += 1
            cursors[key] = last
            bridging[key] = False
            clean += 1
    return {"records": records, "clean": clean, "gaps": gaps, "stale": stale, "ignored": ignored,
            "unanchored_starts": unanchored, "symbols": len(cursors),
            "uncompressed_bytes": uncompressed}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m bench.baseline FILE", file=sys.stderr)
        return 2
    start = time.perf_counter()
    result = check(argv[0])
    result["seconds_in_process"] = round(time.perf_counter() - start, 3)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
