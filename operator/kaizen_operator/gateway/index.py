"""Which Gateways select or serve which Agents and Pipelines, as the Gateway watch last
showed them.

An Agent event must reach the Gateways that select or serve it. Listing every Gateway
of the namespace on each Agent event costs O(Agents x Gateways) reads and parses (5,000
Agents and 500 Gateways make 2.5 million); this index answers from memory instead.
A Gateway the index has not seen yet is reconciled by its own create handler anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kaizen_api.v1alpha1.common import LabelSelector
from kaizen_api.v1alpha1.gateway import AgentSelection, PipelineSelection
from kaizen_operator.gateway.render import selector_matches

# kind -> (status list, spec list, the entries' name key)
_IN_USE = {
    "Agent": ("servedRevisions", "promotedRevisions", "agent"),
    "Pipeline": ("servedPipelineRevisions", "promotedPipelineRevisions", "pipeline"),
}


def revisions_in_use(gateway: dict[str, Any], kind: str = "Agent") -> frozenset[tuple[str, int]]:
    """(name, revision) pairs of ``kind`` a Gateway serves (its status) or is to serve
    (its spec's promoted revisions, written before the Gateway controller gets to it)."""
    status_key, spec_key, name_key = _IN_USE[kind]
    served = (gateway.get("status") or {}).get(status_key) or []
    promoted = (gateway.get("spec") or {}).get(spec_key) or []
    return frozenset(
        (str(s.get(name_key)), int(s.get("revision") or 0)) for s in (*served, *promoted)
    )


def pinned_in_use(gateway: dict[str, Any]) -> frozenset[tuple[str, int, str]]:
    """(agent, revision, pipeline) for each agent revision a served pipeline pins."""
    pinned = (gateway.get("status") or {}).get("pinnedRevisions") or []
    return frozenset(
        (str(p.get("agent")), int(p.get("revision") or 0), str(p.get("pipeline"))) for p in pinned
    )


def pinned_reason(pipeline: str, gateway: str) -> str:
    """Why an Agent revision is retained while a pipeline pins it."""
    return f"pinned by Pipeline {pipeline!r} served by Gateway {gateway!r}"


@dataclass(frozen=True)
class GatewayEntry:
    """What the index keeps of one Gateway: its agent selection and served agents."""

    names: frozenset[str] | None
    selector: LabelSelector | None
    served: frozenset[str]
    served_revisions: frozenset[tuple[str, int]] = frozenset()
    # Pipelines: None selection means the Gateway serves none.
    pipeline_names: frozenset[str] | None = None
    pipeline_selector: LabelSelector | None = None
    selects_pipelines: bool = False
    served_pipelines: frozenset[str] = frozenset()
    served_pipeline_revisions: frozenset[tuple[str, int]] = frozenset()
    pinned: frozenset[tuple[str, int, str]] = frozenset()

    def wants(self, agent: dict[str, Any]) -> bool:
        """True when the Gateway selects or currently serves ``agent`` (or pins it)."""
        meta = agent["metadata"]
        if meta["name"] in self.served or any(p[0] == meta["name"] for p in self.pinned):
            return True
        if self.names is not None:
            return meta["name"] in self.names
        return selector_matches(self.selector or LabelSelector(), meta.get("labels") or {})

    def wants_pipeline(self, pipeline: dict[str, Any]) -> bool:
        """True when the Gateway selects or currently serves ``pipeline``."""
        meta = pipeline["metadata"]
        if meta["name"] in self.served_pipelines:
            return True
        if not self.selects_pipelines:
            return False
        if self.pipeline_names is not None:
            return meta["name"] in self.pipeline_names
        return selector_matches(self.pipeline_selector or LabelSelector(), meta.get("labels") or {})


@dataclass
class GatewayIndex:
    """Gateways by namespace and name."""

    by_namespace: dict[str, dict[str, GatewayEntry]] = field(default_factory=dict)

    def observe(self, event_type: str | None, gateway: dict[str, Any]) -> None:
        """Record a watch event of a Gateway (DELETED forgets it)."""
        meta = gateway["metadata"]
        entries = self.by_namespace.setdefault(meta["namespace"], {})
        if event_type == "DELETED":
            entries.pop(meta["name"], None)
            return
        spec = gateway.get("spec") or {}
        try:
            selection = AgentSelection.model_validate(spec.get("agents"))
            pipelines = (
                PipelineSelection.model_validate(spec["pipelines"])
                if spec.get("pipelines") is not None
                else None
            )
        except ValidationError:
            entries.pop(meta["name"], None)  # its own reconcile reports the bad spec
            return
        status = gateway.get("status") or {}
        served = status.get("servedRevisions") or []
        served_pipelines = status.get("servedPipelineRevisions") or []
        entries[meta["name"]] = GatewayEntry(
            names=frozenset(selection.names) if selection.names is not None else None,
            selector=selection.selector,
            served=frozenset(str(s.get("agent")) for s in served),
            served_revisions=revisions_in_use(gateway),
            pipeline_names=frozenset(pipelines.names)
            if pipelines is not None and pipelines.names is not None
            else None,
            pipeline_selector=pipelines.selector if pipelines is not None else None,
            selects_pipelines=pipelines is not None,
            served_pipelines=frozenset(str(s.get("pipeline")) for s in served_pipelines),
            served_pipeline_revisions=revisions_in_use(gateway, "Pipeline"),
            pinned=pinned_in_use(gateway),
        )

    def wanting(self, namespace: str, agent: dict[str, Any]) -> list[str]:
        """Names of the Gateways in ``namespace`` that select or serve ``agent``."""
        entries = self.by_namespace.get(namespace, {})
        return sorted(name for name, entry in entries.items() if entry.wants(agent))

    def wanting_pipeline(self, namespace: str, pipeline: dict[str, Any]) -> list[str]:
        """Names of the Gateways in ``namespace`` that select or serve ``pipeline``."""
        entries = self.by_namespace.get(namespace, {})
        return sorted(n for n, entry in entries.items() if entry.wants_pipeline(pipeline))

    def serving(self, namespace: str, target: str, kind: str = "Agent") -> dict[int, list[str]]:
        """Revisions of ``target`` (an Agent, or a ``kind``) that Gateways of
        ``namespace`` serve -> those Gateways."""
        found: dict[int, list[str]] = {}
        for name, entry in sorted(self.by_namespace.get(namespace, {}).items()):
            in_use = entry.served_revisions if kind == "Agent" else entry.served_pipeline_revisions
            for served, revision in in_use:
                if served == target:
                    found.setdefault(revision, []).append(name)
        return found

    def pinning(self, namespace: str, agent: str) -> dict[int, list[str]]:
        """Revisions of ``agent`` that pipelines served in ``namespace`` pin -> why."""
        found: dict[int, list[str]] = {}
        for name, entry in sorted(self.by_namespace.get(namespace, {}).items()):
            for pinned_agent, revision, pipeline in sorted(entry.pinned):
                if pinned_agent == agent:
                    found.setdefault(revision, []).append(pinned_reason(pipeline, name))
        return found
