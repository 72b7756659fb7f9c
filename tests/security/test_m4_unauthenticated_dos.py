"""M4: unauthenticated requests cannot exhaust the facade or lock users out.
Registration is throttled per client address and argon2 work is bounded; throttles key
on the real client address behind a trusted proxy (and only then read
X-Forwarded-For); failures on one account do not lock out its owner; JWT callers are
rate-limited like API keys. The facade runs as the `kaizen-api` console script; a
second loopback address (127.0.0.2) stands for the Ingress controller."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from kubernetes import client

from tests.security.people import bearer, client_from, login, problem, register
from tests.support.facade import PASSWORD
from tests.support.live_server import Server, live_facade

PROXY = "127.0.0.2"


@contextmanager
def facade(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path, **env: str
) -> Iterator[Server]:
    with live_facade(facade_cluster, api_client, tmp_path, env=env) as server:
        yield server


def bad_login(http: httpx.Client, email: str) -> httpx.Response:
    return http.post("/auth/login", json={"email": email, "password": "wrong password!"})


def test_registration_is_throttled_per_client_address(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path
) -> None:
    with (
        facade(facade_cluster, api_client, tmp_path, KAIZEN_REGISTER_LIMIT="3") as server,
        client_from(server.url, "127.0.0.5") as http,
    ):
        answers = [
            http.post(
                "/auth/register",
                json={"email": f"r{n}-{uuid.uuid4().hex[:6]}@example.com", "password": PASSWORD},
            )
            for n in range(5)
        ]
        assert [r.status_code for r in answers[:3]] == [201, 201, 201]
        body = problem(answers[3], 429, "too-many-registrations")
        assert int(answers[3].headers["retry-after"]) > 0 and "address" in body["detail"]
        with client_from(server.url, "127.0.0.6") as elsewhere:  # another client is not affected
            r = elsewhere.post(
                "/auth/register",
                json={"email": f"o-{uuid.uuid4().hex[:6]}@example.com", "password": PASSWORD},
            )
            assert r.status_code == 201, r.text


def test_password_hashing_is_bounded_and_refused_when_busy(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path
) -> None:
    """One hash at a time, no waiting: simultaneous registrations beyond it are 503."""
    env = {"KAIZEN_PASSWORD_HASH_CONCURRENCY": "1", "KAIZEN_PASSWORD_HASH_WAIT": "0"}
    with facade(facade_cluster, api_client, tmp_path, **env) as server:

        def register_one(n: int) -> httpx.Response:
            with client_from(server.url) as http:
                return http.post(
                    "/auth/register",
                    json={
                        "email": f"c{n}-{uuid.uuid4().hex[:6]}@example.com",
                        "password": PASSWORD,
                    },
                )

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(register_one, range(8)))
        codes = sorted(r.status_code for r in answers)
        assert 201 in codes and 503 in codes, codes
        busy = next(r for r in answers if r.status_code == 503)
        problem(busy, 503, "busy")
        assert int(busy.headers["retry-after"]) >= 1


def test_an_untrusted_peer_cannot_spoof_its_address(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path
) -> None:
    """Without trusted proxies X-Forwarded-For is ignored: new spellings do not reset
    the guesser's failures."""
    with facade(facade_cluster, api_client, tmp_path) as server:
        victim = server.email
        answers = []
        for n in range(12):
            with client_from(server.url, **{"x-forwarded-for": f"198.51.100.{n}"}) as http:
                answers.append(bad_login(http, f"nobody{n}@example.com"))
        assert [r.status_code for r in answers[:10]] == [401] * 10
        problem(answers[10], 429, "too-many-failures")
        assert victim  # the owner is not the point here


def test_a_guesser_behind_the_ingress_locks_out_only_itself(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path
) -> None:
    """Every client reaches the facade through one proxy address; failures of one
    client (and failures on one account) do not lock out others, nor the account's
    owner logging in from a clean address."""
    with facade(
        facade_cluster, api_client, tmp_path, KAIZEN_TRUSTED_PROXIES=f"{PROXY}/32"
    ) as server:
        attacker = {"x-forwarded-for": "203.0.113.9"}
        with client_from(server.url, PROXY, **attacker) as http:
            for n in range(10):
                assert bad_login(http, f"nobody{n}@example.com").status_code == 401
            problem(bad_login(http, "nobody@example.com"), 429, "too-many-failures")
        # Ten failures on the owner's account, from ten addresses.
        for n in range(10):
            with client_from(
                server.url, PROXY, **{"x-forwarded-for": f"203.0.113.{100 + n}"}
            ) as http:
                assert bad_login(http, server.email).status_code == 401
        # Past the account's limit, an address that failed on it gets no further guess.
        with client_from(server.url, PROXY, **{"x-forwarded-for": "203.0.113.100"}) as http:
            problem(bad_login(http, server.email), 429, "too-many-failures")
        # The owner, from a clean address, logs in.
        tokens = login(server.url, server.email, **{"x-forwarded-for": "198.51.100.77"})
        assert tokens["access_token"]
        # A bystander behind the same proxy too.
        other = register(server.url, "bystander", **{"x-forwarded-for": "198.51.100.78"})
        assert login(server.url, other, **{"x-forwarded-for": "198.51.100.78"})["access_token"]


def test_jwt_callers_are_rate_limited(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path
) -> None:
    with facade(facade_cluster, api_client, tmp_path, KAIZEN_USER_RATE_LIMIT="5") as server:
        email = register(server.url, "busy")
        headers = bearer(login(server.url, email))
        with client_from(server.url) as http:
            answers = [http.get("/auth/me", headers=headers) for _ in range(7)]
        assert [r.status_code for r in answers[:5]] == [200] * 5
        body = problem(answers[5], 429, "rate-limited")
        assert "user" in body["title"].lower() and int(answers[5].headers["retry-after"]) > 0
