"""Agent reconcile: resolve -> render -> apply."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kopf

from kaizen_operator import names
from kaizen_operator.agent.render import (
    AgentInputs,
    SecretState,
    render_agent,
    with_creation_times,
)
from kaizen_operator.conditions import READY, get_condition
from kaizen_operator.events import record
from kaizen_operator.gateway.index import revisions_in_use
from kaizen_operator.kube import ApiException, Kube
from kaizen_operator.promotion.index import PromotionIndex
from kaizen_operator.runtime import Runtime, owned_by, write_status
from kaizen_operator.secrets import SecretAccessDenied, read_secret

API = "kaizen.studio/v1alpha1"


def _reasons(
    gateways: dict[int, list[str]], promotions: dict[int, list[str]]
) -> dict[int, tuple[str, ...]]:
    reasons: dict[int, list[str]] = {}
    for revision, names_ in gateways.items():
        reasons.setdefault(revision, []).extend(f"served by Gateway {g!r}" for g in names_)
    for revision, names_ in promotions.items():
        reasons.setdefault(revision, []).extend(f"target of Promotion {p!r}" for p in names_)
    return {revision: tuple(why) for revision, why in reasons.items()}


def retained_revisions(rt: Runtime, namespace: str, agent: str) -> dict[int, tuple[str, ...]]:
    """Revisions of ``agent`` in use, with why: served by a Gateway (the Gateway index)
    or targeted by an unfinished Promotion (the Promotion index). From memory, no reads."""
    return _reasons(
        rt.gateways.serving(namespace, agent), rt.promotions.targeting(namespace, agent)
    )


async def read_retained_revisions(
    kube: Kube, namespace: str, agent: str
) -> dict[int, tuple[str, ...]]:
    """Like :func:`retained_revisions`, from fresh reads: a pruned revision is gone for
    good, and the watches may not have shown the latest switch yet (the Gateway and
    Promotion watches are separate streams)."""
    gateways: dict[int, list[str]] = {}
    for gw in await kube.list(API, "Gateway", namespace, fresh=True):
        for served_agent, revision in revisions_in_use(gw):
            if served_agent == agent:
                gateways.setdefault(revision, []).append(gw["metadata"]["name"])
    promotions: dict[int, list[str]] = {}
    for promotion in await kube.list(API, "Promotion", namespace, fresh=True):
        target = PromotionIndex.target_of(promotion)
        if target is not None and target[0] == agent:
            promotions.setdefault(target[1], []).append(promotion["metadata"]["name"])
    return _reasons(gateways, promotions)


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
    revisions = await kube.list("apps/v1", "ControllerRevision", ns, f"{names.AGENT_LABEL}={name}")
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
    async with rt.reconciling("Agent", namespace, name):
        agent = await rt.kube.get(API, "Agent", namespace, name)
        if agent is None or agent["metadata"].get("deletionTimestamp"):
            return None
        retained = retained_revisions(rt, namespace, name)
        inputs = await resolve_agent(rt.kube, agent, datetime.now(UTC), retained)
        plan = render_agent(inputs)
        if plan.delete:  # rare (a new revision past the limit): confirm before deleting
            inputs = replace(
                inputs, retained=await read_retained_revisions(rt.kube, namespace, name)
            )
            plan = render_agent(inputs)
        orphans = {r["metadata"]["name"]: r for r in inputs.orphans}
        for adopted in plan.adopt:
            try:
                await rt.kube.patch_guarded(
                    "apps/v1",
                    "ControllerRevision",
                    namespace,
                    adopted,
                    {"metadata": {"ownerReferences": [names.owner_reference(agent)]}},
                    orphans[adopted]["metadata"]["resourceVersion"],
                )
            except ApiException as exc:
                if exc.status in (404, 409):  # changed or gone meanwhile: read again
                    raise kopf.TemporaryError("restored revision changed", delay=1) from exc
                raise
        if plan.adopt:
            await record(
                rt.kube, agent, "RevisionsAdopted", "adopted restored " + ", ".join(plan.adopt)
            )
        created: dict[str, str] = {}
        for revision in plan.create:
            try:
                made = await rt.kube.create(revision)
            except ApiException as exc:
                if exc.status == 409:
                    raise kopf.TemporaryError(
                        "revision created concurrently; retrying", delay=1
                    ) from exc
                raise
            created[made["metadata"]["name"]] = made["metadata"]["creationTimestamp"]
            await record(
                rt.kube,
                agent,
                "RevisionCreated",
                f"created revision {revision['revision']} ({revision['metadata']['name']})",
            )
        for old in plan.delete:
            await rt.kube.delete("apps/v1", "ControllerRevision", namespace, old)
        before = get_condition((agent.get("status") or {}).get("conditions"), READY)
        after = get_condition(plan.status["conditions"], READY)
        status = with_creation_times(plan.status, created)
        await write_status(rt.kube, agent, status)
        if after and after["status"] == "False" and (before or {}).get("reason") != after["reason"]:
            await record(rt.kube, agent, after["reason"], after["message"], warning=True)
        return plan.latest_revision
