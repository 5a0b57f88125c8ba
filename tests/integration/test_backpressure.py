"""The strategy's backpressure test restated for Beam: a fast feed into a slow sink loses nothing.

The sink is Pub/Sub through PublishJson with publisher flow control at 5 outstanding messages: the
bundle blocks while the emulator catches up, instead of buffering without bound."""
import json
import time

import apache_beam as beam

from transforms.sinks import PublishJson


class _SlowDown(beam.DoFn):
    """Makes the sink side slower still: 1 ms per element."""

    def process(self, element):
        time.sleep(0.001)
        yield element


def test_fast_feed_slow_sink_nothing_lost(pubsub_emulator):
    emu = pubsub_emulator
    topic = emu.create_topic(emu.unique_name("slow-sink"))
    subscription = emu.create_subscription(topic, emu.unique_name("slow-sink-sub"))
    rows = [{"n": i, "message": "x" * 200} for i in range(2000)]
    with beam.Pipeline() as p:
        undelivered = (p | beam.Create(rows) | beam.ParDo(_SlowDown())
                       | beam.ParDo(PublishJson(topic, max_outstanding_messages=5)).with_outputs(
                           PublishJson.UNDELIVERED, main="published"))[PublishJson.UNDELIVERED]
        _ = undelivered | beam.Map(lambda row: (_ for _ in ()).throw(AssertionError(row)))
    received = emu.pull_all(subscription, max_wait_s=60, expected=len(rows))
    assert sorted(json.loads(data)["n"] for data, _ in received) == list(range(len(rows)))
