"""M7: the audit trail is only as tamper-proof as the facade's database role. The
facade runs as a runtime role that may insert and read audit records, nothing more;
migrations run as the owner (KAIZEN_MIGRATION_DATABASE_URL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from kubernetes import client

from tests.support.live_server import live_facade


@dataclass
class Roles:
    owner_url: str
    runtime_url: str


def _url(admin: str, user: str, password: str, database: str) -> str:
    rest = admin.split("@", 1)[1].rsplit("/", 1)[0]
    return f"postgresql://{user}:{password}@{rest}/{database}"


@pytest.fixture
def roles(postgres_admin_url: str) -> Iterator[Roles]:
    """A database owned by a migration role, and a runtime role allowed to connect."""
    suffix = uuid.uuid4().hex[:8]
    owner, runtime, database = f"kz_owner_{suffix}", f"kz_app_{suffix}", f"t_roles_{suffix}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {owner} LOGIN PASSWORD 'owner-pw'")
        admin.execute(f"CREATE ROLE {runtime} LOGIN PASSWORD 'app-pw'")
        admin.execute(f"CREATE DATABASE {database} OWNER {owner}")
    yield Roles(
        _url(postgres_admin_url, owner, "owner-pw", database),
        _url(postgres_admin_url, runtime, "app-pw", database),
    )
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {runtime}")
        admin.execute(f"DROP ROLE IF EXISTS {owner}")


def test_the_runtime_role_can_only_insert_and_read_audit_records(
    facade_cluster: Path, api_client: client.ApiClient, roles: Roles, tmp_path: Path
) -> None:
    env = {"KAIZEN_MIGRATION_DATABASE_URL": roles.owner_url}
    with live_facade(facade_cluster, api_client, tmp_path, roles.runtime_url, env=env) as server:
        r = httpx.get(f"{server.api}/orgs/{server.org}/audit", headers=server.headers, timeout=30)
        assert r.status_code == 200 and r.json(), r.text  # it writes and reads records
    with psycopg.connect(roles.runtime_url, autocommit=True) as app:
        count = app.execute("SELECT count(*) FROM audit_records").fetchone()
        assert count is not None and count[0] > 0
        for statement in (
            "UPDATE audit_records SET actor = 'someone else'",
            "DELETE FROM audit_records",
            "TRUNCATE audit_records",
            "DROP TRIGGER audit_records_append_only ON audit_records",
            "ALTER TABLE audit_records DISABLE TRIGGER ALL",
            "DROP TABLE audit_records",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)
        # What the facade needs elsewhere it still has.
        app.execute("UPDATE users SET name = name")
