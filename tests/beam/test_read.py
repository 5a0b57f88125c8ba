"""Tests of transforms/read.py: ReadFeedFiles on real files (plain, .gz, truncated .gz, the cryptofeed
captures read in place) and split_lines on its own."""
import gzip
import os
import zlib

import apache_beam as beam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipeline.options import FeedCheckOptions
from transforms.read import RECORDS_PER_BATCH, ReadFeedFiles, _split_slowly, split_lines

_DEFAULTS = FeedCheckOptions.defaults()
DEFAULT_READ = (_DEFAULTS.input_format, _DEFAULTS.max_record_bytes)   # the options' defaults

CAPTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        os.pardir, "shared", "data", "cryptofeed")

ENV_1 = (b'{"exchange":"binance","market":"spot","symbol":"BTCUSDT","recv_ts_ms":1700000000007,'
         b'"type":"delta","payload":{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT","U":5,"u":6,'
         b'"b":[["1.00","2.0"]],"a":[]}}')
ENV_2 = ENV_1.replace(b'"U":5,"u":6', b'"U":7,"u":9')
RAW_1 = b'{"e":"depthUpdate","E":1633998512068,"s":"NKNUSDT","U":499869750,"u":499869752,"b":[],"a":[]}'
RAW_2 = b'{"u":499869768,"s":"NKNUSDT","b":"0.35210000","B":"672.0","a":"0.35260000","A":"3199.0"}'
SPOT_HEADER = b"wss://stream.binance.com:9443/stream?streams=nknusdt@depth@100ms <-> 1633998511.74"
USDM_HEADER = b"wss://fstream.binance.com/stream?streams=sushiusdt@depth@100ms <-> 1626992740.8"
WS_1 = b'1633998512.0633569: {"stream":"nknusdt@depth@100ms","data":' + RAW_1 + b"}"
WS_2 = b'1633998513.377805: {"stream":"nknusdt@bookTicker","data":' + RAW_2 + b"}"
WS_3 = b'1626992741.081672: {"stream":"sushiusdt@depth@100ms","data":{}}'
REST_1 = (b"https://api.binance.com/api/v3/depth?symbol=NKNUSDT&limit=1000 -> 1633998512.320639: "
          b'{"lastUpdateId":499869752,"bids":[["0.35210000","672.00000000"]],"asks":[]}')
REST_2 = REST_1.replace(b"NKNUSDT", b"BLZETH")


def summary(batch):
    """A RawBatch as a comparable tuple: file name, format, exchange, market, records."""
    return (os.path.basename(batch.source), batch.fmt, batch.exchange, batch.market,
            batch.records)


def write(path, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(gzip.compress(data) if path.endswith(".gz") else data)
    return str(path)


def test_reads_plain_and_gz_files_from_several_globs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    # envelope, plain: a blank line, a CRLF line, a last line without a newline
    write(str(a / "feed.jsonl"), ENV_1 + b"\n\n" + ENV_2 + b"\r\n   \n" + ENV_1)
    # raw Binance messages, gzip of two members (as `cat one.gz two.gz` makes)
    with open(a / "raw.jsonl.gz", "wb") as handle:
        handle.write(gzip.compress(RAW_1 + b"\n") + gzip.compress(RAW_2 + b"\n\n"))
    # cryptofeed websocket log: the header names the stream; blank lines occur
    write(str(b / "spot.ws.log"), SPOT_HEADER + b"\n" + WS_1 + b"\n\n" + WS_2 + b"\n\n")
    # cryptofeed REST log: no header, first line is already a record
    write(str(b / "spot.http.log"), REST_1 + b"\n" + REST_2 + b"\n")
    # a capture concatenated with another: the second header starts the second stream's batch
    write(str(b / "joined.log.gz"), SPOT_HEADER + b"\n" + WS_1 + b"\n" + WS_2 + b"\n"
          + USDM_HEADER + b"\n" + WS_3 + b"\n")
    write(str(b / "notes.txt"), b"not matched by any glob\n")

    with TestPipeline() as p:
        read = p | ReadFeedFiles([str(a / "*"), str(b / "*.log"), str(b / "*.log.gz")], *DEFAULT_READ)
        assert_that(read.batches | beam.Map(summary), equal_to([
            ("feed.jsonl", "envelope", None, None, [(1, ENV_1), (3, ENV_2), (5, ENV_1)]),
            ("raw.jsonl.gz", "binance", None, None, [(1, RAW_1), (2, RAW_2)]),
            ("spot.ws.log", "cryptofeed", "binance", "spot", [(2, WS_1), (4, WS_2)]),
            ("spot.http.log", "cryptofeed", None, None, [(1, REST_1), (2, REST_2)]),
            ("joined.log.gz", "cryptofeed", "binance", "spot", [(2, WS_1), (3, WS_2)]),
            ("joined.log.gz", "cryptofeed", "binance", "usdm", [(5, WS_3)]),
        ]))
        assert_that(read.batches | "Sources" >> beam.Map(lambda batch: batch.source),
                    equal_to([str(a / "feed.jsonl"), str(a / "raw.jsonl.gz"),
                              str(b / "spot.ws.log"), str(b / "spot.http.log"),
                              str(b / "joined.log.gz"), str(b / "joined.log.gz")]),
                    label="FullPaths")
        assert_that(read.dead_letter, equal_to([]), label="NoDeadLetters")
        # per file its format; the second connect line of the joined capture is a reconnect
        assert_that(read.tally | beam.Map(lambda t: (t[0][0], os.path.basename(t[0][1]), t[1])),
                    equal_to([("format.envelope", "feed.jsonl", 1),
                              ("format.binance", "raw.jsonl.gz", 1),
                              ("format.cryptofeed", "spot.ws.log", 1),
                              ("format.cryptofeed", "spot.http.log", 1),
                              ("format.cryptofeed", "joined.log.gz", 1),
                              ("reconnects", "joined.log.gz", 1)]), label="Tallies")


def test_oversize_line_is_cut_and_format_can_be_forced(tmp_path):
    long_1 = ENV_1 + b" " * 300
    long_2 = b"x" * 5000
    path = write(str(tmp_path / "big.jsonl"),
                 ENV_1[:60] + b"\n" + long_1 + b"\n" + b"ok\n" + long_2)   # last: no newline
    with TestPipeline() as p:
        read = p | ReadFeedFiles([path], input_format="binance", max_record_bytes=64)
        assert_that(read.batches | beam.Map(summary), equal_to([
            ("big.jsonl", "binance", None, None,
             [(1, ENV_1[:60]), (2, long_1[:65]), (3, b"ok"), (4, long_2[:65])]),
        ]))
        assert_that(read.dead_letter, equal_to([]), label="NoDeadLetters")


def test_truncated_gz_keeps_the_records_before_the_damage(tmp_path):
    lines = [ENV_1.replace(b'"U":5', b'"U":%d' % i) for i in range(2 * RECORDS_PER_BATCH + 1000)]
    whole = gzip.compress(b"\n".join(lines) + b"\n")
    cut = whole[:len(whole) * 3 // 5]
    path = str(tmp_path / "cut.jsonl.gz")
    with open(path, "wb") as handle:
        handle.write(cut)
    # What survives, by an independent decompressor: the complete lines before the cut.
    survived = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut)
    complete = survived.count(b"\n")
    assert RECORDS_PER_BATCH < complete < 2 * RECORDS_PER_BATCH and not survived.endswith(b"\n")
    expected = [(n, line) for n, line in enumerate(lines[:complete], 1)]

    with TestPipeline() as p:
        read = p | ReadFeedFiles([path], *DEFAULT_READ)
        assert_that(read.batches | beam.FlatMap(lambda batch: batch.records),
                    equal_to(expected))
        # batches of at most RECORDS_PER_BATCH records, all in the detected format
        assert_that(read.batches | "Shape" >> beam.Map(lambda b: (b.fmt, len(b.records))),
                    equal_to([("envelope", RECORDS_PER_BATCH),
                              ("envelope", complete - RECORDS_PER_BATCH)]),
                    label="Batches")
        # the payload is the bytes read of the record the damage cut short; the trace is in message
        partial = survived[survived.rfind(b"\n") + 1:]
        assert partial and lines[complete].startswith(partial)
        assert_that(read.dead_letter | beam.Map(
            lambda d: (d.reason, d.stage, d.source, d.message.split(":")[0],
                       "Traceback" in d.message, d.payload, d.ingest_time > 1_600_000_000_000)),
            equal_to([("read_error", "read", f"{path}:{complete + 1}", "EOFError", True, partial,
                       True)]),
            label="DeadLetter")
        assert_that(read.tally, equal_to([(("input_records", path), 1),
                                          (("format.envelope", path), 1)]), label="Tally")


def test_a_read_error_keeps_at_most_max_record_bytes_of_the_cut_record(tmp_path):
    long_line = ENV_1.replace(b'"b":[["1.00","2.0"]]', b'"b":[' + b'["1.00","2.0"],' * 400
                              + b'["1.00","2.0"]]')
    whole = gzip.compress(ENV_1 + b"\n" + long_line + b"\n")
    path = str(tmp_path / "cut.jsonl.gz")
    with open(path, "wb") as handle:
        handle.write(whole[:-20])                     # the end of the long line is lost
    with TestPipeline() as p:
        read = p | ReadFeedFiles([path], input_format="auto", max_record_bytes=1000)
        assert_that(read.dead_letter | beam.Map(lambda d: (d.reason, d.payload)),
                    equal_to([("read_error", long_line[:1000])]))


def test_reads_the_cryptofeed_captures():
    def shape(batch):
        numbers = [n for n, _ in batch.records]
        return (os.path.basename(batch.source), batch.fmt, batch.exchange, batch.market,
                len(numbers), numbers[0], numbers[-1], numbers == sorted(numbers))

    with TestPipeline() as p:
        read = p | ReadFeedFiles([os.path.join(CAPTURES, "BINANCE.*.0"),
                                  os.path.join(CAPTURES, "BINANCE_FUTURES.*.0")], *DEFAULT_READ)
        assert_that(read.batches | beam.Map(shape), equal_to([
            ("BINANCE.ws.1.0", "cryptofeed", "binance", "spot", 265, 2, 266, True),
            ("BINANCE.http.0.0", "cryptofeed", None, None, 4, 1, 4, True),
            ("BINANCE_FUTURES.ws.1.0", "cryptofeed", "binance", "usdm", 1535, 2, 1536, True),
            ("BINANCE_FUTURES.http.0.0", "cryptofeed", None, None, 4, 1, 4, True),
        ]))
        with open(os.path.join(CAPTURES, "BINANCE.ws.1.0"), "rb") as handle:
            second_line = handle.read().split(b"\n")[1]
        assert_that(
            (read.batches
             | beam.Filter(lambda b: b.source.endswith("BINANCE.ws.1.0"))
             | beam.Map(lambda b: b.records[0])),
            equal_to([(2, second_line)]), label="FirstRecordVerbatim")
        assert_that(read.dead_letter, equal_to([]), label="NoDeadLetters")


# ---- split_lines ------------------------------------------------------------------------------

def test_split_lines_across_block_boundaries_and_crlf():
    blocks = [b"ab", b"c\nde", b"f\r", b"\ng\r\n", b"\n", b"h"]
    assert list(split_lines(blocks, 100)) == [(1, b"abc"), (2, b"def"), (3, b"g"), (4, b""),
                                              (5, b"h")]


def test_split_lines_trailing_newline_gives_no_extra_line():
    assert list(split_lines([b"a\nb\n"], 100)) == [(1, b"a"), (2, b"b")]
    assert list(split_lines([], 100)) == []


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_split_lines_any_block_size_gives_the_same_lines(size):
    text = b"".join(line + b"\r\n" for line in (ENV_1, b"", WS_1, REST_1, b"x")) + RAW_1
    blocks = [text[i:i + size] for i in range(0, len(text), size)]
    expected = list(enumerate([ENV_1, b"", WS_1, REST_1, b"x", RAW_1], 1))
    assert list(split_lines(blocks, 1 << 20)) == expected


def test_split_lines_cuts_oversize_lines_at_limit_plus_one():
    # within one block, across blocks, exactly at the limit, and a last line without a newline
    assert list(split_lines([b"abcdefghij\nk\n"], 4)) == [(1, b"abcde"), (2, b"k")]
    assert list(split_lines([b"abc", b"defg", b"hij\nxy\n"], 4)) == [(1, b"abcde"), (2, b"xy")]
    assert list(split_lines([b"abcd\n", b"abcd"], 4)) == [(1, b"abcd"), (2, b"abcd")]
    assert list(split_lines([b"ab\n", b"cdef", b"ghij"], 4)) == [(1, b"ab"), (2, b"cdefg")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"ab", b"\n", b"\r", b"\r\n", b"xyz" * 5, b"\xef\xbb\xbf", b" "]),
                max_size=30), st.integers(1, 12), st.integers(2, 20))
def test_split_lines_fast_blocks_equal_the_line_by_line_split(parts, size, limit):
    """Blocks split by bytes.split give exactly the lines of the line-by-line reference."""
    data = b"".join(parts)
    blocks = [data[i:i + size] for i in range(0, len(data), size)]

    def reference():
        state = (0, b"", False)
        for block in blocks:
            state = yield from _split_slowly(block, *state, limit)
        if state[1]:
            yield state[0] + 1, state[1].rstrip(b"\r")
    assert list(split_lines(blocks, limit)) == list(reference())


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(1, 6), st.sampled_from(["truncate", "flip", "garbage_tail", "whole"]),
       st.randoms(use_true_random=False))
def test_gz_blocks_are_python_gzips_on_damaged_files(members, damage, rng):
    """ISA-L decompresses .gz inputs; whatever the damage, the bytes delivered before the error
    and the error's type are exactly Python gzip's (the file is read again by it on an error)."""
    import tempfile

    from transforms.read import BLOCK_BYTES, _gzip_blocks

    blob = bytearray(b"".join(gzip.compress(rng.randbytes(rng.randrange(1, 40_000)).hex().encode()
                                            + b"\n") for _ in range(members)))
    if damage == "truncate":
        blob = blob[:rng.randrange(len(blob))]
    elif damage == "flip":
        for _ in range(rng.randrange(1, 4)):
            blob[rng.randrange(len(blob))] ^= 0xFF
    elif damage == "garbage_tail":
        blob += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30)))

    def read(blocks):
        out = bytearray()
        try:
            for block in blocks():
                out += block
        except Exception as error:  # noqa: BLE001 (the error type is compared)
            return bytes(out), type(error)
        return bytes(out), None

    def exact():
        with gzip.GzipFile(path, "rb") as handle:
            while block := handle.read1(BLOCK_BYTES):
                yield block

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/feed.jsonl.gz"
        with open(path, "wb") as handle:
            handle.write(blob)
        assert read(lambda: _gzip_blocks(path)) == read(exact)
