"""Breaks in a connection's sequence: a venue that numbers every message of a connection.

Bitfinex (SEQ_ALL) and Coinbase Advanced Trade (`sequence_num`) number each message a connection
delivers, heartbeats and other channels included: +1 a message, across every symbol it carries.
A key's own numbers are therefore not contiguous and the sequencer cannot see a loss per key; only
the reader of the connection's frames in receive order can. `ConnectionWatch` is that reader's
check: fed every numbered frame of one connection in order (adapter.connection_number), it tells
when a number skips (last `L`, next `N > L + 1`) and returns one CONNECTION_BREAK marker per key
the connection has carried so far, ids `L`, received when the frame that revealed the break was.
The sequencer turns each into that key's gap (core/sequencer.py). A key the connection had not
carried before the break has nothing to be cut off.

Numbers at or below the last one (a frame written twice) change nothing: the sequencer deduplicates
the book's messages by them. A connection is what a capture holds between two connect lines
(framings that declare CONNECTIONS: cryptofeed); its state is small and outlives one read of a
followed file (transforms/follow.py).
"""
from __future__ import annotations

from typing import Optional

import msgspec

from beam_pipeline.core.model import CONNECTION_BREAK, CONNECTION_SEQUENCE, Event


class ConnectionState(msgspec.Struct):
    """What the watch keeps of one connection."""

    last: Optional[int] = None                 # the highest number seen
    carried: list[tuple[str, str]] = []        # (market, symbol) of each book it has carried
    breaks: int = 0                            # breaks seen in its numbers


class ConnectionWatch:
    """Checks one connection's numbers (see the module docstring)."""

    def __init__(self, exchange: str, state: Optional[ConnectionState] = None):
        self.exchange = exchange
        self.state = state if state is not None else ConnectionState()
        self._carried = set(map(tuple, self.state.carried))

    def see(self, number: int, key: Optional[tuple[str, str]], recv_time: Optional[int],
            source: str) -> list[Event]:
        """One frame's number (and the (market, symbol) of the book it belongs to, None for a
        frame of no book): the markers of the break it reveals, if any."""
        st = self.state
        markers = []
        if st.last is not None and number > st.last + 1:
            st.breaks += 1
            markers = [Event(self.exchange, market, symbol, CONNECTION_BREAK, st.last, st.last,
                             None, None, recv_time, b"[]", b"[]", CONNECTION_SEQUENCE, source)
                       for market, symbol in st.carried]
        if st.last is None or number > st.last:
            st.last = number
        if key is not None and key not in self._carried:
            self._carried.add(key)
            st.carried.append(key)
        return markers
