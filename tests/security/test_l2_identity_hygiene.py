"""L2: a refresh token can be spent once even by simultaneous requests; an API key
cannot join its user to other organizations, and /auth/me shows only what the key
may see; accepting an invitation into an organization one is in already is a 409."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from tests.security.people import bearer, client_from, login, problem, register
from tests.support.live_server import Server, live_facade


@pytest.fixture
def server(
    facade_cluster: Path, api_client: client.ApiClient, database_url: str, tmp_path: Path
) -> Iterator[Server]:
    with live_facade(facade_cluster, api_client, tmp_path, database_url) as handle:
        yield handle


def invite(server: Server, email: str, role: str = "viewer") -> str:
    r = httpx.post(
        f"{server.api}/orgs/{server.org}/invitations",
        json={"email": email, "role": role},
        headers=server.headers,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_simultaneous_refreshes_spend_the_token_once(server: Server) -> None:
    tokens = login(server.url, server.email)

    def spend(_: int) -> httpx.Response:
        with client_from(server.url) as http:
            return http.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(spend, range(8)))
    codes = [r.status_code for r in answers]
    assert codes.count(200) <= 1, f"one refresh token spent {codes.count(200)} times: {codes}"
    # The replays revoked the login: no token it issued refreshes any more.
    for fresh in (r.json() for r in answers if r.status_code == 200):
        with client_from(server.url) as http:
            again = http.post("/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
        problem(again, 401, "token-reused")


def test_an_api_key_cannot_accept_invitations_or_see_other_organizations(server: Server) -> None:
    """A key of org A, held by a user invited to org B (which they did not join)."""
    email = register(server.url, "keyholder")
    user = bearer(login(server.url, email))
    with client_from(server.url) as http:
        own = http.post("/orgs", json={"slug": f"k{server.org[1:]}", "name": "own"}, headers=user)
        assert own.status_code == 201, own.text
        second = http.post(
            "/orgs", json={"slug": f"q{server.org[1:]}", "name": "2nd"}, headers=user
        )
        assert second.status_code == 201, second.text
        key = http.post(
            f"/orgs/{own.json()['slug']}/keys",
            json={"name": "ci", "permissions": ["*:*"]},
            headers=user,
        )
        assert key.status_code == 201, key.text
        as_key = {"authorization": f"Bearer {key.json()['key']}"}
        me = http.get("/auth/me", headers=as_key)
        assert me.status_code == 200
        assert [o["slug"] for o in me.json()["organizations"]] == [own.json()["slug"]]
        token = invite(server, email)
        problem(
            http.post("/invitations/accept", json={"token": token}, headers=as_key),
            403,
            "api-key-not-allowed",
        )
        # The user themself can.
        assert (
            http.post("/invitations/accept", json={"token": token}, headers=user).status_code == 200
        )


def test_accepting_into_an_organization_one_is_in_is_a_conflict(server: Server) -> None:
    email = register(server.url, "twice")
    user = bearer(login(server.url, email))
    first, second = invite(server, email), invite(server, email)
    with client_from(server.url) as http:
        assert (
            http.post("/invitations/accept", json={"token": first}, headers=user).status_code == 200
        )
        problem(
            http.post("/invitations/accept", json={"token": second}, headers=user),
            409,
            "already-member",
        )
