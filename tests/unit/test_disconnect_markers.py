"""The collector's disconnect markers: their encoding, decoding, and what the machine makes of them."""
import pytest

from beam_pipeline.core.framing import FileContext, decode_record, detect_format
from beam_pipeline.core.markers import Disconnect, encode_marker
from beam_pipeline.core.model import DISCONNECT
from beam_pipeline.core.reasons import CorruptReason, Rejected
from beam_pipeline.core.sequencer import CONTROL, CORRUPT, GAP, RECOVERY, StreamSequencer
from beam_pipeline.options import default_policy
from tests.unit.test_sequencer import SPOT, USDM, run, snap, spot, usdm


def marker(key, last_id, at, attempts=2):
    line = encode_marker(key[0], key[1], key[2], Disconnect(
        symbols=[key[2]], attempts=attempts, last_id=last_id, last_event_time=at,
        from_ms=(at or 0) + 10, to_ms=(at or 0) + 500))
    return decode_record(line, FileContext("envelope"), "f:1")


def test_a_marker_round_trips_through_the_envelope_framing():
    line = encode_marker("binance", "spot", "ETHUSDT", Disconnect(
        symbols=["ETHUSDT", "BTCUSDT"], attempts=3, last_id=41, last_event_time=1000,
        from_ms=1010, to_ms=4000))
    assert detect_format([line]) == "envelope"
    event = decode_record(line, FileContext("envelope"), "f:7")
    assert (event.kind, event.key, event.first_id, event.last_id, event.time, event.source) == (
        DISCONNECT, SPOT, 41, 41, 1000, "f:7")


def test_a_marker_without_a_last_id_sorts_first_with_time_zero():
    line = encode_marker("binance", "usdm", "ETHUSDT", Disconnect(symbols=["ETHUSDT"], attempts=1))
    event = decode_record(line, FileContext("envelope"), "f:1")
    assert (event.first_id, event.time, event.key) == (0, 0, USDM)


def test_a_broken_marker_is_rejected_with_a_reason():
    with pytest.raises(Rejected) as raised:
        decode_record(b'{"exchange":"binance","market":"spot","symbol":"X","recv_ts_ms":1,'
                      b'"type":"disconnect","payload":{"attempts":"two"}}', FileContext("envelope"), "f:1")
    assert raised.value.reason == "mistyped_field"
    with pytest.raises(Rejected) as raised:
        decode_record(b'{"exchange":"binance","market":"moon","symbol":"X","recv_ts_ms":1,'
                      b'"type":"disconnect","payload":{"attempts":1,"symbols":["X"]}}',
                      FileContext("envelope"), "f:1")
    assert raised.value.reason == "missing_field"


def _of(out, tag):
    return [value for t, value in out if t == tag]


def test_a_gap_after_a_marker_waits_for_the_post_reconnect_snapshot_whatever_its_size():
    # 5000 missing ids would be a large gap (a corrupt period at once): the marker says why, and the
    # snapshot the collector fetched after reconnecting resyncs it
    events = [snap(SPOT, 10, at=1), spot(11, 20, at=2), marker(SPOT, 20, at=2),
              spot(5021, 5022, at=9), snap(SPOT, 5025, at=9), spot(5023, 5040, at=10)]
    out = run(SPOT, events)
    assert len(_of(out, CONTROL)) == 1
    gaps = _of(out, GAP)
    assert [(g.gap_class, g.action, g.resolution, g.last_good_id) for g in gaps] == [
        ("large", "hold_for_snapshot", "resynced", 20)]
    assert [r.reason for r in _of(out, RECOVERY)] == ["disconnect"]
    assert _of(out, CORRUPT) == []


def test_no_snapshot_after_a_disconnect_is_an_explained_corrupt_period():
    events = [snap(SPOT, 10, at=1), spot(11, 20, at=2), marker(SPOT, 20, at=2),
              spot(31, 40, at=5000)]
    out = run(SPOT, events)
    assert [(c.reason, c.start_id, c.end_id) for c in _of(out, CORRUPT)] == [
        (CorruptReason.DISCONNECT, 21, 30)]
    assert [g.resolution for g in _of(out, GAP)] == ["corrupt_period"]


def test_a_snapshot_that_jumps_ahead_after_a_marker_reports_the_skipped_ids_resynced():
    events = [snap(SPOT, 10, at=1), spot(11, 20, at=2), marker(SPOT, 20, at=2),
              snap(SPOT, 70, at=9), spot(71, 80, at=10)]
    out = run(SPOT, events)
    assert [(g.gap_size, g.gap_class, g.resolution) for g in _of(out, GAP)] == [
        (50, "medium", "resynced")]
    assert _of(out, CORRUPT) == []


def test_a_stream_that_bridges_the_disconnect_has_no_gap():
    # a planned reconnect overlapping the old connection: the new one continues the ids
    events = [snap(USDM, 10, at=1), usdm(11, 20, 10, at=2), marker(USDM, 20, at=2),
              usdm(21, 30, 20, at=3), usdm(35, 40, 34, at=4)]
    out = run(USDM, events, default_policy(recovery_timeout_ms=1000))
    # the later gap is an ordinary medium one (the marker no longer explains it)
    assert [r.reason for r in _of(out, RECOVERY)] == ["medium_gap"]
    assert [c.reason for c in _of(out, CORRUPT)] == ["recovery_timeout"]


def test_a_marker_before_any_data_changes_nothing():
    machine = StreamSequencer(SPOT, default_policy())
    machine.feed(marker(SPOT, None, at=None))
    machine.feed(snap(SPOT, 10, at=1))
    machine.feed(spot(11, 12, at=2))
    assert [t for t, _ in machine.out] == [CONTROL, "clean", "clean"]
    assert machine.state.disconnected is False


def test_a_marker_sorts_after_the_last_delta_of_the_same_id_and_time():
    # a delta of one id (U == u) at the marker's ids and time: received before the loss, it comes
    # first, and the gap after the reconnect is still the disconnection's
    events = [snap(SPOT, 10, at=1), spot(11, 20, at=2), spot(21, 21, at=3), marker(SPOT, 21, at=3),
              spot(40, 45, at=9), snap(SPOT, 50, at=9)]
    out = run(SPOT, events)
    assert [r.reason for r in _of(out, RECOVERY)] == ["disconnect"]
    assert [g.resolution for g in _of(out, GAP)] == ["resynced"]


def _okx(kind, seq, prev, at):
    """An OKX `books` push as the collector writes it (an envelope of type delta or snapshot)."""
    from beam_pipeline.collector import envelope_line
    action = "snapshot" if kind == "snapshot" else "update"
    payload = (f'{{"arg":{{"channel":"books","instId":"BTC-USDT"}},"action":"{action}","data":[{{'
               f'"asks":[["101","1","0","1"]],"bids":[],"ts":"{at}","checksum":0,"seqId":{seq},'
               f'"prevSeqId":{prev}}}]}}').encode()
    return decode_record(envelope_line("spot", "BTC-USDT", at + 1, kind, payload, "okx"),
                         FileContext("envelope"), f"f:{seq}")


def test_a_previous_link_marker_sorts_after_its_last_delta_and_the_snapshot_after_is_the_gap():
    # OKX: a delta's first id is its last, its previous id lower: the marker (same id and time)
    # still comes after it, and the reconnect's in-stream snapshot reports the ids it jumped, with
    # the venue's own ids (no +1: previous-link ids are not consecutive)
    okx = ("okx", "spot", "BTC-USDT")
    events = [_okx("snapshot", 100, -1, 1), _okx("delta", 107, 100, 2), _okx("delta", 109, 107, 3),
              marker(okx, 109, at=3), _okx("snapshot", 140, -1, 9), _okx("delta", 142, 140, 10)]
    out = run(okx, events)
    assert [t for t, _ in out if t != "errors"] == ["clean", "clean", "clean", CONTROL, GAP, "clean",
                                                    "clean"]
    assert [(g.last_good_id, g.next_first_id, g.gap_size, g.resolution) for g in _of(out, GAP)] == [
        (109, 140, None, "resynced")]
