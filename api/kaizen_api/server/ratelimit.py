"""Sliding-window rate limits (per API key), in process memory.

Each replica counts on its own, so with N replicas a key gets up to N times its
limit; a shared store can replace this class without changing callers.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class SlidingWindow:
    """At most ``limit`` hits per ``window`` seconds per key."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, now: float | None = None) -> int:
        """Count one hit; 0 when allowed, else the seconds to wait (Retry-After)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(1, math.ceil(hits[0] + self.window - now))
            hits.append(now)
            return 0
