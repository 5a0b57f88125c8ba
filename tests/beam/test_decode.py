"""Tests of transforms/decode.py: DecodeRecords on Created RawBatches (files and Pub/Sub messages)."""
import json
import os
import random
import time

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipeline.core.model import DELTA, PREVIOUS_LINK, RANGE_PLUS_ONE, SNAPSHOT, Event, RawBatch
from tests.tooling.synthetic import BAD_RECORDS, REASON_OF, START_MS, _bad_record
from transforms.decode import DecodeRecords

CAPTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        os.pardir, "shared", "data", "cryptofeed")
MAX_RECORD_BYTES = 4096
INGEST = 1_700_000_000_123

DEPTH = {"e": "depthUpdate", "E": START_MS, "s": "BTCUSDT", "U": 5, "u": 6,
         "b": [["100.10", "2.000"]], "a": [["100.20", "0.500"]]}


def js(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def envelope(payload, kind="delta", market="spot", symbol="BTCUSDT") -> bytes:
    return js({"exchange": "binance", "market": market, "symbol": symbol,
               "recv_ts_ms": START_MS + 7, "type": kind, "payload": payload})


def delta_event(source, **changes):
    fields = dict(exchange="binance", market="spot", symbol="BTCUSDT", kind=DELTA, first_id=5,
                  last_id=6, prev_id=None, event_time=START_MS, recv_time=START_MS + 7,
                  bids=b'[["100.10","2.000"]]', asks=b'[["100.20","0.500"]]', rule=RANGE_PLUS_ONE,
                  source=source)
    fields.update(changes)
    return Event(**fields)


def letter_view(letter):
    return (letter.reason, letter.stage, letter.payload, letter.source, letter.ingest_time)


def flatten(events):
    return events | "Flatten" >> beam.FlatMap(lambda batch: batch.events)


def test_file_batches_events_dead_letters_and_tallies():
    rng = random.Random(3)
    bad = [(kind, _bad_record(kind, rng, MAX_RECORD_BYTES)) for kind in BAD_RECORDS]
    trade = envelope({"e": "aggTrade", "E": START_MS, "s": "BTCUSDT", "p": "100.00", "q": "0.5"},
                     kind="trade")
    snapshot = envelope({"lastUpdateId": 4, "bids": [["100.00", "1.0"]], "asks": []},
                        kind="snapshot")
    records = [(1, snapshot), (2, envelope(DEPTH)), (3, trade)]
    records += [(10 + i, raw) for i, (_, raw) in enumerate(bad)]
    feed = RawBatch("/data/feed.jsonl", "envelope", None, None, records, ingest_time=INGEST)
    # raw Binance messages: one depth update, a bookTicker (no `e`), invalid UTF-8 in a price
    raw_batch = RawBatch("/data/raw.jsonl", "binance", None, None, [
        (1, js(dict(DEPTH, U=7, u=9))),
        (2, b'{"u":400900217,"s":"BTCUSDT","b":"25.35","B":"31.21","a":"25.36","A":"40.66"}'),
        (4, js(DEPTH).replace(b"100.10", b"100.\xff0")),
    ], ingest_time=INGEST)

    with TestPipeline() as p:
        decoded = p | beam.Create([feed, raw_batch]) | DecodeRecords(MAX_RECORD_BYTES)
        # one list of events per input batch
        assert_that(decoded.events | "Sizes" >> beam.Map(lambda batch: len(batch.events)),
                    equal_to([2, 1]), label="Batches")
        assert_that(flatten(decoded.events), equal_to([
            Event("binance", "spot", "BTCUSDT", SNAPSHOT, 4, 4, None, None, START_MS + 7,
                  b'[["100.00","1.0"]]', b"[]", RANGE_PLUS_ONE, "/data/feed.jsonl:1"),
            delta_event("/data/feed.jsonl:2"),
            delta_event("/data/raw.jsonl:1", first_id=7, last_id=9, recv_time=None),
        ]), label="Events")
        assert_that(decoded.dead_letter | beam.Map(letter_view), equal_to(
            [(REASON_OF[kind], "decode", raw, f"/data/feed.jsonl:{10 + i}", INGEST)
             for i, (kind, raw) in enumerate(bad)]
            + [("invalid_utf8", "decode", js(DEPTH).replace(b"100.10", b"100.\xff0"),
                "/data/raw.jsonl:4", INGEST)]), label="DeadLetters")
        # counted per file: the summary's per-file table
        assert_that(decoded.tally, equal_to([
            (("input_records", "/data/feed.jsonl"), 3 + len(BAD_RECORDS)),
            (("ignored", "/data/feed.jsonl"), 1), (("ignored.other_stream", "/data/feed.jsonl"), 1),
            (("input_records", "/data/raw.jsonl"), 3), (("ignored", "/data/raw.jsonl"), 1),
            (("ignored.other_stream", "/data/raw.jsonl"), 1)]),
            label="Tallies")


# What a bad record still yields (symbol, first_id, last_id): its dead letter keeps it.
_SPOT = "binance:spot:BTCUSDT"
YIELDED = {"missing_field": (_SPOT, 5, None), "mistyped_field": (_SPOT, None, 6),
           "invalid_ids": (_SPOT, -5, 6), "inverted_ids": (_SPOT, 9, 6),
           "missing_prev_id": ("binance:usdm:BTCUSDT", 5, 6), "bad_price_level": (_SPOT, 5, 6)}


def test_each_bad_record_kind_has_its_reason_and_a_message():
    assert set(BAD_RECORDS) >= {"bad_json", "invalid_utf8", "missing_field", "mistyped_field",
                                "invalid_ids", "inverted_ids", "missing_prev_id",
                                "bad_price_level", "record_too_large"}
    rng = random.Random(5)
    records = [(n, _bad_record(kind, rng, MAX_RECORD_BYTES)) for n, kind in enumerate(BAD_RECORDS, 1)]
    # the reader hands over at most max_record_bytes + 1 bytes of a line
    records = [(n, raw[:MAX_RECORD_BYTES + 1]) for n, raw in records]
    assert len(records[BAD_RECORDS.index("record_too_large")][1]) == MAX_RECORD_BYTES + 1
    batch = RawBatch("f", "envelope", None, None, records, ingest_time=INGEST)
    start = int(time.time() * 1000)
    no_ingest = RawBatch("g", "envelope", None, None, [(7, b"{")])  # ingest_time 0: stamped now

    with TestPipeline() as p:
        decoded = p | beam.Create([batch, no_ingest]) | DecodeRecords(MAX_RECORD_BYTES)
        assert_that(decoded.dead_letter | beam.Map(
            lambda d: (d.source, d.reason, bool(d.message), d.symbol, d.first_id, d.last_id)),
            equal_to([(f"f:{n}", REASON_OF[kind], True, *YIELDED.get(kind, (None, None, None)))
                      for n, kind in enumerate(BAD_RECORDS, 1)]
                     + [("g:7", "bad_json", True, None, None, None)]), label="Reasons")
        assert_that(decoded.dead_letter | "Ingest" >> beam.Map(
            lambda d: d.ingest_time == INGEST if d.source != "g:7"
            else start <= d.ingest_time <= start + 600_000), equal_to([True] * 10),
            label="IngestTime")
        assert_that(decoded.events, equal_to([]), label="NoEvents")
        assert_that(decoded.tally, equal_to([(("input_records", "f"), len(BAD_RECORDS)),
                                             (("input_records", "g"), 1)]), label="Tallies")


def test_record_too_large_limit_is_exclusive():
    line = envelope(DEPTH)
    at_limit = RawBatch("f", "envelope", None, None, [(1, line)], ingest_time=INGEST)
    over = RawBatch("g", "envelope", None, None, [(1, line + b" ")], ingest_time=INGEST)
    with TestPipeline() as p:
        decoded = p | beam.Create([at_limit, over]) | DecodeRecords(len(line))
        assert_that(flatten(decoded.events), equal_to([delta_event("f:1")]))
        assert_that(decoded.dead_letter | beam.Map(lambda d: (d.reason, d.source)),
                    equal_to([("record_too_large", "g:1")]), label="TooLarge")


def test_pubsub_messages():
    sub = "pubsub:projects/p/subscriptions/depth"
    attributes = {"exchange": "binance", "market": "usdm", "symbol": "BTCUSDT",
                  "recv_ts_ms": str(START_MS + 9)}
    usdm = js(dict(DEPTH, pu=4, T=START_MS - 3))
    messages = [
        RawBatch(f"{sub}/m1", "message", None, None, [(0, usdm)], attributes, INGEST),
        RawBatch(f"{sub}/m2", "message", None, None, [(0, envelope(DEPTH))], {}, INGEST),
        RawBatch(f"{sub}/m3", "message", None, None, [(0, envelope(
            {"e": "trade", "E": START_MS, "s": "BTCUSDT", "p": "1.0", "q": "1.0"}, kind="trade"))],
            {}, INGEST),
        RawBatch(f"{sub}/m4", "message", None, None, [(0, usdm)],
                 dict(attributes, symbol="ETHUSDT"), INGEST),
        RawBatch(f"{sub}/m5", "message", None, None, [(0, js(DEPTH))], attributes, INGEST),
        RawBatch(f"{sub}/m6", "message", None, None, [(0, usdm)],
                 dict(attributes, recv_ts_ms="soon"), INGEST),
        # not a string as Pub/Sub would send: an unforeseen error is dead-lettered, not raised
        RawBatch(f"{sub}/m7", "message", None, None, [(0, usdm)],
                 dict(attributes, recv_ts_ms=[1]), INGEST),
    ]
    with TestPipeline() as p:
        decoded = p | beam.Create(messages) | DecodeRecords(MAX_RECORD_BYTES)
        assert_that(flatten(decoded.events), equal_to([
            delta_event(f"{sub}/m1", market="usdm", prev_id=4, recv_time=START_MS + 9,
                        rule=PREVIOUS_LINK),
            delta_event(f"{sub}/m2"),
        ]), label="Events")
        assert_that(decoded.dead_letter | beam.Map(letter_view), equal_to([
            ("symbol_mismatch", "decode", usdm, f"{sub}/m4", INGEST),
            ("missing_prev_id", "decode", js(DEPTH), f"{sub}/m5", INGEST),
            ("mistyped_field", "decode", usdm, f"{sub}/m6", INGEST),
            ("processing_error", "decode", usdm, f"{sub}/m7", INGEST),
        ]), label="DeadLetters")
        assert_that(decoded.tally | beam.CombinePerKey(sum),
                    equal_to([("input_records", 7), ("ignored", 1),
                             ("ignored.other_stream", 1)]), label="Tallies")


def test_cryptofeed_capture_batches():
    """The futures websocket capture as the reader would batch it: every depth update decodes."""
    with open(os.path.join(CAPTURES, "BINANCE_FUTURES.ws.1.0"), "rb") as handle:
        lines = handle.read().split(b"\n")
    records = [(n, line) for n, line in enumerate(lines, 1) if line.strip() and n > 1]
    batch = RawBatch("BINANCE_FUTURES.ws.1.0", "cryptofeed", "binance", "usdm", records,
                     ingest_time=INGEST)
    headerless = RawBatch("x.ws", "cryptofeed", None, None, records[:2], ingest_time=INGEST)
    with TestPipeline() as p:
        decoded = p | beam.Create([batch, headerless]) | DecodeRecords(MAX_RECORD_BYTES)
        events = flatten(decoded.events)
        assert_that(events | beam.Map(lambda e: (e.symbol, e.market, e.rule))
                    | beam.combiners.Count.PerElement(), equal_to([
                        (("SUSHIUSDT", "usdm", PREVIOUS_LINK), 255),
                        (("AKROUSDT", "usdm", PREVIOUS_LINK), 189),
                        (("KEEPUSDT", "usdm", PREVIOUS_LINK), 135),
                        (("CTKUSDT", "usdm", PREVIOUS_LINK), 185)]), label="PerSymbol")
        assert_that(events | "Sources" >> beam.Map(lambda e: e.source)
                    | beam.combiners.Top.Smallest(1, key=lambda s: int(s.rsplit(":", 1)[1])),
                    equal_to([["BINANCE_FUTURES.ws.1.0:3"]]), label="FirstSource")
        # websocket lines without the header that names the stream cannot be framed
        assert_that(decoded.dead_letter | beam.Map(lambda d: (d.reason, d.source)),
                    equal_to([("bad_framing", "x.ws:2"), ("bad_framing", "x.ws:3")]),
                    label="DeadLetters")
        assert_that(decoded.tally, equal_to([(("input_records", "BINANCE_FUTURES.ws.1.0"), 1535),
                                             (("ignored", "BINANCE_FUTURES.ws.1.0"), 771),
                                             (("ignored.other_stream", "BINANCE_FUTURES.ws.1.0"), 771),
                                             (("input_records", "x.ws"), 2)]), label="Tallies")
