"""The brute-force throttle: failed authentications are counted per client address
(and, for logins, per account) in a SlidingWindow, shared by every replica through the
database. Past the limit every attempt is answered 429 with Retry-After, even with the
right credentials, until the oldest failure leaves the window; refused attempts are not
checked, so they cost no password hash and reveal nothing. A success resets nothing:
it would let one client clear another's count.
"""

from __future__ import annotations

from fastapi import Request
from sqlalchemy import Engine

from kaizen_api.server.problems import Problem
from kaizen_api.server.ratelimit import SlidingWindow


class AuthThrottle:
    """Failed authentications per key; ``limit`` 0 turns the throttle off."""

    def __init__(self, engine: Engine, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.failures = SlidingWindow(engine, "auth-failure", limit, window) if limit > 0 else None

    def check(self, *keys: str) -> None:
        """429 problem+json when any of ``keys`` has used up its failures."""
        if self.failures is None:
            return
        wait = max((self.failures.wait(key) for key in keys), default=0)
        if wait:
            raise Problem(
                429,
                "too-many-failures",
                "Too many failed authentications",
                f"{self.limit} failed attempts within {self.window:g}s from this address or "
                f"for this account; retry in {wait}s",
                headers={"retry-after": str(wait)},
            )

    def failed(self, *keys: str) -> None:
        """Count one failure on each of ``keys``."""
        if self.failures is not None:
            for key in keys:
                self.failures.hit(key)


def client_address(request: Request) -> str:
    """The client's address as the server sees it (behind a proxy, run uvicorn with
    --proxy-headers and --forwarded-allow-ips so that this is the real client)."""
    return request.client.host if request.client else "-"
