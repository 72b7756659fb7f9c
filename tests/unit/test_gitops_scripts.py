"""Argo CD health checks and actions of the four kinds, run in Lua 5.1 (as Argo CD's
gopher-lua), on objects shaped like the operator's status; and the argocd-cm patch."""

from __future__ import annotations

import yaml

from kaizen_api.cli.gitops import argocd_cm_patch
from tests.support.argocd import actions, health, run_action


def obj(
    kind: str, generation: int = 2, status: dict | None = None, spec: dict | None = None
) -> dict:
    body = {"kind": kind, "metadata": {"name": "x", "generation": generation}, "spec": spec or {}}
    if status is not None:
        body["status"] = status
    return body


def cond(type_: str, status: str, reason: str = "R", message: str = "m") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def test_condition_kinds_map_ready_reconciling_and_stalled() -> None:
    for kind in ("Agent", "Gateway", "ScalingPolicy"):
        assert health(obj(kind))["status"] == "Progressing"  # no status yet
        old = obj(kind, status={"observedGeneration": 1, "conditions": [cond("Ready", "True")]})
        assert health(old) == {
            "status": "Progressing",
            "message": "Waiting for the operator to observe generation 2",
        }
        ready = obj(
            kind,
            status={"observedGeneration": 2, "conditions": [cond("Ready", "True", message="ok")]},
        )
        assert health(ready) == {"status": "Healthy", "message": "ok"}
        stalled = obj(
            kind,
            status={
                "observedGeneration": 2,
                "conditions": [
                    cond("Ready", "False", "SecretNotFound", "no secret"),
                    cond("Stalled", "True", "SecretNotFound", "no secret"),
                ],
            },
        )
        assert health(stalled) == {"status": "Degraded", "message": "SecretNotFound: no secret"}
        working = obj(
            kind,
            status={
                "observedGeneration": 2,
                "conditions": [cond("Ready", "False", "Rolling", "1/2")],
            },
        )
        assert health(working) == {"status": "Progressing", "message": "Rolling: 1/2"}


def test_promotion_phases_and_approval_actions() -> None:
    expected = {
        None: "Progressing",
        "Pending": "Progressing",
        "Progressing": "Progressing",
        "Verifying": "Progressing",
        "WaitingForApproval": "Suspended",
        "Succeeded": "Healthy",
        "Failed": "Degraded",
        "Rejected": "Degraded",
        "Aborted": "Degraded",
        "Errored": "Degraded",
    }
    for phase, status in expected.items():
        body = obj("Promotion", status={"phase": phase, "message": "m"} if phase else None)
        assert health(body)["status"] == status, phase
    waiting = obj("Promotion", status={"phase": "WaitingForApproval"})
    assert actions(waiting) == {"approve": True, "reject": True}
    assert actions(obj("Promotion", status={"phase": "Succeeded"})) == {
        "approve": False,
        "reject": False,
    }
    approved = run_action(waiting, "approve")
    assert approved["metadata"]["annotations"] == {"kaizen.studio/approve": "approved in Argo CD"}
    rejected = run_action(waiting, "reject")
    assert rejected["metadata"]["annotations"] == {"kaizen.studio/reject": "rejected in Argo CD"}


def test_scaling_override_actions() -> None:
    policy = obj(
        "ScalingPolicy", spec={"minReplicas": 2, "maxReplicas": 9}, status={"currentReplicas": 5}
    )
    assert actions(policy) == {
        "pin-current": True,
        "freeze-scale-down": True,
        "clear-override": False,
    }
    pinned = run_action(policy, "pin-current")
    assert pinned["spec"]["override"] == {
        "mode": "Pin",
        "replicas": 5,
        "reason": "pinned in Argo CD",
    }
    assert actions(pinned)["clear-override"] is True
    frozen = run_action(policy, "freeze-scale-down")
    assert frozen["spec"]["override"]["mode"] == "FreezeScaleDown"
    cleared = run_action(pinned, "clear-override")
    assert "override" not in cleared["spec"]
    fresh = obj("ScalingPolicy", spec={"minReplicas": 3})
    assert run_action(fresh, "pin-current")["spec"]["override"]["replicas"] == 3


def test_argocd_cm_patch_carries_every_script() -> None:
    patch = yaml.safe_load(argocd_cm_patch("gitops"))
    assert patch["metadata"] == {"name": "argocd-cm", "namespace": "gitops"}
    keys = set(patch["data"])
    for kind in ("Agent", "Gateway", "ScalingPolicy", "Promotion"):
        assert f"resource.customizations.health.kaizen.studio_{kind}" in keys
    promotion = yaml.safe_load(
        patch["data"]["resource.customizations.actions.kaizen.studio_Promotion"]
    )
    assert [d["name"] for d in promotion["definitions"]] == ["approve", "reject"]
    assert "WaitingForApproval" in promotion["discovery.lua"]
