"""The batch fast path of decoding: envelope lines holding Binance depth updates, decoded a batch at
a time; whatever it does not take is decoded by the per-record reference path (framing.decode_record).

Per line, the reference path decodes the envelope, then its payload (two msgspec passes), dispatches
through framing and adapter, and checks each level array with a regex (two calls a line, the
largest single cost of decoding: bench/README.md). Here:

- a line in one of the common compact shapes is matched by one whole-line regex that checks the
  level arrays too and gives the fields as groups (core/envelope_lines.py, no JSON decoding);
- any other line: one msgspec pass decodes envelope and payload together (the payload typed as the
  adapter's fast depth update, levels left as raw bytes), and the level arrays are checked by the
  adapter's regex, one call per array (validating a whole batch's arrays over one joined buffer
  with bytes operations or numpy was measured and was not faster: bench/README.md).

The batch pipeline takes a file's accepted lines as columns (decode_envelope_columns ->
core/columns.EventColumns); streaming takes Events (decode_envelope_deltas).

It only *accepts*: a line it is not sure of (any other type, exchange, shape, a failed check) is
handed back (None), and the reference path decodes it, rejection reasons and all. What it accepts
decodes to the Event the reference path gives (property tests: tests/unit/test_batch_decode.py).
"""
from __future__ import annotations

from typing import Optional

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_pipeline.core.adapters.binance import (_COMPACT_LEVELS, EXCHANGES, PREVIOUS_LINK, RULES,
                                                 _DepthUpdateFast)
from beam_pipeline.core.columns import PREVIOUS_LINK_CODE, RULE_CODES, SCHEMA, EventColumns
from beam_pipeline.core.decoding import LAST_MS, TimeMs
from beam_pipeline.core.envelope_lines import DELTA_LINE, match_delta_line
from beam_pipeline.core.model import DELTA, Event


class _EnvelopeDelta(msgspec.Struct):
    """framings.envelope._Envelope with its payload decoded in the same pass."""

    exchange: str
    market: str
    symbol: str
    recv_ts_ms: TimeMs
    type: str
    payload: _DepthUpdateFast


_envelope_delta_decoder = msgspec.json.Decoder(_EnvelopeDelta)
_RULE_CODE_OF_MARKET = {market: RULE_CODES[rule] for market, rule in RULES.items()}


def _plain_line(line: bytes) -> bool:
    """adapters.binance._plain_shape, over the whole line: no escapes, one "b" and one "a" (a
    second one outside the payload only sends the line to the reference path)."""
    return b"\\" not in line and line.count(b'"b"') == 1 and line.count(b'"a"') == 1


def _accepted(line: bytes):
    """The decoded envelope when the line is a well-formed depth update delta the reference path
    would turn into an Event (levels not yet checked), else None."""
    if not _plain_line(line):
        return None
    try:
        env = _envelope_delta_decoder.decode(line)
    except msgspec.DecodeError:
        return None
    msg, rule = env.payload, RULES.get(env.market)
    if (env.type != DELTA or env.exchange not in EXCHANGES or msg.e != "depthUpdate"
            or msg.s != env.symbol or rule is None or msg.U > msg.u
            or (rule == PREVIOUS_LINK and msg.pu is None)):
        return None
    return env


def _delta_fields(line: bytes, max_record_bytes: int, whole_line: bool = True):
    """(exchange, market, symbol, recv_ts_ms, E, U, u, pu, bids, asks) of a line the fast path
    takes, else None: one whole-line regex for the common shapes (core/envelope_lines.py; skipped
    when `whole_line` is False: the caller has tried it), one msgspec pass and the level regex
    for the others."""
    if len(line) > max_record_bytes:
        return None
    fields = match_delta_line(line) if whole_line else None
    if fields is not None or not line.isascii():
        return fields
    env = _accepted(line)
    if env is None:
        return None
    msg = env.payload
    if _COMPACT_LEVELS.match(msg.b) and _COMPACT_LEVELS.match(msg.a):
        return (env.exchange, env.market, msg.s, env.recv_ts_ms, msg.E, msg.U, msg.u, msg.pu,
                bytes(msg.b), bytes(msg.a))
    return None


def decode_envelope_deltas(lines, sources, max_record_bytes: int) -> list:
    """Envelope lines -> per line the Event the reference path would give, or None: decode that
    line with the reference path (framing.decode_record). `sources`: each line's source."""
    found: list[Optional[Event]] = [None] * len(lines)
    for index, line in enumerate(lines):
        fields = _delta_fields(line, max_record_bytes)
        if fields is not None:
            exchange, market, symbol, recv, event_time, first, last, prev, bids, asks = fields
            found[index] = Event(exchange, market, symbol, DELTA, first, last, prev, event_time,
                                 recv, bids, asks, RULES[market], sources[index])
    return found


def decode_envelope_columns(lines, numbers, path: str, max_record_bytes: int):
    """decode_envelope_deltas for the lines of one file (`numbers`: their line numbers, >= 1), the
    Events as columns: (EventColumns or None, the indexes of the lines they hold, in order). Row k
    is the Event decode_envelope_deltas gives for line taken[k], source "path:number".

    The lines the whole-line regex takes become columns in bulk (_matched_columns: the match's
    groups converted and checked by Arrow, column by column); the others take _delta_fields."""
    columns, taken = _matched_columns(lines, numbers, path, max_record_bytes)
    keys = {key: index for index, key in enumerate(columns.keys)} if columns is not None else {}
    rows, rest = [], []
    done = set(taken)
    for index, line in enumerate(lines):
        if index in done:
            continue
        fields = _delta_fields(line, max_record_bytes, whole_line=False)
        if fields is not None:
            exchange, market, symbol, recv, event_time, first, last, prev, bids, asks = fields
            key = keys.setdefault((exchange, market, symbol), len(keys))
            rows.append((key, first, last, prev, event_time, recv, _RULE_CODE_OF_MARKET[market],
                         0, numbers[index], bids, asks))
            rest.append(index)
    if not rows:
        return columns, taken
    others = EventColumns.from_rows(list(keys), [path], rows)
    if columns is None:
        return others, rest
    both = EventColumns(pa.concat_tables([columns.table, others.table]), list(keys), [path])
    order = np.argsort(np.array(taken + rest), kind="stable")      # back in line order
    return both.take(order), sorted(taken + rest)


def _ints(column: pa.Array) -> pa.Array:
    """JSON integer texts (the regex checked their digits) -> int64; ArrowInvalid beyond int64."""
    return column.cast(pa.string()).cast(pa.int64())


def _matched_columns(lines, numbers, path: str, max_record_bytes: int):
    """(EventColumns of the lines DELTA_LINE matches whose values the decoders accept, their
    indexes): match_delta_line in bulk (property test: tests/unit/test_columns.py). A value
    beyond int64 sends the whole batch to the per-line path."""
    fullmatch, taken, groups = DELTA_LINE.fullmatch, [], []
    for index, line in enumerate(lines):
        if len(line) <= max_record_bytes:
            match = fullmatch(line)
            if match is not None:
                taken.append(index)
                groups.append(match.groups())
    if not groups:
        return None, []
    raw = [pa.array(column, pa.binary()) for column in zip(*groups)]
    # groups: 0 exchange, 1 market, 2 symbol, 3 recv_ts_ms, 4 E; spot order 5 U, 6 u, 7 b, 8 a,
    # 9 pu, 10 T; futures order 11 T, 12 U, 13 u, 14 pu, 15 b, 16 a (envelope_lines.DELTA_LINE)
    try:
        recv, event_time = _ints(raw[3]), _ints(raw[4])
        first, last = _ints(pc.coalesce(raw[5], raw[12])), _ints(pc.coalesce(raw[6], raw[13]))
        prev, trade = _ints(pc.coalesce(raw[9], raw[14])), _ints(pc.coalesce(raw[10], raw[11]))
    except pa.ArrowInvalid:
        return None, []
    key_text = pc.binary_join_element_wise(raw[0], raw[1], raw[2], b"\0").dictionary_encode()
    keys = [tuple(part.decode() for part in key.split(b"\0")) for key in key_text.dictionary.to_pylist()]
    key_rules = np.array([_RULE_CODE_OF_MARKET[key[1]] for key in keys], np.int8)
    key_index = key_text.indices.to_numpy()
    rules = key_rules[key_index]
    ok = (pc.less_equal(first, last).to_numpy(zero_copy_only=False)
          & pc.less_equal(recv, LAST_MS).to_numpy(zero_copy_only=False)
          & pc.less_equal(event_time, LAST_MS).to_numpy(zero_copy_only=False)
          & pc.fill_null(pc.less_equal(trade, LAST_MS), True).to_numpy(zero_copy_only=False)
          & ((rules != PREVIOUS_LINK_CODE) | prev.is_valid().to_numpy(zero_copy_only=False)))
    table = pa.Table.from_arrays([
        pa.array(key_index.astype(np.int32)), first, last, prev, event_time, recv, pa.array(rules),
        pa.array(np.zeros(len(groups), np.int32)),
        pa.array(np.asarray(numbers, np.int64)[taken]),
        pc.coalesce(raw[7], raw[15]).cast(pa.large_binary()),
        pc.coalesce(raw[8], raw[16]).cast(pa.large_binary())], schema=SCHEMA)
    if not ok.all():
        table = table.filter(pa.array(ok))
        taken = np.asarray(taken)[ok].tolist()
    return (EventColumns(table, keys, [path]) if taken else None), taken


def fast_decoder_for(fmt: str) -> Optional[object]:
    """The batch fast path for records of this format, or None (decode every record one by one)."""
    return decode_envelope_deltas if fmt == "envelope" else None
