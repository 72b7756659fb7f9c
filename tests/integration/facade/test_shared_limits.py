"""Rate limits and the brute-force throttle are counted in the facade's database, so
they hold across replicas: two `kaizen-api` processes on one database give a key its
limit once, not twice, even under simultaneous requests, and failed logins on one
replica throttle the other. The limiter itself: its Retry-After, and that it fails open
when the database is away."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from kaizen_api.server.db import engine_for, migrate
from kaizen_api.server.ratelimit import SlidingWindow
from tests.support.facade import PASSWORD, rate_hit_rows
from tests.support.live_server import live_facade, start_facade

LIMIT = 20
REQUESTS = 60


def test_limits_hold_across_replicas(
    facade_cluster: Path, api_client: client.ApiClient, database_url: str, tmp_path: Path
) -> None:
    env = {"KAIZEN_API_KEY_RATE_LIMIT": str(LIMIT), "KAIZEN_AUTH_FAILURE_LIMIT": "3"}
    with live_facade(facade_cluster, api_client, tmp_path / "a", database_url, env=env) as a:
        b_process, b_url = start_facade(facade_cluster, tmp_path / "b", database_url, env)
        try:
            key = {"authorization": f"Bearer {a.api_key('ci', ['*:read'])}"}
            replicas = [a.api, f"{b_url}/api/v1"]

            def call(n: int) -> httpx.Response:
                return httpx.get(f"{replicas[n % 2]}/orgs/{a.org}", headers=key, timeout=30)

            # Simultaneous requests on both replicas: exactly the limit gets through.
            with ThreadPoolExecutor(12) as pool:
                answers = list(pool.map(call, range(REQUESTS)))
            codes = [r.status_code for r in answers]
            assert codes.count(200) == LIMIT, codes
            assert codes.count(429) == REQUESTS - LIMIT, codes
            for refused in (r for r in answers if r.status_code == 429):
                assert refused.json()["code"] == "rate-limited"
                assert 1 <= int(refused.headers["retry-after"]) <= 60
            served = {i % 2 for i, r in enumerate(answers) if r.status_code == 200}
            assert served == {0, 1}, "both replicas served part of the limit"

            # Three failed logins spread over both replicas throttle the account on both,
            # even with the right password.
            def login(api: str, password: str) -> httpx.Response:
                body = {"email": a.email, "password": password}
                return httpx.post(f"{api}/auth/login", json=body, timeout=30)

            for api in (replicas[0], replicas[1], replicas[0]):
                assert login(api, "not the password at all").status_code == 401
            for api in replicas:
                throttled = login(api, PASSWORD)
                assert throttled.status_code == 429, throttled.text
                assert throttled.json()["code"] == "too-many-failures"
        finally:
            b_process.stop()


def test_retry_after_names_when_the_oldest_hit_leaves(database_url: str) -> None:
    engine = engine_for(database_url)
    migrate(engine)
    try:
        window = SlidingWindow(engine, "test", 3, 10.0)
        assert [window.hit("k", now=t) for t in (100.0, 101.0, 102.0)] == [0, 0, 0]
        assert window.hit("k", now=103.0) == 7  # the hit at 100 leaves at 110
        assert window.wait("k", now=109.5) == 1
        assert window.hit("other", now=103.0) == 0  # keys are counted apart
        assert rate_hit_rows(engine, "test") == 4  # the refused hit was not counted
        assert window.hit("k", now=110.0) == 0  # the window slid past the first hit
        assert window.hit("k", now=110.5) == 1  # 101 leaves at 111
        window.limit = 5  # a raised limit applies at once
        assert window.hit("k", now=110.5) == 0
    finally:
        engine.dispose()


def test_an_unreachable_database_lets_requests_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fail open, as Envoy's global rate limit does: a database outage must not refuse
    every API-key caller (authentication of new callers still needs the database)."""
    engine = engine_for("postgresql://kaizen@127.0.0.1:1/nowhere")
    window = SlidingWindow(engine, "test", 1, 60.0)
    assert [window.hit("k") for _ in range(3)] == [0, 0, 0]
    assert window.wait("k") == 0
    assert "rate limit test not checked: database unavailable" in caplog.text
    engine.dispose()
