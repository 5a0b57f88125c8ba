"""A streaming job's sinks fed by a TestStream: rows of many keys, each key's rows of every output
folder in a bundle of its own (as the stateful sequencer emits them), over several firings of the
processing-time flush, the last one when the input ends (the watermark to +infinity).

    expected = write_flushes(out, keys=40, firings=2)   # rows written per folder

Every row goes through the real WriteOutputs(streaming=True) on DirectRunner with the options given
(the default --output_flush_seconds unless told otherwise). TestStream's processing time starts at
0, so the sinks are given a clock frozen there: a flush armed "now + 60 s" fires once the stream
advances processing time past it (as tests/beam/test_sequence_streaming.py does for the sequencer).
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp

from beam_pipeline.core.model import (DELTA, RANGE_PLUS_ONE, CorruptPeriod, DeadLetter, Event, Gap,
                                      KeyStatus, RecoveryRequest, encode_levels)
from beam_pipeline.core.runtime import iso_ms
from beam_pipeline.options import FeedCheckOptions
from transforms.sinks import OUTPUT_FOLDERS, WriteOutputs
from transforms.tables import clean_table

T = 1_700_000_000_000
CLEAN_ROWS_PER_KEY = 3


def rows_of_key(i: int, firing: int, corrupt: bool = True) -> dict:
    """One symbol's rows of every output folder in one firing (ids unique per key and firing)."""
    symbol, base = f"S{i:03d}USDT", 1000 * firing + 10 * i
    events = [(Event("binance", "spot", symbol, DELTA, base + k, base + k, None, T + base + k,
                     T + base + k, encode_levels([("1.0", f"{firing}.{k}")]), b"[]",
                     RANGE_PLUS_ONE), base, True)
              for k in range(CLEAN_ROWS_PER_KEY)]
    rows = {
        "clean": [clean_table(events)],
        "dead_letter": [DeadLetter("bad_json", "cut", "decode", b"{" + symbol.encode(),
                                   f"pubsub:{symbol}:{firing}", T + base)],
        "gaps": [Gap("binance", "spot", symbol, base, base + 5, 4, "small",
                     "continue_with_warning", "continued", T + base)],
        "recovery_requests": [RecoveryRequest("binance", "spot", symbol, base + 1, "medium_gap",
                                              T + base)],
        "error_counts": [{"exchange": "binance", "market": "spot", "symbol": symbol,
                          "error_type": "gap_small", "window_start": iso_ms(T),
                          "window_end": iso_ms(T + 60_000), "count": firing + 1, "pane": firing}],
        "alerts": [{"exchange": "binance", "market": "spot", "symbol": symbol,
                    "error_type": "gap_small", "level": "warning", "rule": "count",
                    "window_start": iso_ms(T + 60_000 * firing),
                    "window_end": iso_ms(T + 60_000 * (firing + 1)),
                    "count": firing + 1, "message": "m", "suggested_action": "a"}],
        "status": [KeyStatus("binance", "spot", symbol, T + 60_000 * firing, base + 2, T + base,
                             base, True, 0, None, None, None, None, False)],
        "summary": [{"input_records": firing, "balanced": False}],
    }
    if corrupt:
        rows["corrupt_periods"] = [CorruptPeriod("binance", "spot", symbol, base, base + 2, None,
                                                 T + base, "large_gap")]
    return rows


def write_flushes(out: str, keys: int, firings: int, corrupt_in=None, *flags: str) -> dict:
    """Runs the sinks over `firings` firings of `keys` keys (one bundle each) and returns the rows
    written per output folder. Firings but the last end with the processing time passing the
    flush; the last with the end of the input. `corrupt_in`: the firings that have corrupt
    periods (default: all)."""
    options = FeedCheckOptions(["--output", str(out), *flags])
    stream = TestStream()
    expected = {name: 0 for name in OUTPUT_FOLDERS}
    for firing in range(firings):
        for i in range(keys):                          # one add_elements: one bundle
            rows = rows_of_key(i, firing, corrupt_in is None or firing in corrupt_in)
            stream = stream.add_elements([(name, value) for name, values in rows.items()
                                          for value in values])
            for name, values in rows.items():
                if name in expected:
                    expected[name] += sum(getattr(v, "num_rows", 1) for v in values)
        if firing < firings - 1:
            stream = stream.advance_processing_time(options.output_flush_seconds + 1)
    stream = stream.advance_watermark_to_infinity()

    names = list(OUTPUT_FOLDERS) + ["summary"]
    pipeline_options = PipelineOptions()
    pipeline_options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=pipeline_options) as p:
        split = p | stream | beam.Partition(lambda kv, _: names.index(kv[0]), len(names))
        outputs = {name: split[i] | f"Value_{name}" >> beam.Map(lambda kv: kv[1])
                   for i, name in enumerate(names)}
        _ = outputs | WriteOutputs(options, streaming=True, clock=lambda: Timestamp(0))
    return expected
