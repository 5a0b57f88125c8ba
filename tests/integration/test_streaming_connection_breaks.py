"""A growing Bitfinex capture (one connection, two books, numbered frames: SEQ_ALL) followed by a
streaming job as users run it (--streaming --input DIR --watch_seconds, DirectRunner, stopped by
SIGTERM): the capture is written in two parts, the job reading the first before the second is
appended, whose first frame was lost. Only the connection's numbers across the two reads show it
(the reader's state outlives a read), so each book gets its connection_break gap, and the job's
gaps, corrupt periods and summary counts equal a batch run over the finished file."""
import os
import signal

from beam_pipeline.cli import main
from tests.tooling.streaming_job import (comparable, job_log, start_watching, stop_group,
                                         summary_of, wait_counted)
from tests.tooling.synthetic_venues import bitfinex_connection

COMMON = ["--recovery_timeout", "2"]      # a wait no snapshot answers ends within the feed
LOST = 31     # the second part's first frame: only the first read's numbers show it was lost


def test_a_growing_bitfinex_capture_gets_its_connection_breaks_as_batch_does(tmp_path):
    lines, frames = bitfinex_connection(80, drop=(LOST,), step_ms=250)
    records = len(lines) - 1                        # the connect line is not a record
    first = next(i for i, line in enumerate(lines) if line.endswith(b",30]"))   # up to frame 30
    assert lines[first + 1].endswith(b",32]")
    folder, out = tmp_path / "capture", str(tmp_path / "stream")
    folder.mkdir()
    path = folder / "BITFINEX.ws.1.0"
    path.write_bytes(b"\n".join(lines[:first + 1]) + b"\n")
    job = start_watching(str(folder), out, *COMMON, flush_seconds=None)
    try:
        assert wait_counted(out, first, 120)[0], job_log(out)[-4000:]
        with open(path, "ab") as handle:
            handle.write(b"\n".join(lines[first + 1:]) + b"\n")
        assert wait_counted(out, records, 120)[0], (summary_of(out), job_log(out)[-4000:])
        job.send_signal(signal.SIGTERM)                 # as users stop it
        assert job.wait(timeout=60) == 0, job_log(out)[-4000:]
    finally:
        stop_group(job)

    batch = str(tmp_path / "batch")
    assert main(["--input", str(folder), "--output", batch, *COMMON]) == 0
    streamed, reference = comparable(out), comparable(batch)
    assert streamed == reference
    assert len(reference["gaps"]) == 2 and all("connection_break" in g for g in reference["gaps"])
    assert summary_of(out).get("connection_breaks") == summary_of(batch)["connection_breaks"] == 1
    assert os.listdir(folder) == ["BITFINEX.ws.1.0"]
