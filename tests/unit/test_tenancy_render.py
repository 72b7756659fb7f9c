"""The pure tenancy renders: namespace names, the workspace Namespace's labels, the
facade's own RoleBinding, and the ownership check on an existing Namespace."""

from __future__ import annotations

from kaizen_api.server.tenancy import (
    ORG_ID_LABEL,
    WORKSPACE_LABEL,
    namespace_name,
    owned_by,
    render_facade_binding,
    render_namespace,
    render_quota,
    render_role_bindings,
)


def test_namespace_names_separate_org_and_workspace() -> None:
    assert namespace_name("acme", "prod") == "kz-acme--prod"
    assert namespace_name("a-b", "c") != namespace_name("a", "b-c")
    hashed = namespace_name("a--b", "c")
    assert hashed.startswith("kz-x-") and "--" not in hashed
    assert hashed != namespace_name("a", "b--c")
    assert len(namespace_name("a" * 40, "b" * 40)) <= 63


def test_the_namespace_carries_the_org_id_and_a_stored_name_wins() -> None:
    ns = render_namespace("acme", "prod", org_id="id1")
    assert ns["metadata"]["name"] == "kz-acme--prod"
    assert ns["metadata"]["labels"][ORG_ID_LABEL] == "id1"
    assert ns["metadata"]["labels"][WORKSPACE_LABEL] == "prod"
    legacy = render_namespace("acme", "prod", org_id="id1", namespace="kz-acme-prod")
    assert legacy["metadata"]["name"] == "kz-acme-prod"
    assert (
        render_role_bindings("acme", "prod", [], namespace="kz-acme-prod")[0]["metadata"][
            "namespace"
        ]
        == "kz-acme-prod"
    )
    quota = render_quota("acme", "prod", "free", namespace="kz-acme-prod")
    assert quota is not None and quota["metadata"]["namespace"] == "kz-acme-prod"


def test_ownership_needs_the_same_org_id_and_workspace() -> None:
    ns = render_namespace("acme", "prod", org_id="id1")
    assert owned_by(ns, "id1", "prod")
    assert not owned_by(ns, "id2", "prod")
    assert not owned_by(ns, "id1", "dev")
    assert not owned_by({"metadata": {"name": "kz-acme--prod"}}, "id1", "prod")


def test_the_facade_binds_its_workspace_role_to_itself() -> None:
    binding = render_facade_binding("kz-acme--prod", "kaizen-api-workspace", "kaizen:kaizen-api")
    assert binding["roleRef"]["name"] == "kaizen-api-workspace"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kaizen-api", "namespace": "kaizen"}
    ]
    assert binding["metadata"]["namespace"] == "kz-acme--prod"
