"""Promotion state machine (pure: no client, no clock — ``now`` is an input).

Pending -> WaitingForApproval -> Progressing -> Succeeded, or one of Failed, Rejected,
Aborted, Errored. A Promotion that ended is never re-run. Soak gates are evaluated
here; metric, smoke and webhook gates are not implemented yet and end the Promotion
as Errored with reason GateNotSupported rather than pretending to pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kaizen_api.v1alpha1.common import parse_duration
from kaizen_api.v1alpha1.gateway import GatewaySpec, RevisionPolicy
from kaizen_api.v1alpha1.promotion import TERMINAL_PHASES, PromotionSpec
from kaizen_operator.conditions import get_condition, ready_conditions, timestamp
from kaizen_operator.promotion.approvals import ledger


@dataclass(frozen=True)
class PromotionInputs:
    """Everything the Promotion render needs, read by resolve_promotion."""

    promotion: dict[str, Any]
    agent: dict[str, Any] | None
    revision_exists: bool
    source: dict[str, Any] | None
    target: dict[str, Any] | None
    now: datetime


@dataclass
class PromotionPlan:
    """The new status, the switch to make on the target, and Events to record."""

    status: dict[str, Any]
    switch: tuple[str, int] | None = None
    events: list[tuple[str, str, bool]] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status.get("phase") in TERMINAL_PHASES


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _ready(gateway: dict[str, Any]) -> bool:
    cond = get_condition((gateway.get("status") or {}).get("conditions"), "Ready")
    return bool(cond and cond.get("status") == "True")


def served_revision(gateway: dict[str, Any] | None, agent: str) -> int | None:
    """The revision of ``agent`` that ``gateway`` serves now."""
    for entry in ((gateway or {}).get("status") or {}).get("servedRevisions") or []:
        if entry.get("agent") == agent:
            return int(entry["revision"])
    return None


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
    agent, revision = spec.agent_ref.name, spec.revision
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
            return wait("AgentNotFound", f"Agent {agent!r} does not exist")
        if not inputs.revision_exists:
            return end(
                "Failed",
                "RevisionNotFound",
                f"Agent {agent!r} has no revision {revision} (pruned or never created)",
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
        approvers = sorted({e["user"] for e in entries if e.get("decision") == "Approved"})
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

    # Progressing: gates, then the switch.
    gates = spec.gates
    if gates and (gates.metrics or gates.smoke or gates.webhook):
        return end(
            "Errored",
            "GateNotSupported",
            "metric, smoke and webhook gates are not implemented yet; "
            "remove them or wait for support",
        )
    results: list[dict[str, Any]] = []
    if gates and gates.soak:
        since = _parse_time(status.get("progressingSince")) or now
        needed_s = parse_duration(gates.soak.duration)
        if gates.soak.require_healthy and not _ready(inputs.source or {}):
            return end(
                "Failed", "SourceUnhealthy", f"Gateway {spec.from_!r} is not Ready during the soak"
            )
        if (now - since).total_seconds() < needed_s:
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
            {
                "name": "soak",
                "status": "Passed",
                "message": f"{spec.from_} healthy for {gates.soak.duration}",
                "time": timestamp(now),
            }
        )
    if results:
        status["gates"] = results
    status["previousRevision"] = served_revision(inputs.target, agent)
    plan.switch = (agent, revision)
    return end("Succeeded", "Promoted", f"{spec.to} now serves {agent} revision {revision}")
