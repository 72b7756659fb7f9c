"""The brute-force throttle: failed authentications are counted per client address
(and, for logins, per account and per account and address) in a SlidingWindow, shared
by every replica through the database. Past the limit every attempt is answered 429
with Retry-After, even with the right credentials, until the oldest failure leaves the
window; refused attempts are not checked, so they cost no password hash and reveal
nothing. A success resets nothing: it would let one client clear another's count.
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
        # One failure per (account, address): past an account's limit, only addresses
        # that have not failed on it may still try it (see check_login).
        self.pairs = SlidingWindow(engine, "auth-failure-pair", 1, window) if limit > 0 else None

    def check_login(self, address: str, account: str) -> None:
        """429 when the client's address has used up its failures, or when the account
        has and this address failed on it too. A guesser locks out only itself: the
        owner of an attacked account still logs in from any address that did not guess
        (a botnet gets one guess per address per window, not ``limit``)."""
        self.check(f"login-address:{address}")
        if self.failures is None or self.pairs is None:
            return
        wait = self.failures.wait(f"login-account:{account}")
        if wait:
            wait = self.pairs.wait(f"{account}|{address}")
        if wait:
            raise Problem(
                429,
                "too-many-failures",
                "Too many failed authentications",
                f"{self.limit} failed attempts within {self.window:g}s for this account, one "
                f"of them from this address; retry in {wait}s",
                headers={"retry-after": str(wait)},
            )

    def login_failed(self, address: str, account: str) -> None:
        """Count a failed login on the address, the account and the pair."""
        self.failed(f"login-address:{address}", f"login-account:{account}")
        if self.pairs is not None:
            self.pairs.hit(f"{account}|{address}")

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
    """The client's address: the peer's, or behind a trusted proxy
    (KAIZEN_TRUSTED_PROXIES) the one its X-Forwarded-For names."""
    return request.client.host if request.client else "-"
