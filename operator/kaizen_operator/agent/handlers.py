"""kopf registrations for Agents: every trigger runs the same level-based reconcile."""

from __future__ import annotations

from typing import Any

import kopf

from kaizen_operator.agent.reconcile import reconcile_agent
from kaizen_operator.cache_feed import forget_deleted
from kaizen_operator.gateway.reconcile import reconcile_gateways_of, reconcile_gateways_pinning
from kaizen_operator.pipeline.reconcile import reconcile_pipelines_calling
from kaizen_operator.runtime import runtime_of

AGENTS = ("kaizen.studio", "v1alpha1", "agents")


@kopf.on.resume(*AGENTS)
@kopf.on.create(*AGENTS)
@kopf.on.update(*AGENTS, field="spec")
@kopf.on.update(*AGENTS, field="metadata.labels")
async def agent_changed(
    body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """Revisions and status, then the Gateways that select or serve the Agent."""
    rt = runtime_of(memo)
    await reconcile_agent(rt, str(namespace), name)
    reconcile_gateways_of(rt, str(namespace), dict(body))
    reconcile_pipelines_calling(rt, str(namespace), "Agent", name)
    reconcile_gateways_pinning(rt, str(namespace), name)


@kopf.on.event(*AGENTS)
async def agent_seen(
    type: str,
    body: kopf.Body,
    namespace: str | None,
    memo: Any,
    **_: Any,
) -> None:
    """Track the Agent for resyncs; a deleted Agent leaves the Gateways that served it."""
    rt = runtime_of(memo)
    forget_deleted(memo, "Agent", type, body)
    rt.track("Agent", type, str(namespace), body["metadata"]["name"])
    if type == "DELETED":
        reconcile_gateways_of(rt, str(namespace), dict(body))
        reconcile_pipelines_calling(rt, str(namespace), "Agent", body["metadata"]["name"])
