"""Promotion reconcile: resolve -> render the state machine -> switch -> status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from kaizen_operator import names
from kaizen_operator.events import record
from kaizen_operator.gateway.reconcile import reconcile_gateway
from kaizen_operator.kube import ApiException, Kube
from kaizen_operator.promotion.render import PromotionInputs, render_promotion
from kaizen_operator.runtime import Runtime, write_status

API = "kaizen.studio/v1alpha1"


async def resolve_promotion(
    kube: Kube, promotion: dict[str, Any], now: datetime
) -> PromotionInputs:
    """Read the Agent, the revision and both Gateways."""
    ns = promotion["metadata"]["namespace"]
    spec = promotion["spec"]
    agent = await kube.get(API, "Agent", ns, spec["agentRef"]["name"])
    revision = None
    if agent is not None:
        revision = await kube.get(
            "apps/v1",
            "ControllerRevision",
            ns,
            names.agent_revision(spec["agentRef"]["name"], int(spec["revision"])),
        )
    return PromotionInputs(
        promotion=promotion,
        agent=agent,
        revision_exists=revision is not None,
        source=await kube.get(API, "Gateway", ns, spec["from"]),
        target=await kube.get(API, "Gateway", ns, spec["to"]),
        now=now,
    )


async def switch_served_revision(
    kube: Kube, target: dict[str, Any], agent: str, revision: int
) -> None:
    """Make ``target`` serve ``revision`` of ``agent`` (guarded against concurrent writes)."""
    meta = target["metadata"]
    served = [
        s
        for s in (target.get("status") or {}).get("servedRevisions") or []
        if s.get("agent") != agent
    ]
    served.append({"agent": agent, "revision": revision})
    await kube.patch_status_guarded(
        API,
        "Gateway",
        meta["namespace"],
        meta["name"],
        {"servedRevisions": sorted(served, key=lambda s: s["agent"])},
        meta["resourceVersion"],
    )


async def reconcile_promotion(rt: Runtime, namespace: str, name: str) -> None:
    """Advance a Promotion by at most one step of its state machine."""
    async with rt.reconciling("Promotion", namespace, name):
        promotion = await rt.kube.get(API, "Promotion", namespace, name)
        if promotion is None or promotion["metadata"].get("deletionTimestamp"):
            return
        inputs = await resolve_promotion(rt.kube, promotion, datetime.now(UTC))
        plan = render_promotion(inputs)
        if plan.switch and inputs.target is not None:
            try:
                await switch_served_revision(rt.kube, inputs.target, *plan.switch)
            except ApiException as exc:
                if exc.status == 409:
                    raise kopf.TemporaryError(
                        "target Gateway changed; retrying the switch", delay=1
                    ) from exc
                raise
            await reconcile_gateway(rt, namespace, inputs.target["metadata"]["name"])
        await write_status(rt.kube, promotion, plan.status)
        for reason, message, warning in plan.events:
            await record(rt.kube, promotion, reason, message, warning=warning)
        if plan.terminal:
            rt.known.get("Promotion", set()).discard((namespace, name))
