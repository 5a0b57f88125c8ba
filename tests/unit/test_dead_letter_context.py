"""A rejected record's dead letter carries what the record yielded: its stream (symbol), its ids
and its own time (the exchange's, else the receive time), so error counts are per symbol and on
the same event-time base as gaps."""
from __future__ import annotations

import random

import pytest

from beam_pipeline.core.framing import FileContext, decode_record
from beam_pipeline.core.model import rejected_dead_letter
from beam_pipeline.core.reasons import Rejected
from tests.tooling.synthetic import START_MS, _bad_record

SPOT = "binance:spot:BTCUSDT"
RECV = START_MS   # the bad records' envelopes are received at START_MS, their payload's E is too


@pytest.mark.parametrize("kind, reason, symbol, first_id, last_id", [
    ("invalid_ids", "invalid_ids", SPOT, -5, 6),            # the message names U and u
    ("inverted_ids", "invalid_ids", SPOT, 9, 6),
    ("missing_prev_id", "missing_prev_id", "binance:usdm:BTCUSDT", 5, 6),
    ("bad_price_level", "bad_price_level", SPOT, 5, 6),
    ("mistyped_field", "mistyped_field", SPOT, None, 6),    # U is "5": not an id
    ("missing_field", "missing_field", SPOT, 5, None),      # no u
    ("symbol_mismatch", "symbol_mismatch", SPOT, 5, 6),     # filed under the envelope's symbol
    ("unknown_market", "unknown_market", "binance:options:BTCUSDT", 5, 6),
    ("unknown_exchange", "unsupported_exchange", "poloniex:spot:BTCUSDT", None, None),
    ("mistyped_time", "mistyped_field", SPOT, 5, 6),        # E is a string: the receive time dates it
])
def test_a_rejected_record_keeps_its_symbol_ids_and_time(kind, reason, symbol, first_id, last_id):
    raw = _bad_record(kind, random.Random(0), 4096)
    with pytest.raises(Rejected) as info:
        decode_record(raw, FileContext("envelope"), "f:1")
    letter = rejected_dead_letter(info.value, "decode", raw, "f:1", ingest_time=99)
    assert (letter.reason, letter.symbol, letter.first_id, letter.last_id) == \
        (reason, symbol, first_id, last_id)
    assert letter.event_time == RECV and letter.time == RECV
    assert letter.payload == raw and letter.ingest_time == 99


@pytest.mark.parametrize("kind", ["bad_json", "garbage_json", "nul_bytes"])
def test_what_is_not_json_yields_nothing_and_counts_at_ingest_time(kind):
    raw = _bad_record(kind, random.Random(0), 4096)
    with pytest.raises(Rejected) as info:
        decode_record(raw, FileContext("envelope"), "f:1")
    letter = rejected_dead_letter(info.value, "decode", raw, "f:1", ingest_time=99)
    assert (letter.symbol, letter.first_id, letter.last_id, letter.event_time) == (None,) * 4
    assert letter.time == 99


def test_raw_binance_messages_date_a_rejection_by_the_capture_stamp():
    line = (b'1633998512.0633569: {"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate",'
            b'"E":"x","s":"NKNUSDT","U":7,"u":9,"b":[],"a":[]}}')
    ctx = FileContext("cryptofeed", "binance", "spot")
    with pytest.raises(Rejected) as info:
        decode_record(line, ctx, "f:2")
    assert (info.value.symbol, info.value.first_id, info.value.last_id, info.value.event_time) == \
        ("binance:spot:NKNUSDT", 7, 9, 1633998512063)


def test_what_a_dead_letter_cannot_hold_is_left_out():
    """Ids past Avro's long and times past year 9999 (a rejected record may hold anything)."""
    rejected = Rejected("invalid_ids", "m", symbol=SPOT, first_id=13, last_id=2**63,
                        event_time=10**15)
    letter = rejected_dead_letter(rejected, "decode", b"{}", "f:1", ingest_time=99)
    assert (letter.first_id, letter.last_id, letter.event_time, letter.time) == (13, None, None, 99)
