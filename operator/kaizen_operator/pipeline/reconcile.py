"""Pipeline reconcile: resolve -> render -> apply, through the revisioned core."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kaizen_api.v1alpha1.gateway import GatewaySpec
from kaizen_api.v1alpha1.pipeline import PipelineSpec
from kaizen_operator import revisioned
from kaizen_operator.gateway.render import selected_pipelines
from kaizen_operator.kube import Kube
from kaizen_operator.pipeline.render import (
    PIPELINE_REVISIONS,
    PipelineInputs,
    ServingGateway,
    pipeline_refs,
    render_pipeline,
)
from kaizen_operator.runtime import Runtime, owned_by

API = "kaizen.studio/v1alpha1"


async def _all(kube: Kube, kind: str, namespace: str) -> list[dict[str, Any]]:
    if kube.cache is not None:
        return kube.cache.list(kind, namespace)
    return await kube.list(API, kind, namespace)


def _refs_of(pipeline: dict[str, Any]) -> tuple[str, ...]:
    try:
        return pipeline_refs(PipelineSpec.model_validate(pipeline.get("spec") or {}))
    except ValidationError:
        return ()


def serving_gateways(
    pipeline: dict[str, Any], gateways: list[dict[str, Any]]
) -> tuple[ServingGateway, ...]:
    """The Gateways that select ``pipeline``, with the agents they serve (their status)
    and the pipelines they select."""
    found = []
    for gw in gateways:
        try:
            spec = GatewaySpec.model_validate(gw.get("spec") or {})
        except ValidationError:
            continue
        if not selected_pipelines(spec.pipelines, (pipeline,)):
            continue
        served = (gw.get("status") or {}).get("servedRevisions") or []
        found.append(
            ServingGateway(
                name=gw["metadata"]["name"],
                agents=frozenset(str(s.get("agent")) for s in served),
                pipelines=frozenset(),
            )
        )
    return tuple(found)


async def resolve_pipeline(
    kube: Kube,
    pipeline: dict[str, Any],
    now: datetime,
    retained: dict[int, tuple[str, ...]] | None = None,
) -> PipelineInputs:
    """Read the Pipeline's revisions, the Agents and Pipelines its steps call and the
    Gateways that select it (from the watch cache where it holds them)."""
    meta = pipeline["metadata"]
    ns, name = meta["namespace"], meta["name"]
    revisions = await kube.list(
        "apps/v1", "ControllerRevision", ns, PIPELINE_REVISIONS.selector(name)
    )
    spec = PipelineSpec.model_validate(pipeline["spec"])
    agent_names = sorted({s.agent_ref.name for s in spec.targets() if s.agent_ref is not None})
    agents: dict[str, frozenset[int]] = {}
    for agent_name in agent_names:
        agent = await kube.get(API, "Agent", ns, agent_name)
        if agent is None:
            continue
        kept = (agent.get("status") or {}).get("revisions") or []
        agents[agent_name] = frozenset(int(r["revision"]) for r in kept if r.get("revision"))
    pipelines = await _all(kube, "Pipeline", ns)
    gateways = await _all(kube, "Gateway", ns)
    serving = serving_gateways(pipeline, gateways)
    if serving:
        specs = {}
        for gw in gateways:
            try:
                specs[gw["metadata"]["name"]] = GatewaySpec.model_validate(gw.get("spec") or {})
            except ValidationError:
                continue
        serving = tuple(
            ServingGateway(
                name=g.name,
                agents=g.agents,
                pipelines=frozenset(
                    p["metadata"]["name"]
                    for p in selected_pipelines(specs[g.name].pipelines, tuple(pipelines))
                ),
            )
            for g in serving
        )
    gateway_exists = None
    if spec.gateway_ref is not None:
        gateway_exists = any(g["metadata"]["name"] == spec.gateway_ref.name for g in gateways)
    return PipelineInputs(
        pipeline=pipeline,
        revisions=tuple(r for r in revisions if owned_by(r, meta["uid"])),
        orphans=tuple(r for r in revisions if not r["metadata"].get("ownerReferences")),
        now=now,
        agents=agents,
        pipeline_refs={p["metadata"]["name"]: _refs_of(p) for p in pipelines},
        gateways=serving,
        gateway_exists=gateway_exists,
        retained=retained or {},
    )


async def reconcile_pipeline(rt: Runtime, namespace: str, name: str) -> int | None:
    """Make revisions and status match the Pipeline; returns the latest revision number."""
    return await revisioned.reconcile_revisioned(
        rt, "Pipeline", namespace, name, resolve_pipeline, render_pipeline
    )


def reconcile_pipelines_in(rt: Runtime, namespace: str) -> None:
    """Request a reconcile of every Pipeline of ``namespace`` (an Agent, Gateway or
    Pipeline changed what they call or where they are served); coalesced by the runtime."""
    for ns, name in sorted(rt.known.get("Pipeline", set())):
        if ns == namespace:
            rt.request("Pipeline", ns, name, reconcile_pipeline)


def calls(pipeline: dict[str, Any], kind: str, name: str) -> bool:
    """Whether a Pipeline's steps call the ``kind`` named ``name`` (read from the wire
    form: a cheap test over every cached Pipeline)."""
    spec = pipeline.get("spec") or {}
    steps = list(spec.get("steps") or [])
    for block, key in (
        ("parallel", "aggregator"),
        ("ensemble", "aggregator"),
        ("router", "classifier"),
        ("supervisor", "supervisor"),
    ):
        extra = (spec.get(block) or {}).get(key)
        if extra:
            steps.append(extra)
    ref = "agentRef" if kind == "Agent" else "pipelineRef"
    return any((s.get(ref) or {}).get("name") == name for s in steps)


def reconcile_pipelines_calling(rt: Runtime, namespace: str, kind: str, name: str) -> None:
    """Request a reconcile of the Pipelines whose steps call the Agent or Pipeline
    ``name`` (it appeared, changed or went); every Pipeline when there is no cache."""
    cache = rt.kube.cache
    if cache is None:
        reconcile_pipelines_in(rt, namespace)
        return
    for pipeline in cache.list("Pipeline", namespace, where=lambda p: calls(dict(p), kind, name)):
        rt.request("Pipeline", namespace, pipeline["metadata"]["name"], reconcile_pipeline)
