"""M8 (facade): plans are not self-service beyond the free one. Creating an
organization on a paid plan, or changing a plan, needs a platform administrator; free
limits hold across workspaces (a workspace limit, since agents count per namespace)
and under concurrent requests (the organization's row is locked while counting)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from kubernetes import client

from kaizen_api.server.app import create_app
from kaizen_api.server.settings import Settings
from tests.security.people import client_from, register
from tests.support.facade import PASSWORD, Facade
from tests.support.live_server import Server, live_facade

PLATFORM_ADMIN = "platform-admin@example.com"


@pytest.fixture
def default_facade(facade_cluster: Path, database_url: str) -> Iterator[Facade]:
    """The facade with the default plan settings (and one platform administrator)."""
    settings = Settings(
        database_url=database_url, kubeconfig=str(facade_cluster), platform_admins=PLATFORM_ADMIN
    )
    with TestClient(create_app(settings)) as test_client:
        yield Facade(test_client)


def test_paid_plans_are_not_self_service(
    default_facade: Facade, api_client: client.ApiClient
) -> None:
    facade = default_facade
    owner = facade.user("owner")
    r = facade.call(
        "POST", "/orgs", owner, json={"slug": "ent1", "name": "x", "plan": "enterprise"}
    )
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "plan-not-self-service"
    org = facade.org(owner)  # free
    r = facade.call("PUT", f"/orgs/{org}/plan", owner, json={"plan": "enterprise"})
    assert r.status_code == 403 and r.json()["code"] == "platform-admin-only", r.text
    # The platform administrator (not a member) changes it; the quotas follow.
    ns = facade.workspace(owner, org, "ml")
    core = client.CoreV1Api(api_client)
    assert core.read_namespaced_resource_quota("kaizen-plan", ns).spec.hard
    r = facade.call("POST", "/auth/register", json={"email": PLATFORM_ADMIN, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = facade.call("POST", "/auth/login", json={"email": PLATFORM_ADMIN, "password": PASSWORD})
    admin = {"authorization": f"Bearer {r.json()['access_token']}"}
    r = facade.call("PUT", f"/orgs/{org}/plan", headers=admin, json={"plan": "enterprise"})
    assert r.status_code == 200 and r.json()["plan"] == "enterprise", r.text
    # The plan's object-count quota is gone; the platform's compute guard stays.
    quotas = [q.metadata.name for q in core.list_namespaced_resource_quota(ns).items]
    assert "kaizen-plan" not in quotas and "kaizen-compute" in quotas


def test_free_limits_hold_across_workspaces(default_facade: Facade) -> None:
    facade = default_facade
    owner = facade.user("owner")
    org = facade.org(owner)
    for name in ("a", "b", "c"):
        facade.workspace(owner, org, name)
    r = facade.call("POST", f"/orgs/{org}/workspaces", owner, json={"name": "d"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "quota-exceeded" and r.json()["quota"] == "workspaces"


@pytest.fixture
def server(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path, postgres_admin_url: str
) -> Iterator[Server]:
    from localdb import postgres

    url = postgres.create_database(postgres_admin_url, f"t_m8_{uuid.uuid4().hex[:12]}")
    try:
        with live_facade(facade_cluster, api_client, tmp_path, url) as handle:
            yield handle
    finally:
        postgres.drop_database(postgres_admin_url, url.rsplit("/", 1)[-1])


def test_concurrent_additions_do_not_pass_the_user_limit(server: Server) -> None:
    """Free: 3 users. Eight registered users are added at once (PostgreSQL)."""
    emails = [register(server.url, f"racer{i}") for i in range(8)]

    def add(email: str) -> int:
        with client_from(server.url) as http:
            r = http.post(
                f"/orgs/{server.org}/members",
                json={"email": email, "role": "viewer"},
                headers=server.headers,
            )
            return r.status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(add, emails))
    members = httpx.get(
        f"{server.api}/orgs/{server.org}/members", headers=server.headers, timeout=30
    ).json()
    assert len(members) <= 3, (codes, members)
    assert codes.count(201) == 2, codes
    assert set(codes) <= {201, 403}, codes
