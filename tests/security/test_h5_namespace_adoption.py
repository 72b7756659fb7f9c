"""H5: the facade never adopts a namespace it did not make for the organization. A
workspace's namespace is ``kz-<org>--<ws>`` (no two (org, workspace) pairs share one)
and carries the organization's id; after a database loss, whoever registers the old
slug again is refused the old namespaces (409 problem+json), and gets no RoleBinding
in them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kubernetes import client

from kaizen_api.server.app import create_app
from kaizen_api.server.settings import Settings
from kaizen_api.server.tenancy import namespace_name
from tests.support.facade import Facade


@pytest.fixture
def second_facade(facade_cluster: Path, tmp_path: Path) -> Iterator[Facade]:
    """The same cluster behind a facade whose database is new: the first one's is lost."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'after-loss.db'}", kubeconfig=str(facade_cluster)
    )
    with TestClient(create_app(settings)) as test_client:
        yield Facade(test_client)


def subjects(api_client: client.ApiClient, namespace: str) -> set[str]:
    rbac = client.RbacAuthorizationV1Api(api_client)
    return {
        s.name for b in rbac.list_namespaced_role_binding(namespace).items for s in b.subjects or []
    }


def test_a_lost_database_does_not_hand_over_the_old_namespaces(
    facade: Facade, second_facade: Facade, api_client: client.ApiClient
) -> None:
    victim = facade.user("victim")
    org = facade.org(victim)
    ns = facade.workspace(victim, org, "prod")
    # The database is lost; the attacker registers the same slug and workspace.
    attacker = second_facade.user("attacker")
    r = second_facade.call("POST", "/orgs", attacker, json={"slug": org, "name": "mine"})
    assert r.status_code == 201, r.text
    r = second_facade.call("POST", f"/orgs/{org}/workspaces", attacker, json={"name": "prod"})
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "namespace-not-owned"
    assert ns in body["detail"] and "kaizen.studio/org-id" in body["detail"]
    # No binding names the attacker's organization; the victim's are intact.
    names = subjects(api_client, ns)
    assert f"kaizen:org:{org}:org_owner" in names  # the group name is the same slug...
    rows = second_facade.call("GET", f"/orgs/{org}/workspaces", attacker).json()
    assert rows == []  # ...but the attacker has no workspace to reach it through
    labels = client.CoreV1Api(api_client).read_namespace(ns).metadata.labels
    assert labels["kaizen.studio/org-id"] != ""


def test_a_namespace_made_by_someone_else_is_not_adopted(
    facade: Facade, api_client: client.ApiClient
) -> None:
    owner = facade.user("owner")
    org = facade.org(owner)
    squat = namespace_name(org, "ml")
    core = client.CoreV1Api(api_client)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=squat,
                labels={"kaizen.studio/org": org, "kaizen.studio/workspace": "ml"},
            )
        )
    )
    try:
        r = facade.call("POST", f"/orgs/{org}/workspaces", owner, json={"name": "ml"})
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "namespace-not-owned"
        assert subjects(api_client, squat) == set()
        # Nothing half-made: the workspace does not exist in the facade either.
        assert facade.call("GET", f"/orgs/{org}/workspaces/ml", owner).status_code == 404
        # Deleting is refused as well (no namespace the facade did not make is deleted).
    finally:
        core.delete_namespace(squat, propagation_policy="Background")


def test_namespace_names_never_collide(facade: Facade) -> None:
    """org ``x-b`` with workspace ``c`` and org ``x`` with workspace ``b-c`` used to
    share ``kz-x-b-c``; ``--`` inside a name falls back to a hash."""
    stem = f"o{uuid.uuid4().hex[:6]}"
    pairs = [(f"{stem}-b", "c"), (stem, "b-c"), (f"{stem}--b", "c"), (stem, "b--c")]
    owner = facade.user("owner")
    made = set()
    for org, ws in pairs:
        if org not in facade.created_orgs:
            r = facade.call("POST", "/orgs", owner, json={"slug": org, "name": org})
            assert r.status_code == 201, r.text
            facade.created_orgs.append(org)
        ns = facade.workspace(owner, org, ws)
        assert ns == namespace_name(org, ws) and len(ns) <= 63
        made.add(ns)
    assert len(made) == len(pairs)
    assert namespace_name(stem + "-b", "c") == f"kz-{stem}-b--c"


def test_namespace_names_are_dns_labels() -> None:
    import re

    label = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    for org, ws in [("a", "b"), ("a" * 20, "b" * 30), ("a--b", "c"), ("a", "b--c")]:
        name = namespace_name(org, ws)
        assert label.match(name), name
    assert namespace_name("a--b", "c") != namespace_name("a", "b--c")
    assert namespace_name("a-b", "c") != namespace_name("a", "b-c")


def test_upgrade_adopts_the_namespaces_an_older_version_made(
    facade: Facade, database_url: str, facade_cluster: Path, api_client: client.ApiClient
) -> None:
    """A namespace from before the org-id label is refused until an administrator runs
    `kaizen-api sync-workspaces --adopt` once, with the database known to be intact."""
    from kaizen_api.server.__main__ import sync_workspaces

    owner, dev = facade.user("owner"), facade.user("dev")
    org = facade.org(owner)
    ns = facade.workspace(owner, org, "ml")
    facade.member(owner, org, dev, "developer")
    core = client.CoreV1Api(api_client)
    core.patch_namespace(ns, {"metadata": {"labels": {"kaizen.studio/org-id": None}}})
    put = {"subject": f"user:{dev.email}", "role": "developer"}
    r = facade.call("PUT", f"/orgs/{org}/workspaces/ml/members", owner, json=put)
    assert r.status_code == 409 and r.json()["code"] == "namespace-not-owned", r.text
    settings = Settings(database_url=database_url, kubeconfig=str(facade_cluster))
    assert sync_workspaces(settings, adopt=True) == 0
    assert core.read_namespace(ns).metadata.labels["kaizen.studio/org-id"]
    r = facade.call("PUT", f"/orgs/{org}/workspaces/ml/members", owner, json=put)
    assert r.status_code == 200, r.text
