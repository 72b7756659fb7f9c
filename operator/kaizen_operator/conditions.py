"""Status conditions by the Kubernetes API conventions (pure; time is an argument)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


def timestamp(now: datetime) -> str:
    """RFC 3339 with seconds, as the apiserver stores times."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """A copy of ``conditions`` with one condition set.

    ``lastTransitionTime`` moves only when the status flips, so an unchanged
    condition produces an identical list and no status write.
    """
    value = status if isinstance(status, str) else ("True" if status else "False")
    out = [dict(c) for c in conditions if c.get("type") != type_]
    previous = next((c for c in conditions if c.get("type") == type_), None)
    changed = previous is None or previous.get("status") != value
    condition = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": timestamp(now)
        if changed or previous is None
        else previous.get("lastTransitionTime", timestamp(now)),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    out.append(condition)
    return sorted(out, key=lambda c: str(c["type"]))


def get_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    """The condition of ``type_``, if present."""
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def ready_conditions(
    conditions: list[dict[str, Any]],
    *,
    ready: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
    stalled: bool = False,
    reconciling: bool = False,
) -> list[dict[str, Any]]:
    """Ready plus the kstatus pair Reconciling/Stalled, consistently."""
    out = set_condition(conditions, READY, ready, reason, message, generation, now)
    out = set_condition(
        out,
        STALLED,
        stalled,
        reason if stalled else "NotStalled",
        message if stalled else "",
        generation,
        now,
    )
    out = set_condition(
        out,
        RECONCILING,
        reconciling,
        reason if reconciling else "ReconcileComplete",
        message if reconciling else "",
        generation,
        now,
    )
    return out


CHILD_REJECTED = "ChildRejected"


def rejected_status(obj: dict[str, Any], message: str, now: datetime) -> dict[str, Any]:
    """``obj``'s status when the apiserver refused one of its children as invalid: not
    Ready and Stalled (reason ChildRejected) until its spec changes; the rest of the
    status is kept as it was."""
    status = dict(obj.get("status") or {})
    generation = obj["metadata"].get("generation")
    status["observedGeneration"] = generation
    status["conditions"] = ready_conditions(
        status.get("conditions") or [],
        ready=False,
        reason=CHILD_REJECTED,
        message=message,
        generation=generation,
        now=now,
        stalled=True,
    )
    return status
