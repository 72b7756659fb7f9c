"""Promotion state machine (pure: no client, no clock — ``now`` is an input).

Pending -> WaitingForApproval -> Progressing -> Verifying -> Succeeded, or one of Failed,
Rejected, Aborted, Errored. A Promotion that ended is never re-run. Soak is decided
here from the clock; webhook and smoke outcomes come in as inputs (their I/O is in
``gates``), as do metric gate verdicts read from the source gateway's /metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kaizen_api.v1alpha1.common import parse_duration
from kaizen_api.v1alpha1.gateway import (
    GatewaySpec,
    RevisionPolicy,
    promoted_pipeline_revisions,
    promoted_revisions,
)
from kaizen_api.v1alpha1.promotion import TERMINAL_PHASES, PromotionSpec, TargetKind
from kaizen_operator.conditions import get_condition, ready_conditions, timestamp
from kaizen_operator.promotion.approvals import counted_approvers, ledger, policy_gap
from kaizen_operator.promotion.gates import GateOutcome

# How long metric gates may go unanswered (no pod serving /metrics) before failing.
METRICS_GRACE_SECONDS = 120


@dataclass(frozen=True)
class PromotionInputs:
    """Everything the Promotion render needs, read by resolve_promotion."""

    promotion: dict[str, Any]
    agent: dict[str, Any] | None  # the Agent or Pipeline promoted (spec.target)
    revision_exists: bool
    source: dict[str, Any] | None
    target: dict[str, Any] | None
    now: datetime
    webhook: GateOutcome | None = None  # asked when the webhook gate is due
    metrics: GateOutcome | None = None  # metric gate verdict, once the soak is over
    smoke: GateOutcome | None = None  # asked while Verifying
    revision_hash: str | None = None  # content hash of the revision to promote


@dataclass
class PromotionPlan:
    """The new status, the switch to make on the target, and Events to record."""

    status: dict[str, Any]
    switch: tuple[str, int | None] | None = None  # (agent, revision); None revision removes
    events: list[tuple[str, str, bool]] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status.get("phase") in TERMINAL_PHASES


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _ready(gateway: dict[str, Any]) -> bool:
    cond = get_condition((gateway.get("status") or {}).get("conditions"), "Ready")
    return bool(cond and cond.get("status") == "True")


def promoted_revision(
    gateway: dict[str, Any] | None, agent: str, kind: str = TargetKind.AGENT
) -> int | None:
    """The revision of ``agent`` (or of the Pipeline, for ``kind`` Pipeline) that
    Promotions made ``gateway`` serve (the one a failed verification goes back to)."""
    promoted = promoted_pipeline_revisions if kind == TargetKind.PIPELINE else promoted_revisions
    entry = promoted(gateway or {}).get(agent)
    return int(entry["revision"]) if entry else None


def _policy_refusal(spec: PromotionSpec, target: dict[str, Any] | None) -> str | None:
    """Why ``spec`` falls short of its target's spec.promotionPolicy (None: it does not)."""
    if target is None:
        return None
    policy = GatewaySpec.model_validate(target["spec"]).promotion_policy
    gap = policy_gap(spec.approval, policy) if policy else None
    return f"Gateway {spec.to!r} spec.promotionPolicy {gap}" if gap else None


def render_promotion(inputs: PromotionInputs) -> PromotionPlan:
    """The next state of a Promotion."""
    promo = inputs.promotion
    meta = promo["metadata"]
    generation = meta.get("generation")
    status: dict[str, Any] = dict(promo.get("status") or {})
    plan = PromotionPlan(status=status)
    phase = status.get("phase") or "Pending"
    if phase in TERMINAL_PHASES:
        return plan  # ended: never re-run
    spec = PromotionSpec.model_validate(promo["spec"])
    now = inputs.now
    (kind, agent), revision = spec.target, spec.revision
    status["approvals"] = ledger(promo) or None

    def conditions(
        ready: bool, reason: str, message: str, *, stalled: bool = False, reconciling: bool = False
    ) -> None:
        status["conditions"] = ready_conditions(
            status.get("conditions") or [],
            ready=ready,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
            stalled=stalled,
            reconciling=reconciling,
        )

    def end(final: str, reason: str, message: str) -> PromotionPlan:
        status.update(phase=final, message=message, completedAt=timestamp(now))
        succeeded = final == "Succeeded"
        conditions(succeeded, reason, message, stalled=not succeeded)
        plan.events.append((reason, message, not succeeded))
        return plan

    def wait(reason: str, message: str) -> PromotionPlan:
        status.update(phase=phase, message=message)
        conditions(False, reason, message, reconciling=True)
        return plan

    if phase == "Pending":
        if inputs.agent is None:
            return wait(f"{kind}NotFound", f"{kind} {agent!r} does not exist")
        if not inputs.revision_exists:
            latest = ((inputs.agent or {}).get("status") or {}).get("latestRevision")
            if latest is None or revision > int(latest):
                # Applied together with the Agent (GitOps), or ahead of it: wait for it.
                return wait(
                    "RevisionNotFound",
                    f"waiting for revision {revision} of {kind} {agent!r} "
                    f"(latest: {latest or 'none'})",
                )
            return end(
                "Failed",
                "RevisionNotFound",
                f"{kind} {agent!r} has no revision {revision} any more "
                "(pruned by revisionHistoryLimit)",
            )
        for role, gw in (("from", inputs.source), ("to", inputs.target)):
            if gw is None:
                name = spec.from_ if role == "from" else spec.to
                return wait("GatewayNotFound", f"Gateway {name!r} (spec.{role}) does not exist")
        target_spec = GatewaySpec.model_validate((inputs.target or {})["spec"])
        if target_spec.effective_revision_policy() != RevisionPolicy.PROMOTED:
            return end(
                "Failed",
                "TargetNotPromoted",
                f"Gateway {spec.to!r} serves each agent's latest revision (revisionPolicy Latest); "
                "Promotions only apply to Promoted gateways",
            )
        refused = _policy_refusal(spec, inputs.target)
        if refused:
            return end("Failed", "PromotionPolicyNotMet", refused)
        status["startedAt"] = timestamp(now)
        if spec.approval and spec.approval.required:
            phase = "WaitingForApproval"
            if spec.approval.timeout:
                status["approvalDeadline"] = timestamp(
                    now + timedelta(seconds=parse_duration(spec.approval.timeout))
                )
            plan.events.append(
                (
                    "WaitingForApproval",
                    f"waiting for {spec.approval.min_approvals} approval(s)",
                    False,
                )
            )
        else:
            phase = "Progressing"
            status["progressingSince"] = timestamp(now)

    if phase == "WaitingForApproval":
        assert spec.approval is not None  # noqa: S101 - only approval-required promotions get here
        entries = ledger(promo)
        rejection = next((e for e in entries if e.get("decision") == "Rejected"), None)
        if rejection:
            return end(
                "Rejected",
                "Rejected",
                f"rejected by {rejection['user']}: {rejection.get('reason', '')}",
            )
        refused = _policy_refusal(spec, inputs.target)  # the policy may be newer
        if refused:
            return end("Failed", "PromotionPolicyNotMet", refused)
        approvers = counted_approvers(promo, spec.approval.allow_self_approval)
        needed = spec.approval.min_approvals
        if len(approvers) >= needed:
            phase = "Progressing"
            status["progressingSince"] = timestamp(now)
            plan.events.append(("Approved", f"approved by {', '.join(approvers)}", False))
        else:
            deadline = _parse_time(status.get("approvalDeadline"))
            if deadline and now >= deadline:
                return end(
                    "Failed",
                    "ApprovalExpired",
                    f"{len(approvers)}/{needed} approvals before the deadline "
                    f"{status['approvalDeadline']}",
                )
            return wait(
                "WaitingForApproval",
                f"{len(approvers)}/{needed} approvals"
                + (f" (by {', '.join(approvers)})" if approvers else ""),
            )

    if phase == "Verifying":
        return _verify(inputs, spec, plan, status, end, wait)

    # Progressing: gates, then the switch.
    gates = spec.gates
    results: list[dict[str, Any]] = []
    if gates and gates.soak:
        since = _parse_time(status.get("progressingSince")) or now
        needed_s = parse_duration(gates.soak.duration)
        if gates.soak.require_healthy and not _ready(inputs.source or {}):
            return end(
                "Failed", "SourceUnhealthy", f"Gateway {spec.from_!r} is not Ready during the soak"
            )
        if not soak_done(status, spec, now):
            status["gates"] = [
                {
                    "name": "soak",
                    "status": "Pending",
                    "message": f"soaking until {timestamp(since + timedelta(seconds=needed_s))}",
                }
            ]
            status["phase"] = "Progressing"
            return wait("Soaking", f"soaking {gates.soak.duration} on {spec.from_}")
        results.append(
            _gate("soak", "Passed", f"{spec.from_} healthy for {gates.soak.duration}", now)
        )
    if gates and gates.metrics:
        passed = metrics_passed(status)
        outcome = inputs.metrics
        if passed is not None:
            results.append(passed)
        elif outcome is not None and outcome.final and not outcome.passed:
            status["gates"] = [*results, _gate("metrics", "Failed", outcome.message, now)]
            return end("Failed", "MetricGateFailed", outcome.message)
        elif outcome is not None and outcome.final:
            results.append(_gate("metrics", "Passed", outcome.message, now))
            plan.events.append(("MetricGatePassed", outcome.message, False))
        else:
            due = soak_end(status, spec, now)
            if (now - due).total_seconds() > METRICS_GRACE_SECONDS:
                message = outcome.message if outcome else "no metrics read"
                status["gates"] = [*results, _gate("metrics", "Failed", message, now)]
                return end(
                    "Failed",
                    "MetricsUnavailable",
                    f"{message} for {METRICS_GRACE_SECONDS}s after the gates were due",
                )
            status["gates"] = [
                *results,
                _gate("metrics", "Pending", outcome.message if outcome else "reading", now),
            ]
            status["phase"] = "Progressing"
            return wait(
                "WaitingForMetrics",
                outcome.message if outcome else f"reading the metrics of {spec.from_}",
            )
    if gates and gates.webhook:
        if inputs.webhook is None:
            return wait("WaitingForWebhook", "asking the webhook gate")
        if not inputs.webhook.passed:
            status["gates"] = [*results, _gate("webhook", "Failed", inputs.webhook.message, now)]
            return end("Failed", "WebhookGateFailed", inputs.webhook.message)
        results.append(_gate("webhook", "Passed", inputs.webhook.message, now))
    if results:
        status["gates"] = results
    status["previousRevision"] = promoted_revision(inputs.target, agent, kind)
    plan.switch = (agent, revision)
    if gates and gates.smoke:
        status["verifyingSince"] = timestamp(now)
        status["phase"] = "Verifying"
        plan.events.append(
            ("Switched", f"{spec.to} now serves {agent} revision {revision}; verifying", False)
        )
        status["message"] = f"verifying revision {revision} on {spec.to}"
        status["conditions"] = ready_conditions(
            status.get("conditions") or [],
            ready=False,
            reason="Verifying",
            message=status["message"],
            generation=generation,
            now=now,
            reconciling=True,
        )
        return plan
    return end("Succeeded", "Promoted", f"{spec.to} now serves {agent} revision {revision}")


def _gate(name: str, state: str, message: str, now: datetime) -> dict[str, Any]:
    return {"name": name, "status": state, "message": message[:4096], "time": timestamp(now)}


def soak_end(status: dict[str, Any], spec: PromotionSpec, now: datetime) -> datetime:
    """When the soak is (or was) over: progressingSince plus the soak duration."""
    soak = spec.gates.soak if spec.gates else None
    since = _parse_time(status.get("progressingSince")) or now
    return since + timedelta(seconds=parse_duration(soak.duration) if soak else 0)


def soak_done(status: dict[str, Any], spec: PromotionSpec, now: datetime) -> bool:
    """True when there is no soak gate or its time has passed."""
    return now >= soak_end(status, spec, now)


def metrics_passed(status: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics gate's Passed result, once decided (it is not measured again)."""
    return next(
        (
            g
            for g in status.get("gates") or []
            if g.get("name") == "metrics" and g.get("status") == "Passed"
        ),
        None,
    )


def _verify(
    inputs: PromotionInputs,
    spec: PromotionSpec,
    plan: PromotionPlan,
    status: dict[str, Any],
    end: Any,
    wait: Any,
) -> PromotionPlan:
    """Verifying: the smoke gate after the switch; a failure switches back."""
    smoke = spec.gates.smoke if spec.gates else None
    outcome = inputs.smoke
    since = _parse_time(status.get("verifyingSince")) or inputs.now
    deadline_s = parse_duration(smoke.timeout) if smoke else 0
    gates = [g for g in status.get("gates") or [] if g.get("name") != "smoke"]
    if outcome is not None and outcome.passed:
        status["gates"] = [*gates, _gate("smoke", "Passed", outcome.message, inputs.now)]
        result: PromotionPlan = end(
            "Succeeded",
            "Verified",
            f"{spec.to} serves {spec.target[1]} revision {spec.revision}, verified",
        )
        return result
    expired = (inputs.now - since).total_seconds() >= deadline_s
    if outcome is None or (not outcome.final and not expired):
        waited: PromotionPlan = wait(
            "Verifying", outcome.message if outcome else "waiting for the smoke gate"
        )
        return waited
    message = (
        outcome.message
        if outcome.final
        else f"{outcome.message} after {smoke.timeout if smoke else ''}"
    )
    status["gates"] = [*gates, _gate("smoke", "Failed", message, inputs.now)]
    previous = status.get("previousRevision")
    plan.switch = (spec.target[1], int(previous) if previous else None)
    back = f"revision {previous}" if previous else f"not serving {spec.target[1]}"
    failed: PromotionPlan = end(
        "Failed",
        "VerificationFailed",
        f"smoke gate failed ({message}); {spec.to} reverted to {back}",
    )
    return failed


FAILED_PHASES = frozenset({"Failed", "Rejected", "Aborted", "Errored"})
NOTIFY_MAX_ATTEMPTS = 8  # with backoff 2, 4, ... 128 s: about four minutes


def notification_pending(promotion: dict[str, Any]) -> bool:
    """A Promotion that ended badly and whose notification webhook has not answered 2xx
    yet (and has attempts left)."""
    spec = promotion.get("spec") or {}
    status = promotion.get("status") or {}
    if not (spec.get("notifications") or {}).get("webhook"):
        return False
    if status.get("phase") not in FAILED_PHASES:
        return False
    sent = status.get("notification") or {}
    return not sent.get("deliveredAt") and int(sent.get("attempts") or 0) < NOTIFY_MAX_ATTEMPTS


def notification_due(promotion: dict[str, Any], now: datetime) -> bool:
    """Pending, and the backoff since the last attempt has passed."""
    if not notification_pending(promotion):
        return False
    sent = (promotion.get("status") or {}).get("notification") or {}
    last = _parse_time(sent.get("lastAttempt"))
    attempts = int(sent.get("attempts") or 0)
    return last is None or (now - last).total_seconds() >= 2**attempts


def notification_status(
    promotion: dict[str, Any], outcome: GateOutcome, now: datetime
) -> dict[str, Any]:
    """status.notification after one delivery attempt."""
    sent = (promotion.get("status") or {}).get("notification") or {}
    return {
        "attempts": int(sent.get("attempts") or 0) + 1,
        "lastAttempt": timestamp(now),
        "deliveredAt": timestamp(now) if outcome.passed else None,
        "message": outcome.message[:1024],
    }
