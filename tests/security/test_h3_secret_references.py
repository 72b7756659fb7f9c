"""H3 of the security review, the reference itself: a developer who may not read a
Secret of their namespace could still name it in an Agent (model.credentialsSecretRef,
tools[].http.headersSecretRef), a Gateway (auth.apiKeysSecretRef) or a Promotion
(gates.webhook.secretRef, notifications.webhook.secretRef); the gateway pods and the
operator then used its value with their own rights.

Now the chart's ValidatingAdmissionPolicy kaizen-secret-references makes the apiserver
ask whether the user who writes a reference may `get` that Secret themselves, field by
field: adding or changing a reference needs it, leaving one as it was does not. Real
apiserver, the policy of the rendered chart, real users by impersonation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.e2e.test_promotions import promotion
from tests.integration.test_helm_chart import render
from tests.support.kube import eventually, worker_policies
from tests.support.objects import agent, gateway

API = ("kaizen.studio", "v1alpha1")
DEV, OPS = "kaizen:dev@example.com", "kaizen:ops@example.com"
LABEL = "test.kaizen.studio/secret-references"
POLICY = "Secret references (kaizen-secret-references)"


@pytest.fixture(scope="module")
def policy(crds: Path) -> Iterator[str]:
    """The chart's kaizen-secret-references policy, this worker's copy."""
    docs = [
        d
        for d in yaml.safe_load_all(render())
        if d
        and d["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
        and d["metadata"]["name"] == "kaizen-secret-references"
    ]
    assert len(docs) == 2
    with worker_policies(crds, docs, LABEL) as worker:
        yield worker


def _as(kubeconfig: Path, user: str) -> client.CustomObjectsApi:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    api.set_default_header("Impersonate-User", user)
    return client.CustomObjectsApi(api)


@pytest.fixture
def people(
    policy: str, crds: Path, api_client: client.ApiClient, namespace: str
) -> dict[str, client.CustomObjectsApi]:
    """A developer with every right on Agents, Gateways and Promotions of the namespace
    and none on Secrets (what kaizen-developer gives), and an operations engineer with the
    same plus `get` on the Secret llm-key only. The namespace holds two Secrets."""
    # Bound to this worker's policy, and out of its operator's Promotion webhook: the
    # policy is the apiserver's own, it holds without it.
    labels = {LABEL: policy, "kaizen.studio/test-worker": None}
    core = client.CoreV1Api(api_client)
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    for name in ("llm-key", "production-keys"):
        core.create_namespaced_secret(
            namespace, {"metadata": {"name": name}, "stringData": {"apiKey": f"sk-{name}"}}
        )
    rbac = client.RbacAuthorizationV1Api(api_client)
    roles = {
        "developers": [
            {
                "apiGroups": ["kaizen.studio"],
                "resources": ["agents", "gateways", "promotions"],
                "verbs": ["get", "list", "create", "update", "patch", "delete"],
            }
        ],
        "llm-key-readers": [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["llm-key"],
                "verbs": ["get"],
            }
        ],
    }
    for role, rules in roles.items():
        rbac.create_namespaced_role(namespace, {"metadata": {"name": role}, "rules": rules})
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [
                    {"kind": "User", "name": u, "apiGroup": "rbac.authorization.k8s.io"}
                    for u in ((DEV, OPS) if role == "developers" else (OPS,))
                ],
            },
        )
    people = {"dev": _as(crds, DEV), "ops": _as(crds, OPS)}
    _wait_until_enforced(people, namespace)
    return people


def _admitted(api: client.CustomObjectsApi, ns: str, secret: str) -> bool:
    """Whether a dry-run Agent naming ``secret`` is admitted for this caller."""
    model = {"provider": "openai", "name": "m", "credentialsSecretRef": {"name": secret}}
    try:
        api.create_namespaced_custom_object(
            *API, ns, "agents", _agent("probe", model=model), dry_run="All"
        )
    except ApiException as exc:
        if exc.status == 403:
            return False
        raise
    return True


def _wait_until_enforced(people: dict[str, client.CustomObjectsApi], ns: str) -> None:
    """The apiserver applies a new policy binding, a namespace's new label and new
    RoleBindings from its informers a moment after they are written (seconds on a
    loaded machine): wait until both the refusal and the grant are in force."""
    eventually(
        lambda: (
            not _admitted(people["dev"], ns, "production-keys")
            and _admitted(people["ops"], ns, "llm-key")
        ),
        timeout=60,
        what="the secret-references policy and the roles in force",
    )


def _named(body: dict[str, Any]) -> dict[str, Any]:
    body["metadata"] = {"name": body["metadata"]["name"]}
    return body


def _agent(name: str, **spec: Any) -> dict[str, Any]:
    return _named(agent(name, **spec))


def _create(api: client.CustomObjectsApi, ns: str, plural: str, body: dict[str, Any]) -> Any:
    return api.create_namespaced_custom_object(*API, ns, plural, body)


def _refused(call: Any) -> str:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 403, refused.value.body
    return str(refused.value.body)


MODEL = {
    "provider": "openai",
    "name": "gpt-4o-mini",
    "credentialsSecretRef": {"name": "production-keys"},
}
TOOL = {
    "name": "lookup",
    "type": "http",
    "description": "Looks things up.",
    "http": {
        "url": "https://tools.example.com/lookup",
        "headersSecretRef": {"name": "production-keys"},
    },
}


def test_a_developer_cannot_make_an_agent_use_a_secret_they_cannot_read(
    people: dict[str, client.CustomObjectsApi], namespace: str
) -> None:
    dev = people["dev"]
    message = _refused(lambda: _create(dev, namespace, "agents", _agent("thief", model=MODEL)))
    assert POLICY in message
    assert f"{DEV} may not make Agent thief use Secret production-keys" in message
    assert "(spec.model.credentialsSecretRef)" in message
    assert "grant get on secrets/production-keys" in message

    message = _refused(lambda: _create(dev, namespace, "agents", _agent("tools", tools=[TOOL])))
    assert "Secret production-keys (spec.tools[lookup].http.headersSecretRef)" in message

    # Who may read the Secret may reference it.
    ops_model = dict(MODEL, credentialsSecretRef={"name": "llm-key"})
    _create(people["ops"], namespace, "agents", _agent("assistant", model=ops_model))


def test_changing_a_reference_is_checked_field_by_field(
    people: dict[str, client.CustomObjectsApi], namespace: str
) -> None:
    dev, ops = people["dev"], people["ops"]
    tool = dict(TOOL, http=dict(TOOL["http"], headersSecretRef={"name": "llm-key"}))
    model = dict(MODEL, credentialsSecretRef={"name": "llm-key"})
    _create(ops, namespace, "agents", _agent("assistant", model=model, tools=[tool]))

    def update(change: Any) -> Any:
        # Read-modify-write, again on a 409: an operator of another test that watches
        # every namespace may annotate the Agent in between.
        for _ in range(10):
            body = dev.get_namespaced_custom_object(*API, namespace, "agents", "assistant")
            change(body["spec"])
            try:
                return dev.replace_namespaced_custom_object(
                    *API, namespace, "agents", "assistant", body
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise AssertionError("the Agent kept changing under the test")

    # A colleague may change the rest of an agent that names a Secret they cannot read.
    update(lambda spec: spec.update(systemPrompt="Be brief."))
    # ... but not point a reference at another Secret,
    message = _refused(
        lambda: update(
            lambda spec: spec["model"]["credentialsSecretRef"].update(name="production-keys")
        )
    )
    assert "use Secret production-keys (spec.model.credentialsSecretRef)" in message
    # nor carry the readable one to a new tool (another destination).
    second = dict(tool, name="second")
    message = _refused(lambda: update(lambda spec: spec["tools"].append(second)))
    assert "use Secret llm-key (spec.tools[second].http.headersSecretRef)" in message
    after = ops.get_namespaced_custom_object(*API, namespace, "agents", "assistant")
    assert after["spec"]["model"]["credentialsSecretRef"]["name"] == "llm-key"
    assert [t["name"] for t in after["spec"]["tools"]] == ["lookup"]


def test_a_developer_cannot_make_a_gateway_or_promotion_use_a_secret_they_cannot_read(
    people: dict[str, client.CustomObjectsApi], namespace: str
) -> None:
    dev = people["dev"]
    keyed = _named(
        gateway(
            "production",
            "production",
            auth={"mode": "APIKey", "apiKeysSecretRef": {"name": "production-keys"}},
        )
    )
    message = _refused(lambda: _create(dev, namespace, "gateways", keyed))
    assert (
        "may not make Gateway production use Secret production-keys (spec.auth.apiKeysSecretRef)"
        in message
    )

    hook = {"url": "https://attacker.example.net/hook", "secretRef": {"name": "production-keys"}}
    gate = promotion("gate", gates={"webhook": hook})
    message = _refused(lambda: _create(dev, namespace, "promotions", gate))
    assert "use Secret production-keys (spec.gates.webhook.secretRef)" in message
    told = promotion("told", notifications={"webhook": hook})
    message = _refused(lambda: _create(dev, namespace, "promotions", told))
    assert "use Secret production-keys (spec.notifications.webhook.secretRef)" in message

    # The same objects without a Secret, or with one the user may read, are admitted.
    _create(
        dev, namespace, "promotions", promotion("plain", gates={"webhook": {"url": hook["url"]}})
    )
    readable = dict(hook, secretRef={"name": "llm-key"})
    _create(people["ops"], namespace, "promotions", promotion("ops", gates={"webhook": readable}))


def test_through_the_facade_the_refusal_is_a_problem_naming_the_rule(
    policy: str, facade: Any, api_client: client.ApiClient
) -> None:
    """The facade acts as the caller (impersonation), so the apiserver asks about the
    developer's own rights, and the caller gets the policy's words as problem+json."""
    owner, dev = facade.user("owner"), facade.user("dev")
    org = facade.org(owner)
    ns = facade.workspace(owner, org, "ml")
    facade.member(owner, org, dev, "developer")
    facade.ws_member(owner, org, "ml", f"user:{dev.email}", "developer")
    core = client.CoreV1Api(api_client)
    core.patch_namespace(ns, {"metadata": {"labels": {LABEL: policy}}})
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "production-keys"}, "stringData": {"apiKey": "sk-prod"}}
    )
    body = {"metadata": {"name": "thief"}, "spec": {"model": MODEL, "systemPrompt": "Hi."}}
    r = facade.call("POST", f"/orgs/{org}/workspaces/ml/agents", dev, json=body)
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    detail = r.json()["detail"]
    assert POLICY in detail
    assert "use Secret production-keys (spec.model.credentialsSecretRef)" in detail
