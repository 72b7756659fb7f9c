"""A real `kaizen-api` process (uvicorn, the exact console script) on a database of the
test's choosing, against the real apiserver, with a logged-in organization owner; the
namespaces of the workspaces it made are deleted afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from tests.support.facade import PASSWORD
from tests.support.processes import LocalProcess, free_port, start, wait_http_ok


@dataclass
class Server:
    """The live facade and its first user, who owns ``org`` with workspace ``ml``."""

    process: LocalProcess
    url: str
    headers: dict[str, str]
    org: str
    email: str = ""
    database_url: str = ""

    @property
    def api(self) -> str:
        return self.url + "/api/v1"

    def api_key(self, name: str, permissions: list[str]) -> str:
        """A new API key of the owner's organization (its secret, shown once)."""
        created = httpx.post(
            f"{self.api}/orgs/{self.org}/keys",
            json={"name": name, "permissions": permissions},
            headers=self.headers,
            timeout=30,
        )
        assert created.status_code == 201, created.text
        return str(created.json()["key"])


def start_facade(
    kubeconfig: Path, folder: Path, database_url: str, env: dict[str, str] | None = None
) -> tuple[LocalProcess, str]:
    """Start `kaizen-api` on a free loopback port; wait until it answers."""
    port = free_port()
    process = start(
        ["kaizen-api", "--host", "127.0.0.1", "--port", str(port)],
        folder / "api.log",
        {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "KAIZEN_DATABASE_URL": database_url,
            "KAIZEN_SELF_SERVICE_PLANS": "free,pro,enterprise",  # tests choose any plan
            **(env or {}),
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/healthz", process)
    except Exception:
        process.stop()
        raise
    return process, url


def owner(url: str, prefix: str = "owner", plan: str = "free") -> tuple[str, dict[str, str], str]:
    """Register and log in a user who makes an organization (``plan``) with workspace
    ``ml``: (email, auth headers, organization slug)."""
    email = f"{prefix}-{uuid.uuid4().hex[:6]}@example.com"
    with httpx.Client(base_url=url + "/api/v1", timeout=60) as http:
        http.post("/auth/register", json={"email": email, "password": PASSWORD}).raise_for_status()
        token = http.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
        headers = {"authorization": f"Bearer {token['access_token']}"}
        org = f"{prefix[0]}{uuid.uuid4().hex[:8]}"
        http.post(
            "/orgs", json={"slug": org, "name": org, "plan": plan}, headers=headers
        ).raise_for_status()
        http.post(
            f"/orgs/{org}/workspaces", json={"name": "ml"}, headers=headers
        ).raise_for_status()
    return email, headers, org


def workspace_namespaces(database_url: str) -> set[str]:
    """The namespaces of every workspace the facade's database knows."""
    from sqlalchemy import text

    from kaizen_api.server.db import engine_for

    engine = engine_for(database_url)
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text("SELECT namespace FROM workspaces"))}
    finally:
        engine.dispose()


def delete_namespaces(api_client: client.ApiClient, names: set[str]) -> None:
    core = client.CoreV1Api(api_client)
    for ns in core.list_namespace(label_selector="app.kubernetes.io/managed-by=kaizen-api").items:
        if ns.metadata.name in names:
            core.delete_namespace(ns.metadata.name, propagation_policy="Background")


@contextmanager
def live_facade(
    kubeconfig: Path,
    api_client: client.ApiClient,
    folder: Path,
    database_url: str | None = None,
    *,
    env: dict[str, str] | None = None,
    plan: str = "free",
    prefix: str = "owner",
) -> Iterator[Server]:
    """A running facade with an organization owner; on exit the process stops and the
    namespaces of every workspace in its database (whatever made them) are deleted."""
    database_url = database_url or f"sqlite:///{folder / 'api.db'}"
    process, url = start_facade(kubeconfig, folder, database_url, env)
    org = ""
    try:
        email, headers, org = owner(url, prefix, plan)
        yield Server(process, url, headers, org, email, database_url)
    finally:
        process.stop()
        try:
            made = workspace_namespaces(database_url)
        except Exception:  # the database is gone (a test dropped it): the first one only
            made = {f"kz-{org}--ml"} if org else set()
        delete_namespaces(api_client, made)


@pytest.fixture(scope="module", name="server")
def module_server(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``server``: a live facade on SQLite, shared by a test module (import
    ``module_server`` into the module to use it)."""
    # Generated requests guess credentials on purpose: no lock-out for this address.
    env = {"KAIZEN_AUTH_FAILURE_LIMIT": "1000000", "KAIZEN_USER_RATE_LIMIT": "1000000"}
    with live_facade(
        facade_cluster, api_client, tmp_path_factory.mktemp("live"), env=env, prefix="fuzz"
    ) as handle:
        yield handle
