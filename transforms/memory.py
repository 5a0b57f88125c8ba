"""Memory pressure: the error-handling strategy's ladder, for stages that buffer in worker memory.

    above 70% of the limit   shrink batch sizes
    above 80%                drop caches (Arrow's memory pool, Python's garbage)
    above 90%                flush buffers to the sink now
    above 95%                fail the bundle with a clear error, so the runner retries it
                             (on a worker with more room, or after memory was freed)

Nothing is ever dropped: every step keeps or writes the buffered rows. Each step that fires is
counted as a Beam metric (namespace "memory") and logged once per stage and step.
"""
from __future__ import annotations

import gc
import logging
from typing import Callable, Optional

import psutil
from apache_beam.metrics import Metrics

SHRINK, DROP_CACHES, FLUSH, FAIL = "shrink", "drop_caches", "flush", "fail"
LADDER = ((0.95, FAIL), (0.90, FLUSH), (0.80, DROP_CACHES), (0.70, SHRINK))


class MemoryPressureError(RuntimeError):
    """Raised above 95% of the limit: the runner retries the bundle instead of the worker dying."""


def _process_rss() -> int:
    return psutil.Process().memory_info().rss


class MemoryGuard:
    """Checks this process's RSS against a limit; `step()` says what a buffering stage should do."""

    def __init__(self, stage: str, limit_bytes: Optional[int] = None,
                 rss: Callable[[], int] = _process_rss):
        self.stage = stage
        self.limit_bytes = limit_bytes or psutil.virtual_memory().total
        self.rss = rss
        self._logged = set()

    @classmethod
    def from_gb(cls, stage: str, limit_gb: Optional[float]) -> "MemoryGuard":
        return cls(stage, int(limit_gb * 1024 ** 3) if limit_gb else None)

    def ratio(self) -> float:
        return self.rss() / self.limit_bytes

    def step(self) -> Optional[str]:
        """The highest step whose threshold is passed, after doing the part that is the guard's own
        (dropping caches; raising at FAIL); None when memory is fine."""
        ratio = self.ratio()
        for threshold, step in LADDER:
            if ratio > threshold:
                self._record(step, ratio)
                if step in (DROP_CACHES, FLUSH, FAIL):
                    drop_caches()
                if step == FAIL and self.ratio() > threshold:
                    raise MemoryPressureError(
                        f"{self.stage}: memory at {ratio:.0%} of the {self.limit_bytes / 1024**3:.2f} "
                        f"GiB limit (--memory_limit_gb); failing the bundle so the runner retries it")
                return step
        return None

    def _record(self, step: str, ratio: float) -> None:
        Metrics.counter("memory", f"{self.stage}.{step}").inc()
        if step not in self._logged:
            self._logged.add(step)
            logging.getLogger(__name__).warning(
                "%s: memory at %.0f%% of the limit: %s", self.stage, ratio * 100, step)


def drop_caches() -> None:
    """Give back what can be given back without losing data."""
    gc.collect()
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except (ImportError, AttributeError):
        pass
