"""kopf registrations for Agents: every trigger runs the same level-based reconcile."""

from __future__ import annotations

from typing import Any

import kopf

from kaizen_operator.agent.reconcile import reconcile_agent
from kaizen_operator.gateway.reconcile import reconcile_gateways_in
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
    await reconcile_gateways_in(rt, str(namespace), dict(body))


@kopf.timer(*AGENTS, interval=30, initial_delay=30, idle=10)
async def agent_resync(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """Periodic re-check of references (a Secret or Gateway created later)."""
    await reconcile_agent(runtime_of(memo), str(namespace), name)


@kopf.on.event(*AGENTS)
async def agent_deleted(type: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """A deleted Agent leaves the Gateways that served it."""
    if type == "DELETED":
        await reconcile_gateways_in(runtime_of(memo), str(namespace))
