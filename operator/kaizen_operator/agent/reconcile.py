"""Agent reconcile: resolve -> render -> apply."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kaizen_operator import revisioned
from kaizen_operator.agent.render import AGENT_REVISIONS, AgentInputs, SecretState, render_agent
from kaizen_operator.kube import Kube
from kaizen_operator.runtime import Runtime, owned_by
from kaizen_operator.secrets import SecretAccessDenied, read_secret

API = "kaizen.studio/v1alpha1"


async def _secret_state(kube: Kube, ns: str, ref: dict[str, Any]) -> str:
    """Whether the credentials Secret and its key exist (never its value)."""
    secret = await read_secret(kube, ns, ref["name"])
    if secret is None:
        return SecretState.MISSING
    key = ref.get("key", "apiKey")
    present = key in (secret.get("data") or {}) or key in (secret.get("stringData") or {})
    del secret  # only presence matters; the value is dropped at once
    return SecretState.OK if present else SecretState.MISSING_KEY


async def resolve_agent(
    kube: Kube,
    agent: dict[str, Any],
    now: datetime,
    retained: dict[int, tuple[str, ...]] | None = None,
) -> AgentInputs:
    """Read the Agent's revisions and referenced objects (Secret values are never kept)."""
    meta = agent["metadata"]
    ns, name = meta["namespace"], meta["name"]
    revisions = await kube.list("apps/v1", "ControllerRevision", ns, AGENT_REVISIONS.selector(name))
    spec = agent["spec"]
    gateway_exists = None
    if spec.get("gatewayRef"):
        gateway_exists = await kube.get(API, "Gateway", ns, spec["gatewayRef"]["name"]) is not None
    secret_state, secret_refusal = None, None
    ref = spec.get("model", {}).get("credentialsSecretRef")
    if ref:
        try:
            secret_state = await _secret_state(kube, ns, ref)
        except SecretAccessDenied as denied:  # a condition says which RoleBinding grants it
            secret_refusal = str(denied)
    return AgentInputs(
        agent=agent,
        revisions=tuple(r for r in revisions if owned_by(r, meta["uid"])),
        orphans=tuple(r for r in revisions if not r["metadata"].get("ownerReferences")),
        gateway_exists=gateway_exists,
        secret_state=secret_state,
        secret_refusal=secret_refusal,
        now=now,
        retained=retained or {},
    )


async def reconcile_agent(rt: Runtime, namespace: str, name: str) -> int | None:
    """Make revisions and status match the Agent; returns the latest revision number."""
    return await revisioned.reconcile_revisioned(
        rt, "Agent", namespace, name, resolve_agent, render_agent
    )
