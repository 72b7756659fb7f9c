"""M7: an organization's audit view holds what its members did, nothing an outsider
wrote into it; unauthenticated floods cannot fill the (append-only) table; joining by
invitation is in the organization's view."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from sqlalchemy import text

from kaizen_api.server.db import engine_for
from tests.security.people import bearer, client_from, login, register
from tests.support.live_server import Server, live_facade

FLOOD_LIMIT = 5


@pytest.fixture
def server(
    facade_cluster: Path, api_client: client.ApiClient, database_url: str, tmp_path: Path
) -> Iterator[Server]:
    env = {"KAIZEN_ANONYMOUS_AUDIT_LIMIT": str(FLOOD_LIMIT)}
    with live_facade(facade_cluster, api_client, tmp_path, database_url, env=env) as handle:
        yield handle


def org_audit(server: Server) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.api}/orgs/{server.org}/audit", headers=server.headers, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json())


def settled(server: Server) -> list[dict[str, Any]]:
    """The org's records once a marker mutation of the owner is in (records are
    written after the answer)."""
    marker = httpx.post(
        f"{server.api}/orgs/{server.org}/teams",
        json={"name": f"t{time.monotonic_ns() % 10**6}"},
        headers=server.headers,
        timeout=30,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records = org_audit(server)
        if any(r["request_id"] == marker.headers["x-request-id"] for r in records):
            return records
        time.sleep(0.2)
    raise AssertionError("the marker mutation was never recorded")


def test_outsiders_cannot_write_into_an_organizations_audit_view(server: Server) -> None:
    path = f"/orgs/{server.org}/members"
    with client_from(server.url, **{"user-agent": "forged entry"}) as anonymous:
        assert (
            anonymous.post(path, json={"email": "x@example.com", "role": "viewer"}).status_code
            == 401
        )
    outsider = bearer(login(server.url, register(server.url, "outsider")))
    with client_from(server.url, **{"user-agent": "forged entry"}) as http:
        # A valid body (404: not a member) and an invalid one (422 before any membership check).
        assert (
            http.post(
                path, json={"email": "x@example.com", "role": "viewer"}, headers=outsider
            ).status_code
            == 404
        )
        assert http.post(path, json={"nonsense": 1}, headers=outsider).status_code == 422
    forged = [r for r in settled(server) if r["user_agent"] == "forged entry"]
    assert forged == [], f"outsiders' requests in the organization's audit view: {forged}"


def test_joining_by_invitation_is_in_the_organizations_view(server: Server) -> None:
    email = register(server.url, "invitee")
    invited = httpx.post(
        f"{server.api}/orgs/{server.org}/invitations",
        json={"email": email, "role": "viewer"},
        headers=server.headers,
        timeout=30,
    )
    assert invited.status_code == 201, invited.text
    with client_from(server.url) as http:
        accepted = http.post(
            "/invitations/accept",
            json={"token": invited.json()["token"]},
            headers=bearer(login(server.url, email)),
        )
    assert accepted.status_code == 200, accepted.text
    joins = [
        r
        for r in settled(server)
        if r["action"] == "POST /invitations/accept" and r["actor"] == email
    ]
    assert len(joins) == 1 and joins[0]["outcome"] == 200


def test_an_unauthenticated_flood_does_not_fill_the_audit_table(server: Server) -> None:
    with client_from(server.url, "127.0.0.7") as anonymous:
        for n in range(4 * FLOOD_LIMIT):
            assert anonymous.post(f"/orgs/flood{n}/members", json={}).status_code == 401
    settled(server)
    engine = engine_for(server.database_url)
    try:
        with engine.connect() as db:
            rows = db.execute(
                text("SELECT count(*) FROM audit_records WHERE ip = '127.0.0.7'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert rows <= FLOOD_LIMIT, f"{rows} records of one unauthenticated address"
