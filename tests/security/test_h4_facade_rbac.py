"""H4: the facade's ServiceAccount is not cluster-admin-equivalent. The chart's own RBAC
and admission policy (rendered by helm, applied to the local apiserver) are used with
a real token of the chart's ServiceAccount: it cannot read Secrets in kube-system, not
even by impersonating system:masters, cannot bind cluster-admin or write outside the
kz- namespaces it made; and a facade running with exactly that token still does its
whole job (workspaces, members, agents, access listing, deletion)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kaizen_api.server.app import create_app
from kaizen_api.server.settings import Settings
from tests.integration.test_helm_chart import CHART, KUBE_VERSION, helm
from tests.support.facade import Facade, agent
from tests.support.kube import kubectl, token_kubeconfig

CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


@dataclass
class ChartFacadeIdentity:
    release_namespace: str
    api: str  # the chart's facade name (ServiceAccount, ClusterRole, policy)
    kubeconfig: Path  # the ServiceAccount's token, nothing else

    def client(self, user: str | None = None, *groups: str) -> client.ApiClient:
        """An API client as the ServiceAccount, impersonating ``user`` if given."""
        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        if user:
            api.set_default_header("Impersonate-User", user)
            for group in groups:  # the client keeps one value per header: one group
                api.set_default_header("Impersonate-Group", group)
        return api


def chart_objects(release: str, namespace: str) -> tuple[str, list[dict[str, Any]]]:
    """The facade's ServiceAccount, RBAC and admission policy as the chart renders them."""
    out = helm("template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    sa = next(
        d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"].endswith("-api")
    )
    api = sa["metadata"]["name"]
    wanted = [
        d
        for d in docs
        if d["kind"] in CLUSTER_SCOPED | {"ServiceAccount"}
        and d["metadata"]["name"] in (api, f"{api}-workspace", f"{api}-tenancy")
    ]
    return api, wanted


@pytest.fixture
def chart_identity(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path
) -> Iterator[ChartFacadeIdentity]:
    suffix = uuid.uuid4().hex[:6]
    release, namespace = f"h4{suffix}", f"h4-{suffix}"
    api, objects = chart_objects(release, namespace)
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        for obj in objects:
            kubectl(facade_cluster, "apply", "--server-side", "-f", "-", stdin=json.dumps(obj))
        token = kubectl(facade_cluster, "create", "token", api, "-n", namespace).stdout.strip()
        kubeconfig = token_kubeconfig(facade_cluster, token, tmp_path / "facade-sa.kubeconfig")
        identity = ChartFacadeIdentity(namespace, api, kubeconfig)
        if any(o["kind"] == "ValidatingAdmissionPolicy" for o in objects):
            wait_for_policy(identity, core)
        yield identity
    finally:
        for obj in objects:
            if obj["kind"] in CLUSTER_SCOPED:
                kubectl(
                    facade_cluster,
                    "delete",
                    obj["kind"].lower(),
                    obj["metadata"]["name"],
                    "--ignore-not-found",
                    check=False,
                )
        core.delete_namespace(namespace, propagation_policy="Background")


def wait_for_policy(
    identity: ChartFacadeIdentity, admin: client.CoreV1Api, timeout: float = 60
) -> None:
    """Until the admission policy is in force (it is compiled after its creation)."""
    core = client.CoreV1Api(identity.client())
    deadline = time.monotonic() + timeout
    while True:
        probe = f"kz-probe-{uuid.uuid4().hex[:6]}"
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=probe)))
        except ApiException as exc:
            if exc.status == 403 and "-tenancy" in exc.body:
                return
            raise
        # Admitted: the policy is not in force yet. Undo (as the admin: by now the
        # policy may refuse the facade this delete).
        admin.delete_namespace(probe)
        assert time.monotonic() < deadline, "the chart's admission policy never took effect"
        time.sleep(0.5)


def refused(call: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(ApiException) as caught:
        call(*args, **kw)
    assert caught.value.status == 403, caught.value.body
    return str(caught.value.body)


def role_binding(namespace: str, role: str, user: str) -> client.V1RoleBinding:
    return client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name=f"h4-{uuid.uuid4().hex[:6]}", namespace=namespace),
        role_ref=client.V1RoleRef(
            api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role
        ),
        subjects=[
            client.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="User", name=user)
        ],
    )


def test_the_facade_account_cannot_read_secrets_or_bind_cluster_admin(
    chart_identity: ChartFacadeIdentity, own_namespace: str
) -> None:
    as_sa = chart_identity.client()
    refused(client.CoreV1Api(as_sa).list_namespaced_secret, "kube-system")
    # Impersonating the most powerful identities gets it no further.
    for who in (
        chart_identity.client("admin", "system:masters"),
        chart_identity.client("system:serviceaccount:kube-system:default"),
    ):
        refused(client.CoreV1Api(who).list_namespaced_secret, "kube-system")
        refused(client.CoreV1Api(who).read_namespace, "kube-system")
        refused(
            client.CustomObjectsApi(who).list_namespaced_custom_object,
            "kaizen.studio",
            "v1alpha1",
            own_namespace,
            "agents",
        )
    rbac = client.RbacAuthorizationV1Api(as_sa)
    refused(
        rbac.create_namespaced_role_binding,
        "kube-system",
        role_binding("kube-system", "cluster-admin", "attacker"),
    )
    # Even roles it may bind, it binds only in the workspace namespaces it made.
    body = refused(
        rbac.create_namespaced_role_binding,
        own_namespace,
        role_binding(own_namespace, "kaizen-admin", "attacker"),
    )
    assert f"{chart_identity.api}-tenancy" in body and "workspace namespaces it made" in body
    core = client.CoreV1Api(as_sa)
    body = refused(
        core.create_namespace,
        client.V1Namespace(metadata=client.V1ObjectMeta(name=f"evil-{uuid.uuid4().hex[:6]}")),
    )
    assert f"{chart_identity.api}-tenancy" in body
    body = refused(core.delete_namespace, own_namespace)
    assert f"{chart_identity.api}-tenancy" in body


def test_a_facade_with_only_the_chart_rbac_does_its_job(
    chart_identity: ChartFacadeIdentity, database_url: str, api_client: client.ApiClient
) -> None:
    operator = chart_identity.api.removesuffix("-api") + "-operator"
    settings = Settings(
        database_url=database_url,
        kubeconfig=str(chart_identity.kubeconfig),
        workspace_role=f"{chart_identity.api}-workspace",
        service_account=f"{chart_identity.release_namespace}:{chart_identity.api}",
        operator_secrets_role=f"{operator}-secrets",
        operator_service_account=f"{chart_identity.release_namespace}:{operator}",
    )
    with TestClient(create_app(settings)) as test_client:
        facade = Facade(test_client)
        owner, dev = facade.user("owner"), facade.user("dev")
        org = facade.org(owner)
        ns = facade.workspace(owner, org, "ml")
        try:
            # The operator may read Secrets in the workspace (and only by this binding,
            # tests/security/test_l3_operator_secrets.py), which the facade binds to the
            # operator's ServiceAccount only.
            rbac = client.RbacAuthorizationV1Api(api_client)
            grant = rbac.read_namespaced_role_binding(f"{operator}-secrets", ns)
            assert grant.role_ref.name == f"{operator}-secrets"
            assert [(g.kind, g.name, g.namespace) for g in grant.subjects] == [
                ("ServiceAccount", operator, chart_identity.release_namespace)
            ]
            body = refused(
                client.RbacAuthorizationV1Api(
                    chart_identity.client()
                ).create_namespaced_role_binding,
                ns,
                role_binding(ns, f"{operator}-secrets", "attacker"),
            )
            assert f"{operator}-secrets is bound to the operator's ServiceAccount only" in body
            facade.member(owner, org, dev, "developer")
            facade.ws_member(owner, org, "ml", f"user:{dev.email}", "developer")
            ws = f"/orgs/{org}/workspaces/ml"
            r = facade.call("POST", f"{ws}/agents", dev, json=agent("a"))
            assert r.status_code == 201, r.text
            assert [
                a["metadata"]["name"]
                for a in facade.call("GET", f"{ws}/agents", dev).json()["items"]
            ] == ["a"]
            access = facade.call("GET", f"{ws}/access", owner)
            assert access.status_code == 200, access.text
            assert facade.call("DELETE", f"{ws}/agents/a", dev).status_code == 204
            assert facade.call("DELETE", ws, owner).status_code == 204
        finally:
            core = client.CoreV1Api(api_client)
            try:
                core.delete_namespace(ns, propagation_policy="Background")
            except ApiException as exc:
                if exc.status != 404:
                    raise
