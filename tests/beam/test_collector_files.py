"""The collector's rolling files as a batch run reads them: whole, and with a torn last member."""
import json
import os
import time

from beam_pipeline.cli import main
from beam_pipeline.collector import FileSink, Metrics, envelope_line

T = 1_700_000_000_000


def _lines(first_id, count):
    snapshot = envelope_line("spot", "BTCUSDT", T, "snapshot", json.dumps(
        {"lastUpdateId": first_id - 1, "bids": [["1.0", "1"]], "asks": []}).encode())
    deltas = [envelope_line("spot", "BTCUSDT", T + i, "delta", json.dumps(
        {"e": "depthUpdate", "E": T + i, "s": "BTCUSDT", "U": first_id + i, "u": first_id + i,
         "b": [["1.0", str(i + 1)]], "a": []}).encode()) for i in range(count)]
    return [snapshot] + deltas


def _capture(folder):
    sink = FileSink(str(folder), "spot", 1.0, Metrics("spot"))
    for line in _lines(100, 20):
        sink.write("BTCUSDT", line, T)
    sink.flush()                                  # member 1: 21 records
    for line in _lines(200, 30)[1:]:
        sink.write("BTCUSDT", line, T)
    sink.close()                                  # member 2: 30 more records (a gap before them)
    (path,) = [os.path.join(folder, name) for name in os.listdir(folder)]
    assert os.path.basename(path) == "binance-spot-20231114T22.jsonl.gz"
    return path


def _summary(out):
    with open(os.path.join(out, "summary.json")) as handle:
        return json.load(handle)


def test_a_rolling_file_reads_whole_in_a_batch_run(tmp_path):
    _capture(tmp_path / "capture")
    assert main(["--input", str(tmp_path / "capture"), "--output", str(tmp_path / "out")]) == 0
    summary = _summary(tmp_path / "out")
    assert summary["input_records"] == 51 and summary["balanced"]
    assert summary["dead_letters"] == {} and summary["files"][0]["format"] == "envelope"


def _tear(path, quiet_for_s):
    """A crash inside the second member's write, `quiet_for_s` seconds ago."""
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 40)
    os.utime(path, (time.time() - quiet_for_s,) * 2)


def test_a_torn_last_member_loses_only_itself(tmp_path):
    path = _capture(tmp_path / "capture")
    _tear(path, 3600)                              # the collector crashed an hour ago
    main(["--input", str(tmp_path / "capture"), "--output", str(tmp_path / "out")])
    summary = _summary(tmp_path / "out")
    assert summary["balanced"] and summary["dead_letters"].get("read_error") == 1
    assert summary["clean_records"] >= 21           # the first member, whole


def test_a_batch_run_leaves_a_young_torn_member_out_with_a_warning(tmp_path, capsys):
    """The same torn file twice: modified within --quiet_seconds its torn member is still being
    written (the records before the cut are read, the cut one is no read_error; a warning and
    summary.json name the file); once quiet it is the read_error of the test above."""
    path = _capture(tmp_path / "capture")
    _tear(path, 0)                                 # the collector is writing it right now
    assert main(["--input", path, "--output", str(tmp_path / "young"),
                 "--quiet_seconds", "600"]) == 0
    young = _summary(tmp_path / "young")
    warning = capsys.readouterr().err
    assert young["dead_letters"] == {} and young["balanced"]
    assert young["still_being_written"] == [path]
    assert "still being written" in warning and path in warning

    os.utime(path, (time.time() - 3600,) * 2)      # ... and quiet since, an hour
    assert main(["--input", path, "--output", str(tmp_path / "old"), "--quiet_seconds", "600"]) == 0
    old = _summary(tmp_path / "old")
    assert old["dead_letters"] == {"read_error": 1} and "still_being_written" not in old
    assert old["input_records"] == young["input_records"] + 1     # the cut record, dead-lettered
    assert old["clean_records"] == young["clean_records"] >= 21
