"""The memory-pressure ladder: each step fires at its threshold, and no buffered row is lost."""
import io

import psutil
import pyarrow.parquet as pq
import pytest

from transforms.memory import DROP_CACHES, FLUSH, SHRINK, MemoryGuard, MemoryPressureError
from beam_pipeline.core.model import DELTA, RANGE_PLUS_ONE, Event
from transforms.sinks import clean_sink
from transforms.tables import clean_table


def _rows(count):
    return [(Event("binance", "spot", "BTCUSDT", DELTA, i, i, None, 1000 + i, 1001 + i,
                   b'[["1.5","2"]]', b"[]", RANGE_PLUS_ONE), 1, True) for i in range(count)]


def test_guard_steps_at_the_strategy_thresholds():
    limit = 1000
    for used, expected in ((500, None), (701, SHRINK), (801, DROP_CACHES), (901, FLUSH)):
        assert MemoryGuard("t", limit, rss=lambda used=used: used).step() == expected
    with pytest.raises(MemoryPressureError, match="failing the bundle so the runner retries"):
        MemoryGuard("t", limit, rss=lambda: 960).step()


def test_guard_reads_this_process_for_real():
    rss = psutil.Process().memory_info().rss
    assert MemoryGuard("t", int(rss / 0.5)).step() is None
    assert MemoryGuard("t", int(rss / 0.75)).step() in (SHRINK, DROP_CACHES)


def _write_through_sink(ratio, rows):
    """Rows through the clean/ Parquet sink with memory held at `ratio` of the limit."""
    sink = clean_sink()
    buffer = io.BytesIO()
    sink.open(buffer)
    sink._guard = MemoryGuard("parquet_sink", 10_000, rss=lambda: int(ratio * 10_000))
    for start in range(0, len(rows), 500):
        sink.write(clean_table(rows[start:start + 500]))
    sink.flush()
    return sink, pq.ParquetFile(io.BytesIO(buffer.getvalue()))


def test_each_step_keeps_every_row():
    rows = _rows(20_000)
    calm, calm_file = _write_through_sink(0.5, rows)
    assert calm.row_group_rows == 65536 and calm_file.metadata.num_row_groups == 1

    shrunk, shrunk_file = _write_through_sink(0.75, rows)   # smaller row groups
    assert shrunk.row_group_rows == 1024
    assert shrunk_file.metadata.num_row_groups > 1

    flushed, flushed_file = _write_through_sink(0.92, rows)  # written out as soon as checked
    assert max(flushed_file.metadata.row_group(i).num_rows
               for i in range(flushed_file.metadata.num_row_groups)) <= 1500

    for parquet in (calm_file, shrunk_file, flushed_file):
        table = parquet.read()
        assert table.num_rows == 20_000
        assert table.column("first_id").to_pylist() == list(range(20_000))


def test_above_95_percent_the_bundle_fails_clearly():
    with pytest.raises(MemoryPressureError):
        _write_through_sink(0.97, _rows(5000))
