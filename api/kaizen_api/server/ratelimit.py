"""Sliding-window rate limits (per API key; failed authentications), counted in the
facade's database so that every replica shares them: with N replicas a key still gets
its limit, not N times it.

Each allowed hit is a row (``rate_hits``); a hit is allowed while fewer than ``limit``
rows of its key are younger than ``window`` seconds. Time is the wall clock (replicas
run on different hosts; cluster hosts keep NTP time). On PostgreSQL a hit is one call
of the function ``kaizen_rate_hit`` (migration 0002), which serializes the hits of a
key with a transaction-scoped advisory lock; on SQLite the single writer serializes
them. So simultaneous requests on several replicas cannot overshoot the limit.

When the database cannot be reached a limit fails open (the request is allowed, a
warning is logged, and the database is left alone for a few seconds), as Envoy's
global rate limit does by default: a database outage must not turn into an outage of
every API-key caller. Authentication itself still needs the database for callers it
has not seen in the last seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from sqlalchemy import Connection, Engine, delete, func, insert, select, text

from kaizen_api.server.models import RateHit
from kaizen_api.server.problems import database_unavailable

log = logging.getLogger("kaizen_api.ratelimit")
HITS = RateHit.__table__  # type: ignore[attr-defined]
KEY_LENGTH = 400  # longer keys (client-chosen: emails, addresses) are cut
PRUNE_EVERY = 30.0  # seconds between deletions of a limiter's expired rows, per process
WARN_EVERY = 10.0  # seconds between warnings of an unchecked limit, per limiter
# After the database failed, limits are not checked for this long: a host that does not
# answer at all would otherwise cost every API-key request a connect timeout.
BREAK_SECONDS = 5.0


class SlidingWindow:
    """At most ``limit`` hits per ``window`` seconds per key, shared through ``engine``
    by every process that uses the same ``name``."""

    def __init__(self, engine: Engine, name: str, limit: int, window: float = 60.0) -> None:
        self.engine, self.name = engine, name
        self.limit = limit
        self.window = window
        self._pruned = 0.0
        self._warned = -WARN_EVERY
        self._broken_until = 0.0  # monotonic; see BREAK_SECONDS
        self._lock = threading.Lock()  # one prune at a time per process
        self._postgres = engine.dialect.name == "postgresql"

    def hit(self, key: str, now: float | None = None) -> int:
        """Count one hit; 0 when allowed, else the seconds to wait (Retry-After). A hit
        over the limit is not counted."""
        now = time.time() if now is None else now
        key = key[:KEY_LENGTH]
        if self._broken():
            return 0
        try:
            wait = self._hit_postgres(key, now) if self._postgres else self._hit_sqlite(key, now)
        except Exception as exc:
            return self._fail_open(exc)
        self._prune(now)
        return wait

    def _hit_postgres(self, key: str, now: float) -> int:
        """One statement in its own transaction: the function of migration 0002 (lock
        the key, count, insert or compute the wait)."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
            wait: int = db.execute(
                text("SELECT kaizen_rate_hit(:limiter, :key, :now, :window, :limit)"),
                {
                    "limiter": self.name,
                    "key": key,
                    "now": now,
                    "window": self.window,
                    "limit": self.limit,
                },
            ).scalar_one()
            return wait

    def _hit_sqlite(self, key: str, now: float) -> int:
        with self.engine.connect() as db, db.begin() as transaction:
            # Inserted first: the insert takes the database's write lock, so the count
            # below already sees every other process's hit.
            db.execute(insert(HITS).values(limiter=self.name, key=key, at=now))
            wait = self._wait(db, key, now, counting=1)
            if wait:
                transaction.rollback()
            return wait

    def wait(self, key: str, now: float | None = None) -> int:
        """The seconds until a hit on ``key`` would be allowed (0: now), counting none."""
        now = time.time() if now is None else now
        if self._broken():
            return 0
        try:
            with self.engine.connect() as db:
                return self._wait(db, key[:KEY_LENGTH], now)
        except Exception as exc:
            return self._fail_open(exc)

    def _wait(self, db: Connection, key: str, now: float, counting: int = 0) -> int:
        """0 when the hits of ``key`` in the window (``counting`` of them the one being
        made) leave room for it, else the seconds until they do."""
        young = (
            (HITS.c.limiter == self.name) & (HITS.c.key == key) & (HITS.c.at > now - self.window)
        )
        earlier: int = db.execute(select(func.count()).where(young)).scalar_one() - counting
        if earlier < self.limit:
            return 0
        # The hit that must age out before one more fits: the (earlier - limit + 1)-th
        # oldest (the one being made is the youngest).
        freed_by: float = db.execute(
            select(HITS.c.at).where(young).order_by(HITS.c.at).offset(earlier - self.limit).limit(1)
        ).scalar_one()
        return max(1, math.ceil(freed_by + self.window - now))

    def _prune(self, now: float) -> None:
        """Delete this limiter's rows past its window (keys are client-chosen: rows of
        idle keys must not pile up)."""
        with self._lock:
            if now - self._pruned < PRUNE_EVERY:
                return
            self._pruned = now
        try:
            with self.engine.begin() as db:
                db.execute(
                    delete(HITS).where(HITS.c.limiter == self.name, HITS.c.at <= now - self.window)
                )
        except Exception as exc:
            self._fail_open(exc)

    def _broken(self) -> bool:
        return time.monotonic() < self._broken_until

    def _fail_open(self, exc: Exception) -> int:
        if not database_unavailable(exc):
            raise exc
        now = time.monotonic()
        self._broken_until = now + BREAK_SECONDS
        if now - self._warned < WARN_EVERY:  # one line per outage, not one per request
            return 0
        self._warned = now
        log.warning(
            "rate limit %s not checked: database unavailable (%s)",
            self.name,
            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
        )
        return 0
