"""M6 of the security review: Promotion approvals were not an enforceable control. The
approval policy was the Promotion creator's choice, the ledger annotation was trusted
although only a mutating webhook (failurePolicy Ignore allowed, --no-webhook possible)
guarded it, and a developer could edit the production Gateway around Promotions.

Now the target Gateway's spec.promotionPolicy (administrators only) says what every
Promotion to it must ask for, the operator fails Promotions asking less, and the chart's
ValidatingAdmissionPolicies make the apiserver itself refuse forged ledgers and policy
edits. Here the webhook does not run at all (the worst case: down, or Ignore), against
the real apiserver with the policies of the rendered chart installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kaizen_operator.promotion.render import PromotionInputs, render_promotion
from tests.e2e.test_promotions import promotion
from tests.integration.test_helm_chart import render
from tests.support.kube import eventually, worker_policies
from tests.support.objects import gateway

API = ("kaizen.studio", "v1alpha1")
DEV, CTO, SRE = "kaizen:dev@example.com", "kaizen:cto@example.com", "kaizen:sre@example.com"
POLICY = {"requiredApprovals": 1, "approvers": {"groups": ["approvers"]}}
LEDGER, CREATED_BY = "kaizen.studio/approvals", "kaizen.studio/created-by"
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
POLICIES_LABEL = "test.kaizen.studio/promotion-policies"


@pytest.fixture(scope="module")
def policies(crds: Path) -> Iterator[Path]:
    """The chart's ValidatingAdmissionPolicies, installed for this module."""
    docs = [
        d
        for d in yaml.safe_load_all(render())
        if d
        and d["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
        # only the promotion policies: the chart's others would bind the shared apiserver
        and "promotion" in d["metadata"]["name"]
    ]
    assert len(docs) == 4
    # Each worker gets its own copies, bound only to the namespaces it labels (``people``).
    with worker_policies(crds, docs, POLICIES_LABEL):
        yield crds


def as_user(kubeconfig: Path, user: str, group: str | None = None) -> client.CustomObjectsApi:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    api.set_default_header("Impersonate-User", user)
    if group:
        api.set_default_header("Impersonate-Group", group)
    return client.CustomObjectsApi(api)


@pytest.fixture
def people(
    policies: Path, api_client: client.ApiClient, namespace: str
) -> dict[str, client.CustomObjectsApi]:
    """A developer (who is also in the approvers group, the hardest case), the CTO and
    an SRE approver, all with full rights on Promotions and Gateways of the namespace
    (as the kaizen-developer role gives) but none on the policy verbs."""
    # Bound to this worker's policies, and out of its operator's admission webhook
    # (tests/conftest.py routes it by this label): the policies hold without it.
    labels = {POLICIES_LABEL: WORKER, "kaizen.studio/test-worker": None}
    client.CoreV1Api(api_client).patch_namespace(namespace, {"metadata": {"labels": labels}})
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "developers"},
            "rules": [
                {
                    "apiGroups": ["kaizen.studio"],
                    "resources": ["promotions", "gateways"],
                    "verbs": ["get", "list", "create", "update", "patch", "delete"],
                }
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "developers"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "developers",
            },
            "subjects": [
                {"kind": "User", "name": u, "apiGroup": "rbac.authorization.k8s.io"}
                for u in (DEV, CTO, SRE)
            ],
        },
    )
    return {
        "dev": as_user(policies, DEV, "approvers"),
        "sre": as_user(policies, SRE, "approvers"),
        "admin": client.CustomObjectsApi(api_client),
    }


def _promotion(name: str, creator: str, **approval: Any) -> dict[str, Any]:
    body = promotion(
        name,
        to="production",
        approval={"required": True, "approvers": {"groups": ["approvers"]}, **approval},
    )
    body["metadata"]["annotations"] = {CREATED_BY: creator, LEDGER: "[]"}
    return body


def _gateway(name: str, **spec: Any) -> dict[str, Any]:
    """A production Gateway to create (the unit-test object without its fixed namespace)."""
    body = gateway(name, "production", **spec)
    body["metadata"] = {"name": name}
    return body


def _entry(user: str, decision: str = "Approved") -> dict[str, str]:
    return {"user": user, "decision": decision, "reason": "ok", "time": "2026-12-05T00:00:00Z"}


def _set_ledger(api: client.CustomObjectsApi, ns: str, name: str, entries: list[Any]) -> Any:
    patch = {"metadata": {"annotations": {LEDGER: json.dumps(entries, ensure_ascii=False)}}}
    return api.patch_namespaced_custom_object(*API, ns, "promotions", name, patch)


def _refused(call: Any, *words: str) -> str:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status in (403, 422), refused.value.body
    message = json.loads(refused.value.body)["message"]
    for word in words:
        assert word in message, message
    return str(message)


def _enforced(people: dict[str, client.CustomObjectsApi], ns: str) -> None:
    """Wait until the apiserver enforces the policies (they compile asynchronously)."""

    def probe() -> bool | None:
        try:
            people["dev"].create_namespaced_custom_object(
                *API, ns, "promotions", _promotion("probe", CTO), dry_run="All"
            )
        except ApiException as exc:
            return "kaizen-promotion-approvals" in exc.body or None
        return None

    eventually(probe, timeout=30, what="the ValidatingAdmissionPolicies to be enforced")


def test_a_developer_cannot_approve_their_own_promotion_to_production(
    people: dict[str, client.CustomObjectsApi], namespace: str
) -> None:
    dev = people["dev"]
    _enforced(people, namespace)
    # She cannot pretend someone else created it, nor start with a ledger.
    _refused(
        lambda: dev.create_namespaced_custom_object(
            *API, namespace, "promotions", _promotion("forged", CTO)
        ),
        "kaizen-promotion-approvals",
        "kaizen.studio/created-by",
    )
    dev.create_namespaced_custom_object(*API, namespace, "promotions", _promotion("release", DEV))
    # Her own approval, although she is in the approvers group: refused.
    _refused(
        lambda: _set_ledger(dev, namespace, "release", [_entry(DEV)]),
        f"{DEV} created Promotion release and cannot approve it",
    )
    # An approval in the CTO's name: refused.
    _refused(
        lambda: _set_ledger(dev, namespace, "release", [_entry(CTO)]),
        f"{DEV} may only add their own decision",
    )
    # Making someone else the creator, then approving: refused.
    _refused(
        lambda: dev.patch_namespaced_custom_object(
            *API,
            namespace,
            "promotions",
            "release",
            {"metadata": {"annotations": {CREATED_BY: CTO}}},
        ),
        "cannot be changed",
    )
    # Another approver's own approval is recorded.
    _set_ledger(people["sre"], namespace, "release", [_entry(SRE)])
    # And she cannot rewrite it afterwards.
    _refused(
        lambda: _set_ledger(dev, namespace, "release", [_entry(SRE, "Rejected")]),
        "may only add their own decision",
    )


def test_only_administrators_set_a_gateways_promotion_policy(
    people: dict[str, client.CustomObjectsApi], namespace: str
) -> None:
    dev, admin = people["dev"], people["admin"]
    _enforced(people, namespace)
    _refused(
        lambda: dev.create_namespaced_custom_object(
            *API, namespace, "gateways", _gateway("own", promotionPolicy=POLICY)
        ),
        "kaizen-gateway-promotion-policy",
        "set-promotion-policy",
    )
    admin.create_namespaced_custom_object(
        *API, namespace, "gateways", _gateway("production", promotionPolicy=POLICY)
    )
    for change in (
        {"spec": {"promotionPolicy": None}},
        {"spec": {"promotionPolicy": {"allowSelfApproval": True}}},
        {"spec": {"revisionPolicy": "Latest"}},
        {"spec": {"environment": "dev"}},
        {"spec": {"promotedRevisions": [{"agent": "hello", "revision": 9, "hash": "x" * 16}]}},
        # A pipeline's promoted revision is guarded the same way.
        {"spec": {"promotedPipelineRevisions": [{"pipeline": "flow", "revision": 9}]}},
    ):
        _refused(
            lambda change=change: dev.patch_namespaced_custom_object(
                *API, namespace, "gateways", "production", change
            ),
            "kaizen-gateway-promotion-policy",
        )
    # Everything else stays the developer's.
    dev.patch_namespaced_custom_object(
        *API, namespace, "gateways", "production", {"spec": {"replicas": 2}}
    )


def _phase(body: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC)
    body["metadata"].update(namespace="ns", generation=1, uid="u")
    inputs = PromotionInputs(
        body, {"status": {"latestRevision": 1}}, True, gateway("dev"), target, now
    )
    return render_promotion(inputs).status


@pytest.mark.parametrize(
    ("approval", "words"),
    [
        (None, "requires 1 approval(s) by users [], groups ['approvers']"),
        (
            {"required": True, "approvers": {"groups": ["approvers"]}, "allowSelfApproval": True},
            "forbids self-approval",
        ),
        ({"required": True, "approvers": {"users": [DEV]}}, f"adds ['{DEV}']"),
        ({"required": True, "approvers": {"groups": ["approvers"]}}, None),
    ],
)
def test_a_promotion_asking_less_than_the_policy_fails(
    approval: dict[str, Any] | None, words: str | None
) -> None:
    body = promotion("p", to="production", **({"approval": approval} if approval else {}))
    target = gateway("production", "production", promotionPolicy=POLICY)
    status = _phase(body, target)
    if words is None:
        assert status["phase"] == "WaitingForApproval"
        return
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "PromotionPolicyNotMet"
    assert ready["message"].startswith("Gateway 'production' spec.promotionPolicy ")
    assert words in ready["message"]


def test_the_creators_own_approval_never_counts() -> None:
    """A ledger written while the webhook was down (or before the policies were
    installed) cannot carry the creator's own approval past the operator."""
    body = promotion(
        "p", to="production", approval={"required": True, "approvers": {"groups": ["approvers"]}}
    )
    body["metadata"]["annotations"] = {CREATED_BY: DEV, LEDGER: json.dumps([_entry(DEV)])}
    body["status"] = {"phase": "WaitingForApproval"}
    status = _phase(body, gateway("production", "production", promotionPolicy=POLICY))
    assert status["phase"] == "WaitingForApproval"
    assert status["message"] == "0/1 approvals"
