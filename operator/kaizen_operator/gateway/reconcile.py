"""Gateway reconcile: resolve -> render -> apply -> prune."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from kaizen_api.pairing import secrets_sent
from kaizen_api.v1alpha1.agent import AgentSpec
from kaizen_api.v1alpha1.common import LabelSelector
from kaizen_api.v1alpha1.gateway import GatewaySpec
from kaizen_operator import names
from kaizen_operator.endpoints import gateway_urls
from kaizen_operator.events import record
from kaizen_operator.gateway.policy import GatewayPolicy
from kaizen_operator.gateway.render import (
    HTTP_ROUTE,
    GatewayInputs,
    merge_tool_servers,
    pinned_agent_refs,
    render_gateway,
    selector_matches,
    selector_string,
)
from kaizen_operator.gatewaymetrics import read_readiness
from kaizen_operator.kube import REPLICAS_MANAGER, ApiException, Kube, refusal
from kaizen_operator.pipeline.reconcile import calls, reconcile_pipelines_in
from kaizen_operator.runtime import (
    Runtime,
    apply_all,
    owned_by,
    prune,
    report_rejected,
    write_status,
)
from kaizen_operator.secrets import SecretAccessDenied, read_secret

API = "kaizen.studio/v1alpha1"
# Gateway pods asked for their MCP servers' reachability per reconcile (each probes all
# of the bundle's servers; a few pods tell what the Service's clients meet).
READINESS_PODS = 3


def controlling_policy(policies: list[dict[str, Any]], gateway: str) -> dict[str, Any] | None:
    """The ScalingPolicy that scales ``gateway``: the oldest one targeting it."""
    targeting = [p for p in policies if p["spec"].get("targetRef", {}).get("name") == gateway]
    if not targeting:
        return None
    return min(targeting, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))


async def _candidate_agents(kube: Kube, gateway: dict[str, Any]) -> list[dict[str, Any]]:
    """The Agents a Gateway may serve: from the watch cache, else letting the apiserver
    filter (never the whole list)."""
    ns = gateway["metadata"]["namespace"]
    spec = GatewaySpec.model_validate(gateway["spec"])
    if spec.agents.names is not None:
        found = [await kube.get(API, "Agent", ns, name) for name in spec.agents.names]
        return [a for a in found if a is not None]
    selector = spec.agents.selector or LabelSelector()
    if kube.cache is not None:
        return kube.cache.list(
            "Agent",
            ns,
            where=lambda a: selector_matches(selector, a["metadata"].get("labels") or {}),
        )
    return await kube.list(API, "Agent", ns, selector_string(selector) or None)


async def _candidate_pipelines(kube: Kube, gateway: dict[str, Any]) -> list[dict[str, Any]]:
    """The Pipelines a Gateway may serve (none while spec.pipelines is unset)."""
    ns = gateway["metadata"]["namespace"]
    selection = GatewaySpec.model_validate(gateway["spec"]).pipelines
    if selection is None:
        return []
    if selection.names is not None:
        found = [await kube.get(API, "Pipeline", ns, name) for name in selection.names]
        return [p for p in found if p is not None]
    selector = selection.selector or LabelSelector()
    if kube.cache is not None:
        return kube.cache.list(
            "Pipeline",
            ns,
            where=lambda p: selector_matches(selector, p["metadata"].get("labels") or {}),
        )
    return await kube.list(API, "Pipeline", ns, selector_string(selector) or None)


async def _owned_revisions(
    kube: Kube, namespace: str, label: str, owners: dict[str, dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """The ControllerRevisions labelled ``label`` = an owner's name and owned by it."""
    revisions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not owners:
        return revisions
    wanted = f"{label} in ({','.join(sorted(owners))})"
    for rev in await kube.list("apps/v1", "ControllerRevision", namespace, wanted):
        owner = rev["metadata"].get("labels", {}).get(label, "")
        if owner in owners and owned_by(rev, owners[owner]["metadata"]["uid"]):
            revisions[owner].append(rev)
    return revisions


def pinned_refs(revision: dict[str, Any]) -> set[tuple[str, int]]:
    """(agent, revision) pins of a pipeline ControllerRevision (none if unreadable)."""
    try:
        return pinned_agent_refs((revision.get("data") or {}).get("spec") or {})
    except ValueError:
        return set()


def _uses_mcp(agents: list[dict[str, Any]]) -> bool:
    return any(
        tool.get("type") == "mcp"
        for agent in agents
        for tool in (agent.get("spec") or {}).get("tools") or []
    )


async def resolve_gateway(
    kube: Kube,
    gateway: dict[str, Any],
    image: str,
    now: datetime,
    allow_link_local_upstreams: bool = False,
    gateway_endpoints: Path | None = None,
    redis_secret: str | None = None,
    otlp_endpoint: str | None = None,
    gateway_policy: GatewayPolicy | None = None,
    operator_namespace: str | None = None,
) -> GatewayInputs:
    """Read the Agents, their revisions, the ScalingPolicy, the live Deployment and, when
    an agent has MCP tools, what the gateway pods report of their MCP servers."""
    meta = gateway["metadata"]
    ns = meta["namespace"]
    agents = await _candidate_agents(kube, gateway)
    pipelines = await _candidate_pipelines(kube, gateway)
    pipeline_revisions = await _owned_revisions(
        kube, ns, names.PIPELINE_LABEL, {p["metadata"]["name"]: p for p in pipelines}
    )
    owners = {a["metadata"]["name"]: a for a in agents}
    # Agents the pipelines' revisions pin: their revisions are bundled too.
    for pinned in sorted(
        {a for revs in pipeline_revisions.values() for r in revs for a, _ in pinned_refs(r)}
        - set(owners)
    ):
        found = await kube.get(API, "Agent", ns, pinned)
        if found is not None:
            owners[pinned] = found
    revisions = await _owned_revisions(kube, ns, names.AGENT_LABEL, owners)
    policy = controlling_policy(await kube.list(API, "ScalingPolicy", ns), meta["name"])
    min_replicas = None
    if policy is not None:
        min_replicas = int(policy["spec"].get("minReplicas", 1))
    deployment = await kube.get("apps/v1", "Deployment", ns, names.gateway_workload(meta["name"]))
    exposure = (gateway.get("spec") or {}).get("exposure") or {}
    # Asked only when needed: discovery is a call, and most Gateways have no route.
    route_api = await kube.serves(*HTTP_ROUTE) if exposure.get("httpRoute") else True
    tool_servers = None
    if _uses_mcp(agents):
        urls = await gateway_urls(kube, gateway_endpoints, gateway)
        pages = await read_readiness(urls[:READINESS_PODS]) if urls else {}
        tool_servers = merge_tool_servers(pages.values())
    sent = set()
    for revs in revisions.values():
        for rev in revs:
            sent |= secrets_sent(AgentSpec.model_validate(rev["data"]["spec"]))
    secret_annotations, secret_refusals = {}, {}
    for secret_name in sorted(sent):
        try:
            secret = await read_secret(kube, ns, secret_name)
        except SecretAccessDenied as denied:  # the agent is not served; a condition says why
            secret_refusals[secret_name] = str(denied)
            continue
        if secret is not None:
            secret_annotations[secret_name] = (secret.get("metadata") or {}).get("annotations")
    return GatewayInputs(
        gateway=gateway,
        agents=tuple(agents),
        revisions={k: tuple(v) for k, v in revisions.items()},
        autoscaled=policy is not None,
        min_replicas=min_replicas,
        deployment=deployment,
        image=image,
        now=now,
        allow_link_local_upstreams=allow_link_local_upstreams,
        http_route_api=route_api,
        tool_servers=tool_servers,
        redis_secret=redis_secret,
        otlp_endpoint=otlp_endpoint,
        policy=gateway_policy or GatewayPolicy(),
        operator_namespace=operator_namespace,
        secret_annotations=secret_annotations,
        secret_refusals=secret_refusals,
        pipelines=tuple(pipelines),
        pipeline_revisions={k: tuple(v) for k, v in pipeline_revisions.items()},
    )


CONFLICT_RETRIES = 5


async def reconcile_gateway(rt: Runtime, namespace: str, name: str) -> None:
    """Make a Gateway's children and status match its spec and the agents it serves."""
    async with rt.reconciling("Gateway", namespace, name):
        for attempt in range(CONFLICT_RETRIES):
            # After a lost race the cache may not have the winner yet: read afresh.
            if await _reconcile_gateway_once(rt, namespace, name, fresh=attempt > 0):
                return
        raise kopf.TemporaryError("Gateway kept changing while reconciling; retrying", delay=2)


async def _reconcile_gateway_once(rt: Runtime, namespace: str, name: str, fresh: bool) -> bool:
    """One pass; False when the status write lost a race and the pass must be redone."""
    gateway = await rt.kube.get(API, "Gateway", namespace, name, fresh=fresh)
    if gateway is None or gateway["metadata"].get("deletionTimestamp"):
        return True
    try:
        now = datetime.now(UTC)
        inputs = await resolve_gateway(
            rt.kube,
            gateway,
            rt.config.gateway_image,
            now,
            rt.config.allow_link_local_upstreams,
            rt.config.gateway_endpoints,
            rt.config.gateway_redis_secret,
            rt.config.gateway_otlp_endpoint,
            rt.config.gateway_policy,
            rt.config.namespace,
        )
        plan = render_gateway(inputs)
        await apply_all(rt.kube, plan.children)
        if plan.replicas is not None:
            await rt.kube.apply(plan.replicas, manager=REPLICAS_MANAGER)
    except ApiException as exc:
        if (message := refusal(exc)) is None:
            raise
        try:
            await report_rejected(
                rt.kube, gateway, "the apiserver refused", message, now, guard=True
            )
        except ApiException as conflict:
            if conflict.status == 409:
                return False  # the Gateway changed meanwhile: the pass is redone
            raise
        return True
    removed = await prune(rt.kube, namespace, gateway["metadata"]["uid"], plan.prune)
    served_before = (gateway.get("status") or {}).get("servedRevisions") or []
    before = {(s["agent"], s["revision"]) for s in served_before}
    try:
        # Guarded: the served revisions of a promoted Gateway live only in its status.
        await write_status(rt.kube, gateway, plan.status, guard=True)
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    after = {(s["agent"], s["revision"]) for s in plan.status["servedRevisions"]}
    if after != before:
        served = ", ".join(f"{a}@r{r}" for a, r in sorted(after)) or "nothing"
        await record(rt.kube, gateway, "ServedRevisionsChanged", f"now serving {served}")
    old_pipelines = _served_pipelines(gateway.get("status") or {})
    new_pipelines = _served_pipelines(plan.status)
    if new_pipelines != old_pipelines:
        served = ", ".join(f"{p}@r{r}" for p, r in sorted(new_pipelines)) or "nothing"
        await record(
            rt.kube, gateway, "ServedPipelineRevisionsChanged", f"now serving pipelines {served}"
        )
    if (after != before or new_pipelines != old_pipelines) and rt.known.get("Pipeline"):
        # Pipelines check that the Gateways serving them serve their steps' agents.
        reconcile_pipelines_in(rt, namespace)
    if removed:
        await record(rt.kube, gateway, "Pruned", "deleted " + ", ".join(removed))
    return True


def _served_pipelines(status: dict[str, Any]) -> set[tuple[str, int]]:
    return {(s["pipeline"], s["revision"]) for s in status.get("servedPipelineRevisions") or []}


def reconcile_gateways_of(rt: Runtime, namespace: str, agent: dict[str, Any]) -> None:
    """Request a reconcile of every Gateway that selects or serves ``agent``.

    Requested, not awaited: an Agent burst (a bulk apply) coalesces into a few
    reconciles per Gateway instead of one per Agent event."""
    for name in rt.gateways.wanting(namespace, agent):
        rt.request("Gateway", namespace, name, reconcile_gateway)


def reconcile_gateways_of_pipeline(rt: Runtime, namespace: str, pipeline: dict[str, Any]) -> None:
    """Request a reconcile of every Gateway that selects or serves ``pipeline``."""
    for name in rt.gateways.wanting_pipeline(namespace, pipeline):
        rt.request("Gateway", namespace, name, reconcile_gateway)


def reconcile_gateways_pinning(rt: Runtime, namespace: str, agent: str) -> None:
    """Request a reconcile of every Gateway that selects a Pipeline calling ``agent``:
    a revision its steps pin may just have appeared (or gone), which the Gateway's
    status cannot have told the index yet."""
    cache = rt.kube.cache
    if cache is None:
        return  # the Gateways' periodic resync covers it
    for pipeline in cache.list(
        "Pipeline", namespace, where=lambda p: calls(dict(p), "Agent", agent)
    ):
        reconcile_gateways_of_pipeline(rt, namespace, pipeline)
