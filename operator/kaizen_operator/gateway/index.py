"""Which Gateways select or serve which Agents, as the Gateway watch last showed them.

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
from kaizen_api.v1alpha1.gateway import AgentSelection
from kaizen_operator.gateway.render import selector_matches


def revisions_in_use(gateway: dict[str, Any]) -> frozenset[tuple[str, int]]:
    """(agent, revision) pairs a Gateway serves (its status) or is to serve (its
    spec.promotedRevisions, written before the Gateway controller gets to it)."""
    served = (gateway.get("status") or {}).get("servedRevisions") or []
    promoted = (gateway.get("spec") or {}).get("promotedRevisions") or []
    return frozenset(
        (str(s.get("agent")), int(s.get("revision") or 0)) for s in (*served, *promoted)
    )


@dataclass(frozen=True)
class GatewayEntry:
    """What the index keeps of one Gateway: its agent selection and served agents."""

    names: frozenset[str] | None
    selector: LabelSelector | None
    served: frozenset[str]
    served_revisions: frozenset[tuple[str, int]] = frozenset()

    def wants(self, agent: dict[str, Any]) -> bool:
        """True when the Gateway selects or currently serves ``agent``."""
        meta = agent["metadata"]
        if meta["name"] in self.served:
            return True
        if self.names is not None:
            return meta["name"] in self.names
        return selector_matches(self.selector or LabelSelector(), meta.get("labels") or {})


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
        try:
            selection = AgentSelection.model_validate((gateway.get("spec") or {}).get("agents"))
        except ValidationError:
            entries.pop(meta["name"], None)  # its own reconcile reports the bad spec
            return
        served = (gateway.get("status") or {}).get("servedRevisions") or []
        entries[meta["name"]] = GatewayEntry(
            names=frozenset(selection.names) if selection.names is not None else None,
            selector=selection.selector,
            served=frozenset(str(s.get("agent")) for s in served),
            served_revisions=revisions_in_use(gateway),
        )

    def wanting(self, namespace: str, agent: dict[str, Any]) -> list[str]:
        """Names of the Gateways in ``namespace`` that select or serve ``agent``."""
        entries = self.by_namespace.get(namespace, {})
        return sorted(name for name, entry in entries.items() if entry.wants(agent))

    def serving(self, namespace: str, agent: str) -> dict[int, list[str]]:
        """Revisions of ``agent`` that Gateways of ``namespace`` serve -> those Gateways."""
        found: dict[int, list[str]] = {}
        for name, entry in sorted(self.by_namespace.get(namespace, {}).items()):
            for served_agent, revision in entry.served_revisions:
                if served_agent == agent:
                    found.setdefault(revision, []).append(name)
        return found
