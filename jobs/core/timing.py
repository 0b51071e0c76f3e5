"""Wall seconds per step of a job (in its result, never in a manifest: manifests stay byte-stable)."""

from __future__ import annotations

import time


class Stages:
    """``mark(name)`` records the seconds since the previous mark (or the start) under ``name``."""

    def __init__(self, started: float | None = None) -> None:
        self.started = time.perf_counter() if started is None else started
        self._last = self.started
        self.seconds: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now

    def total(self) -> float:
        """Seconds since the start."""
        return round(time.perf_counter() - self.started, 3)
