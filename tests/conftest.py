import json
import os

import fastavro
import pyarrow.parquet as pq
import pytest

from transforms.layout import data_files

pytest_plugins = ["tests.tooling.pubsub_emulator", "tests.tooling.kafka_broker"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTURES = os.path.join(os.path.dirname(REPO), "shared", "data", "cryptofeed")
CAPTURE_FILES = [os.path.join(CAPTURES, name) for name in (
    "BINANCE.ws.1.0", "BINANCE.http.0.0", "BINANCE_FUTURES.ws.1.0", "BINANCE_FUTURES.http.0.0")]


@pytest.fixture(scope="session")
def captures():
    missing = [path for path in CAPTURE_FILES if not os.path.exists(path)]
    assert not missing, f"the shared captures are missing: {missing}"
    return CAPTURE_FILES


class Outputs:
    """Reads a run's output folder the way a user would: every file of a folder, flat (batch) or
    in date partitions (streaming), as `<folder>/**/*<suffix>` finds them."""

    def __init__(self, folder):
        self.folder = folder

    def files(self, name, suffix):
        return data_files(os.path.join(str(self.folder), name), suffix)

    def parquet_rows(self, name):
        rows = []
        for path in self.files(name, ".parquet"):
            rows.extend(pq.ParquetFile(path).read().to_pylist())
        return rows

    def dead_letters(self):
        rows = []
        for path in self.files("dead_letter", ".avro"):
            with open(path, "rb") as handle:
                rows.extend(fastavro.reader(handle))
        return rows

    def summary(self):
        with open(os.path.join(self.folder, "summary.json")) as handle:
            return json.load(handle)


@pytest.fixture
def outputs():
    return Outputs


# Markers by folder: unit (no Beam), beam (TestPipeline / TestStream / a local run of the graph),
# integration (the Pub/Sub emulator, Flink, gcloud). `make test-fast` runs the first two.
_KINDS = ("unit", "beam", "integration")


def pytest_collection_modifyitems(config, items):
    for item in items:
        kind = next((k for k in _KINDS if f"/tests/{k}/" in str(item.fspath)), None)
        assert kind, f"{item.nodeid}: a test lives in tests/unit, tests/beam or tests/integration"
        item.add_marker(getattr(pytest.mark, kind))
