"""The contract of a framing (a file format): how it recognises a file from its first records and
how it splits one line into a record for an exchange adapter (see framings/__init__.py)."""
from __future__ import annotations

from typing import NamedTuple, Optional, Protocol, Sequence, runtime_checkable

import msgspec

# What a record holds, as a framing knows it (Record.kind).
MESSAGE = "message"        # a raw websocket frame: the adapter tells a delta from another stream
DELTA = "delta"            # known to be an order-book delta (an envelope of type delta)
SNAPSHOT = "snapshot"      # a full-book snapshot of Record.symbol
OTHER = "other"            # known to be another stream's message: ignored
CONTROL = "control"        # a collector's in-stream control record (a disconnect marker)

# Lines that are not records (Control.kind).
HEADER = "header"          # a capture header: context, not data
CONNECT = "connect"        # a (re)connection: after the first one a gap may follow
DISCONNECT = "disconnect"  # a disconnection marker: a gap may follow
SENT = "sent"              # what the recorder sent (a subscription request): neither a record
                           # nor a dead letter


class FileContext(msgspec.Struct):
    """What a file's framing knows beyond one line: the exchange and market a connect line named,
    the one symbol of a single-symbol file (hftbacktest), and the run's --max_record_bytes (set by
    the decode stage; None: no bound)."""

    fmt: str
    exchange: Optional[str] = None
    market: Optional[str] = None
    symbol: Optional[str] = None
    channels: Optional[dict[int, str]] = None  # channel id -> "<channel>|<symbol>|<detail>": what
                                             # a venue numbering its channels (Bitfinex) said in
                                             # its subscribe replies on this connection
    max_record_bytes: Optional[int] = None   # the bound a framing applies to what it decodes
                                             # (a compressed frame's inflated size)


class Record(NamedTuple):
    """One line split by its framing: what it holds, and what the line says about it."""

    kind: str                      # MESSAGE | DELTA | SNAPSHOT | OTHER | CONTROL
    payload: bytes
    recv_time: Optional[int]       # the recorder's receive time, ms since epoch, as recorded
    exchange: Optional[str]        # None: the adapter's default
    market: Optional[str]          # None: the adapter infers it
    symbol: Optional[str] = None   # SNAPSHOT/DELTA: the symbol the framing names; MESSAGE: the file's
    file_snapshots: bool = False   # MESSAGE: REST snapshot bodies occur in the stream (of `symbol`)
    channels: Optional[dict] = None  # MESSAGE: the connection's channel ids (FileContext.channels)


class Control(NamedTuple):
    """A line that is not a record: a header, a connect or disconnect marker, and the context after it."""

    kind: str                      # HEADER | CONNECT | DISCONNECT | SENT
    context: FileContext


@runtime_checkable
class Framing(Protocol):
    """A recorder's file format. A module satisfies it by its module-level names.

    NAME: the --input_format value. PRIORITY: detection breaks ties by it (lower first: the more
    specific shapes). DESCRIPTION: one line for --help. EXAMPLE: one line of such a file (docs/inputs/,
    tests). BLANK_IS_DISCONNECT: an empty line marks a disconnect (Tardis.dev), not nothing.
    A framing may also define `observe(line, ctx) -> FileContext`: called on every record line in
    file order before it is batched, it returns the context after it (the same object when the line
    changes nothing). cryptofeed's learns Bitfinex's channel ids from its subscribe replies.
    """

    NAME: str
    PRIORITY: int
    DESCRIPTION: str
    EXAMPLE: bytes
    BLANK_IS_DISCONNECT: bool

    def looks_like(self, line: bytes) -> bool:
        """Does this one line have the format's shape (cheap; detection counts them over the head)."""

    def open(self, head: Sequence[bytes], path: str) -> FileContext:
        """The file's context from its first records (headers and blank lines skipped) and its path."""

    def control(self, line: bytes, ctx: FileContext) -> Optional[Control]:
        """A line that is not a record (a header, a connect line): what it is and the context after
        it; None for a record."""

    def split(self, line: bytes, ctx: FileContext) -> Record:
        """One record -> Record, or raises reasons.Rejected (bad_framing, ...). A frame the
        recorder wrote in another form than text (a compressed binary frame) is decoded here, to at
        most ctx.max_record_bytes."""
