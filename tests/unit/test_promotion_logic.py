"""Pure Promotion logic: the approval webhook's decisions and the state machine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from kaizen_api.v1alpha1.promotion import TargetKind
from kaizen_operator.promotion.approvals import CREATED_BY, LEDGER, review_promotion
from kaizen_operator.promotion.gates import GateOutcome
from kaizen_operator.promotion.reconcile import promoted_after_switch
from kaizen_operator.promotion.render import (
    PromotionInputs,
    notification_due,
    notification_pending,
    notification_status,
    promoted_revision,
    render_promotion,
)
from tests.support.objects import gateway, obj

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
APPROVAL = {"required": True, "approvers": {"users": ["alice"], "groups": ["sre"]}}


def promo(phase=None, annotations=None, **spec):
    body = obj(
        "Promotion",
        "p",
        {"agentRef": {"name": "hello"}, "revision": 1, "from": "dev", "to": "prod", **spec},
    )
    body["metadata"]["annotations"] = annotations or {}
    if phase:
        body["status"] = {"phase": phase}
    return body


def update(old, new_annotations, user="alice", groups=()):
    new = json.loads(json.dumps(old))
    new["metadata"]["annotations"] = {**old["metadata"]["annotations"], **new_annotations}
    return {
        "operation": "UPDATE",
        "object": new,
        "oldObject": old,
        "userInfo": {"username": user, "groups": list(groups)},
    }


def test_create_stamps_the_creator_and_an_empty_ledger() -> None:
    review = review_promotion(
        {
            "operation": "CREATE",
            "object": promo(annotations={LEDGER: "[forged]"}),
            "userInfo": {"username": "bob"},
        },
        NOW,
    )
    assert review.allowed
    values = {op["path"]: op.get("value") for op in review.patch}
    assert values["/metadata/annotations/kaizen.studio~1created-by"] == "bob"
    assert values["/metadata/annotations/kaizen.studio~1approvals"] == "[]"


def test_allowed_approver_by_group_is_appended_to_the_ledger() -> None:
    old = promo("WaitingForApproval", {CREATED_BY: "bob", LEDGER: "[]"}, approval=APPROVAL)
    review = review_promotion(
        update(old, {"kaizen.studio/approve": "ok"}, user="carol", groups=["sre"]), NOW
    )
    assert review.allowed
    entries = json.loads(
        next(op["value"] for op in review.patch if op["path"].endswith("approvals"))
    )
    assert entries == [
        {"user": "carol", "decision": "Approved", "reason": "ok", "time": "2026-05-01T12:00:00Z"}
    ]
    assert {"op": "remove", "path": "/metadata/annotations/kaizen.studio~1approve"} in review.patch


def test_refusals_say_why() -> None:
    waiting = promo("WaitingForApproval", {CREATED_BY: "alice", LEDGER: "[]"}, approval=APPROVAL)
    outsider = review_promotion(
        update(waiting, {"kaizen.studio/approve": "x"}, user="mallory"), NOW
    )
    assert not outsider.allowed and "not an approver" in outsider.message
    selfie = review_promotion(update(waiting, {"kaizen.studio/approve": "x"}, user="alice"), NOW)
    assert not selfie.allowed and "cannot approve it" in selfie.message
    creator_may_reject = review_promotion(
        update(waiting, {"kaizen.studio/reject": "no"}, user="alice"), NOW
    )
    assert creator_may_reject.allowed
    forged = review_promotion(update(waiting, {LEDGER: "[{}]"}), NOW)
    assert not forged.allowed and "recorded by Kaizen Studio" in forged.message
    pending = promo("Pending", {CREATED_BY: "bob", LEDGER: "[]"}, approval=APPROVAL)
    assert (
        "only while it is WaitingForApproval"
        in review_promotion(update(pending, {"kaizen.studio/approve": "x"}), NOW).message
    )
    no_approval = promo("Progressing", {CREATED_BY: "bob", LEDGER: "[]"})
    assert (
        "does not require approval"
        in review_promotion(update(no_approval, {"kaizen.studio/approve": "x"}), NOW).message
    )
    unrelated = review_promotion(update(waiting, {"team": "a"}, user="mallory"), NOW)
    assert unrelated.allowed and unrelated.patch == []


def render(
    body,
    *,
    agent=True,
    revision=True,
    target_env="prod",
    source_ready=True,
    now=NOW,
    served=None,
    latest=None,
    metrics=None,
):
    source = gateway(
        "dev",
        "dev",
        status={"conditions": [{"type": "Ready", "status": "True" if source_ready else "False"}]},
    )
    target = gateway("prod", target_env, status={"servedRevisions": served or []})
    return render_promotion(
        PromotionInputs(
            body,
            {"metadata": {"name": "hello"}, "status": {"latestRevision": latest}}
            if agent
            else None,
            revision,
            source,
            target,
            now,
            metrics=metrics,
        )
    )


def test_state_machine_paths() -> None:
    plan = render(promo())
    assert plan.status["phase"] == "Succeeded" and plan.switch == ("hello", 1)
    waiting = render(promo(approval={**APPROVAL, "timeout": "10m"}))
    assert waiting.status["phase"] == "WaitingForApproval" and waiting.switch is None
    assert waiting.status["approvalDeadline"] == "2026-05-01T12:10:00Z"
    expired = render(
        {**promo(approval={**APPROVAL, "timeout": "10m"}), "status": waiting.status},
        now=NOW + timedelta(minutes=11),
    )
    assert (expired.status["phase"], expired.status["conditions"][0]["reason"]) == (
        "Failed",
        "ApprovalExpired",
    )
    assert render(promo(), revision=False, latest=3).status["phase"] == "Failed"  # pruned
    waits = render(promo(), revision=False)  # applied with the Agent: not created yet
    assert (
        waits.status["phase"] == "Pending" and "waiting for revision 1" in waits.status["message"]
    )
    assert render(promo(), agent=False).status["phase"] == "Pending"
    assert (
        render(promo(), target_env="dev")
        .status["message"]
        .startswith("Gateway 'prod' serves each agent's latest")
    )
    ended = render({**promo(), "status": {"phase": "Succeeded"}})
    assert ended.switch is None and ended.events == []


def test_soak_waits_then_passes_and_records_previous_revision() -> None:
    body = promo(gates={"soak": {"duration": "5m"}})
    first = render(body, served=[{"agent": "hello", "revision": 3}])
    assert first.status["phase"] == "Progressing" and first.switch is None
    later = render(
        {**body, "status": first.status},
        now=NOW + timedelta(minutes=6),
        served=[{"agent": "hello", "revision": 3}],
    )
    assert later.status["phase"] == "Succeeded" and later.status["previousRevision"] == 3
    assert later.status["gates"][0]["status"] == "Passed"
    unhealthy = render({**body, "status": first.status}, source_ready=False)
    assert unhealthy.status["phase"] == "Failed" and "not Ready" in unhealthy.status["message"]


def test_metric_gates_wait_for_a_verdict_after_the_soak_and_keep_a_pass() -> None:
    body = promo(gates={"soak": {"duration": "5m"}, "metrics": [{"metric": "errorRate", "max": 1}]})
    soaking = render(body)
    assert soaking.status["gates"][0]["name"] == "soak"
    due = NOW + timedelta(minutes=5)
    waiting = render({**body, "status": soaking.status}, now=due)
    assert waiting.status["phase"] == "Progressing" and waiting.switch is None
    assert waiting.status["conditions"][0]["reason"] == "WaitingForMetrics"
    passed = render(
        {**body, "status": waiting.status},
        now=due,
        metrics=GateOutcome(True, "errorRate 0% on dev"),
    )
    assert passed.status["phase"] == "Succeeded" and passed.switch == ("hello", 1)
    assert [g["name"] for g in passed.status["gates"]] == ["soak", "metrics"]
    assert ("MetricGatePassed", "errorRate 0% on dev", False) in passed.events


def test_metric_gate_failure_and_unreadable_metrics_end_the_promotion() -> None:
    body = promo(gates={"metrics": [{"metric": "errorRate", "max": 1}]})
    failed = render(body, metrics=GateOutcome(False, "errorRate 5% on dev is above the maximum 1"))
    assert (failed.status["phase"], failed.switch) == ("Failed", None)
    assert failed.status["conditions"][0]["reason"] == "MetricGateFailed"
    assert failed.status["gates"][-1]["status"] == "Failed"
    unreadable = GateOutcome(False, "Gateway 'dev' has no pod answering /metrics", final=False)
    first = render(body, metrics=unreadable)
    assert first.status["phase"] == "Progressing"
    late = render(
        {**body, "status": first.status}, now=NOW + timedelta(minutes=3), metrics=unreadable
    )
    assert late.status["phase"] == "Failed"
    assert late.status["conditions"][0]["reason"] == "MetricsUnavailable"


def test_failure_notifications_retry_with_backoff_until_delivered() -> None:
    hook = {"webhook": {"url": "https://hooks.example/x"}}
    body = promo(notifications=hook)
    body["status"] = {"phase": "Failed"}
    assert notification_due(body, NOW)
    first = notification_status(body, GateOutcome(False, "webhook answered 500: no"), NOW)
    assert first == {
        "attempts": 1,
        "lastAttempt": "2026-05-01T12:00:00Z",
        "deliveredAt": None,
        "message": "webhook answered 500: no",
    }
    body["status"]["notification"] = first
    assert notification_pending(body)
    assert not notification_due(body, NOW + timedelta(seconds=1))  # backoff 2 s
    assert notification_due(body, NOW + timedelta(seconds=2))
    body["status"]["notification"] = notification_status(body, GateOutcome(True, "ok"), NOW)
    assert not notification_pending(body) and not notification_due(body, NOW + timedelta(hours=1))
    body["status"]["notification"] = {"attempts": 8, "lastAttempt": "2026-05-01T12:00:00Z"}
    assert not notification_pending(body)  # gave up after 8 attempts
    succeeded = promo(notifications=hook)
    succeeded["status"] = {"phase": "Succeeded"}
    assert not notification_pending(succeeded)
    failed_without_hook = promo()
    failed_without_hook["status"] = {"phase": "Failed"}
    assert not notification_pending(failed_without_hook)


def test_a_pipeline_target_switches_the_pipeline_and_says_so() -> None:
    body = obj(
        "Promotion",
        "p",
        {
            "targetRef": {"kind": "Pipeline", "name": "flow"},
            "revision": 2,
            "from": "dev",
            "to": "prod",
        },
    )
    plan = render(body)
    assert plan.status["phase"] == "Succeeded" and plan.switch == ("flow", 2)
    assert plan.status["message"] == "prod now serves flow revision 2"
    missing = render(body, agent=False)
    assert missing.status["conditions"][0]["reason"] == "PipelineNotFound"
    assert "Pipeline 'flow' does not exist" in missing.status["message"]


def test_the_previous_pipeline_revision_comes_from_the_promoted_pipeline_revisions() -> None:
    target = gateway(
        "prod",
        "production",
        promotedRevisions=[{"agent": "flow", "revision": 7}],  # an Agent of the same name
        promotedPipelineRevisions=[{"pipeline": "flow", "revision": 4}],
    )
    assert promoted_revision(target, "flow", "Pipeline") == 4
    assert promoted_revision(target, "flow") == 7
    entries = promoted_after_switch(target, "flow", 5, "abc", "p2", TargetKind.PIPELINE)
    assert entries == [{"pipeline": "flow", "revision": 5, "promotion": "p2", "hash": "abc"}]
