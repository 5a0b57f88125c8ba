"""The terminal's progress line during a run: records read, clean, dead letters, records per second.

Drawn with tqdm on stderr, only when stderr is a terminal (a log or a pipe gets the summary alone).
"""
from __future__ import annotations

import sys
import threading
import time

from beam_pipeline.core import progress as counters


def render(counts: dict, seconds: float) -> str:
    rate = counts[counters.READ] / max(seconds, 1e-9)
    return (f"read {counts[counters.READ]:,}  clean {counts[counters.CLEAN]:,}  "
            f"dead {counts[counters.DEAD]:,}  {rate:,.0f} records/s  {seconds:,.0f} s")


class ProgressLine:
    """A context manager: redraws the line every `every_s` seconds from a background thread."""

    def __init__(self, enabled: bool = True, stream=None, every_s: float = 0.5):
        self.stream = stream or sys.stderr
        self.enabled = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = None
        self._bar = None

    def __enter__(self):
        counters.reset()
        self.started = time.monotonic()
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(file=self.stream, bar_format="{desc}", leave=False, dynamic_ncols=True)
            self._thread = threading.Thread(target=self._draw, name="progress", daemon=True)
            self._thread.start()
        return self

    def _draw(self):
        while not self._stop.wait(self.every_s):
            self._bar.set_description_str(render(counters.snapshot(),
                                                 time.monotonic() - self.started))

    def say(self, text: str) -> None:
        """Print a line to stdout above the progress line (which is redrawn below it)."""
        if self._bar is not None:
            self._bar.clear()
        print(text, flush=True)
        if self._bar is not None:
            self._bar.refresh()

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __exit__(self, *_):
        self.close()
        return False
