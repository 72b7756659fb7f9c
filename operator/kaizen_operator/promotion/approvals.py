"""Approvals whose actor is the authenticated user (pure).

The admission webhook calls :func:`review_promotion` with the AdmissionReview request
the apiserver sent: ``userInfo`` is who really made the request. Approvers annotate:

    kubectl annotate promotion NAME kaizen.studio/approve="looks good"
    kubectl annotate promotion NAME kaizen.studio/reject="error rate too high"

The webhook checks the user against the Promotion's approvers, refuses what is not
allowed with a clear message, and turns an allowed decision into an entry of the
``kaizen.studio/approvals`` ledger annotation, which only it may write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kaizen_api.v1alpha1.gateway import PromotionPolicy
from kaizen_api.v1alpha1.promotion import Approval
from kaizen_operator.conditions import timestamp

APPROVE = "kaizen.studio/approve"
REJECT = "kaizen.studio/reject"
LEDGER = "kaizen.studio/approvals"
CREATED_BY = "kaizen.studio/created-by"


@dataclass(frozen=True)
class Review:
    """The webhook's answer: allowed or not, why, and a JSON patch to apply."""

    allowed: bool
    message: str = ""
    patch: list[dict[str, Any]] = field(default_factory=list)


def _pointer(key: str) -> str:
    return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")


def ledger(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The recorded decisions of a Promotion."""
    raw = ((obj or {}).get("metadata", {}).get("annotations") or {}).get(LEDGER, "[]")
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError:
        return []
    return entries if isinstance(entries, list) else []


def review_promotion(request: dict[str, Any], now: datetime) -> Review:
    """Decide on one CREATE or UPDATE of a Promotion."""
    obj = request.get("object") or {}
    old = request.get("oldObject") or {}
    user = request.get("userInfo") or {}
    username = str(user.get("username", ""))
    groups = [str(g) for g in user.get("groups") or []]
    annotations = obj.get("metadata", {}).get("annotations") or {}
    old_annotations = old.get("metadata", {}).get("annotations") or {}
    has_annotations = "annotations" in obj.get("metadata", {})

    if request.get("operation") == "CREATE":
        patch: list[dict[str, Any]] = (
            [] if has_annotations else [{"op": "add", "path": "/metadata/annotations", "value": {}}]
        )
        patch.append({"op": "add", "path": _pointer(CREATED_BY), "value": username})
        patch.append({"op": "add", "path": _pointer(LEDGER), "value": "[]"})
        for key in (APPROVE, REJECT):
            if key in annotations:
                patch.append({"op": "remove", "path": _pointer(key)})
        return Review(True, patch=patch)

    for key, what in ((CREATED_BY, "the creator"), (LEDGER, "approvals")):
        if annotations.get(key) != old_annotations.get(key):
            return Review(
                False,
                f"{what} of a Promotion are recorded by Kaizen Studio and cannot be edited "
                f"(annotation {key}); approve with: kubectl annotate promotion "
                f"{obj['metadata']['name']} {APPROVE}=<reason>",
            )

    decisions = [
        (k, "Approved" if k == APPROVE else "Rejected")
        for k in (APPROVE, REJECT)
        if k in annotations and annotations.get(k) != old_annotations.get(k)
    ]
    if not decisions:
        return Review(True)
    if len(decisions) > 1:
        return Review(False, f"set either {APPROVE} or {REJECT}, not both")
    key, decision = decisions[0]
    approval = (obj.get("spec") or {}).get("approval") or {}
    name = obj["metadata"]["name"]
    if not approval.get("required"):
        return Review(
            False, f"Promotion {name} does not require approval (spec.approval.required is false)"
        )
    phase = (old.get("status") or {}).get("phase")
    if phase != "WaitingForApproval":
        return Review(
            False,
            f"Promotion {name} is {phase or 'Pending'}; "
            "decisions are taken only while it is WaitingForApproval",
        )
    approvers = approval.get("approvers") or {}
    allowed_users = approvers.get("users") or []
    allowed_groups = approvers.get("groups") or []
    if username not in allowed_users and not set(groups) & set(allowed_groups):
        return Review(
            False,
            f"user {username!r} is not an approver of Promotion {name} "
            f"(approvers: users {allowed_users}, groups {allowed_groups})",
        )
    creator = annotations.get(CREATED_BY)
    if decision == "Approved" and username == creator and not approval.get("allowSelfApproval"):
        return Review(
            False,
            f"user {username!r} created Promotion {name} and cannot approve it "
            "(spec.approval.allowSelfApproval is false)",
        )
    entries = ledger(old)
    if any(e.get("user") == username for e in entries):
        return Review(False, f"user {username!r} has already decided on Promotion {name}")
    entries.append(
        {
            "user": username,
            "decision": decision,
            "reason": str(annotations.get(key, ""))[:1024],
            "time": timestamp(now),
        }
    )
    return Review(
        True,
        patch=[
            {
                "op": "replace" if LEDGER in annotations else "add",
                "path": _pointer(LEDGER),
                # ensure_ascii=False: the entry spells the user as userInfo does, which
                # the chart's ValidatingAdmissionPolicy compares with the requester.
                "value": json.dumps(entries, ensure_ascii=False),
            },
            {"op": "remove", "path": _pointer(key)},
        ],
    )


def policy_gap(approval: Approval | None, policy: PromotionPolicy) -> str | None:
    """How a Promotion's spec.approval asks for less than its target Gateway's
    spec.promotionPolicy (None: it asks for at least as much). Pure."""
    who = f"users {policy.approvers.users or []}, groups {policy.approvers.groups or []}"
    if approval is None or not approval.required:
        return (
            f"requires {policy.required_approvals} approval(s) by {who}; "
            "spec.approval.required is false"
        )
    if approval.min_approvals < policy.required_approvals:
        return (
            f"requires {policy.required_approvals} approval(s); "
            f"spec.approval.minApprovals is {approval.min_approvals}"
        )
    if approval.allow_self_approval and not policy.allow_self_approval:
        return "forbids self-approval; spec.approval.allowSelfApproval is true"
    approvers = approval.approvers
    users = set((approvers.users if approvers else None) or [])
    groups = set((approvers.groups if approvers else None) or [])
    extra = sorted(users - set(policy.approvers.users or [])) + sorted(
        groups - set(policy.approvers.groups or [])
    )
    if extra:
        return f"allows only approvers among {who}; spec.approval.approvers adds {extra}"
    return None


def counted_approvers(obj: dict[str, Any], allow_self_approval: bool) -> list[str]:
    """The distinct users whose approvals count: the creator's own only when allowed
    (a ledger written while the webhook was down does not get to decide that)."""
    creator = ((obj.get("metadata") or {}).get("annotations") or {}).get(CREATED_BY)
    return sorted(
        {
            str(e.get("user"))
            for e in ledger(obj)
            if e.get("decision") == "Approved" and (allow_self_approval or e.get("user") != creator)
        }
    )
