"""tallies.counts_by_file (the clean rows' per-file counts in bulk) against file_of_source per
source."""
from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam_pipeline.core import tallies

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

# sources as they come ("path:line", "pubsub:id") and odd ones: no line, no path, colons in the
# path, non-ASCII digits (isdigit() but not stripped as ASCII digits), digits without a colon
paths = st.sampled_from(["/d/a.jsonl.gz", "b.0", "c:d", "", "pubsub", "é", "x1", "a:"])
lines = st.one_of(st.integers(0, 10**9).map(str),
                 st.sampled_from(["", "١٢", "3a", "a3", ":", "0:"]))
sources = st.builds(lambda p, sep, line: p + sep + line, paths, st.sampled_from([":", ""]), lines)


def reference(name, values):
    return Counter(tallies.key(name, tallies.file_of_source(value)) for value in values)


@SETTINGS
@given(st.lists(sources, max_size=60))
def test_counts_by_file_equals_attributing_each_source(values):
    assert tallies.counts_by_file(tallies.CLEAN_RECORDS, values) == reference(
        tallies.CLEAN_RECORDS, values)


def test_a_run_of_one_file_is_counted_in_bulk_and_many_ids_one_by_one():
    one_file = [f"/d/feed.jsonl.gz:{line}" for line in range(1, 5001)]
    assert tallies.counts_by_file("c", one_file) == Counter({("c", "/d/feed.jsonl.gz"): 5000})
    pubsub = [f"pubsub:{n:x}z" for n in range(100)] + ["/d/f:1"]
    assert tallies.counts_by_file("c", pubsub) == Counter({"c": 100, ("c", "/d/f"): 1})
