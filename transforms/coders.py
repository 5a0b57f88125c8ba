"""Beam coders for the large elements that flow between stages: msgpack via msgspec, and a cheap
size estimate.

Beam samples elements on every edge to estimate their size (metrics, and Dataflow's autoscaling),
and for a type without a coder it estimates by pickling the whole element. Our elements are
batches of thousands of records, so that sampling cost more than decoding them (profile,
bench/README.md). These coders estimate from the byte lengths at hand instead.
"""
from __future__ import annotations

import msgspec
from apache_beam import coders
from apache_beam.coders import coder_impl

from beam_pipeline.core.model import EventBatch, RawBatch

_encode = msgspec.msgpack.Encoder().encode
_DECODERS = {RawBatch: msgspec.msgpack.Decoder(RawBatch),
             EventBatch: msgspec.msgpack.Decoder(EventBatch)}
EVENT_BYTES_ESTIMATE = 400   # an encoded Event with a few levels a side (synthetic feeds: ~390)


def _raw_batch_size(batch: RawBatch) -> int:
    return sum(len(raw) for _, raw in batch.records) + 8 * len(batch.records) + len(batch.source)


def _event_batch_size(batch: EventBatch) -> int:
    return EVENT_BYTES_ESTIMATE * len(batch.events)


class _MsgspecCoder(coders.Coder):
    struct_type: type = None
    size_of = None

    def encode(self, value) -> bytes:
        return _encode(value)

    def decode(self, encoded: bytes):
        return _DECODERS[self.struct_type].decode(encoded)

    def estimate_size(self, value) -> int:
        return type(self).size_of(value)

    def _create_impl(self):
        return coder_impl.CallbackCoderImpl(self.encode, self.decode, self.estimate_size)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return self.struct_type

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


class RawBatchCoder(_MsgspecCoder):
    struct_type = RawBatch
    size_of = staticmethod(_raw_batch_size)


class EventBatchCoder(_MsgspecCoder):
    struct_type = EventBatch
    size_of = staticmethod(_event_batch_size)


coders.registry.register_coder(RawBatch, RawBatchCoder)
coders.registry.register_coder(EventBatch, EventBatchCoder)
