"""Sliding-window rate limits (per API key; failed authentications), in process memory.

Each replica counts on its own, so with N replicas a key gets up to N times its
limit; a shared store can replace this class without changing callers.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

PRUNE_AT = 10_000  # keys held before idle ones are dropped (then twice those kept)


class SlidingWindow:
    """At most ``limit`` hits per ``window`` seconds per key."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._prune_at = PRUNE_AT

    def hit(self, key: str, now: float | None = None) -> int:
        """Count one hit; 0 when allowed, else the seconds to wait (Retry-After)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if key not in self._hits and len(self._hits) >= self._prune_at:
                self._prune(now)
            hits = self._hits.setdefault(key, deque())
            wait = self._wait(hits, now)
            if not wait:
                hits.append(now)
            return wait

    def wait(self, key: str, now: float | None = None) -> int:
        """The seconds until a hit on ``key`` would be allowed (0: now), counting none."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.get(key)
            return self._wait(hits, now) if hits is not None else 0

    def _wait(self, hits: deque[float], now: float) -> int:
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(1, math.ceil(hits[0] + self.window - now)) if hits else 1
        return 0

    def _prune(self, now: float) -> None:
        """Forget keys with no hit in the window (keys are client-chosen: bound them)."""
        idle = [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self.window]
        for key in idle:
            del self._hits[key]
        self._prune_at = max(PRUNE_AT, 2 * len(self._hits))

    def __len__(self) -> int:
        return len(self._hits)
