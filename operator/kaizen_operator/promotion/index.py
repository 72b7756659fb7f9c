"""Which unfinished Promotions target which Agent revisions, as the Promotion watch
last showed them: an Agent never prunes a revision that one of them is about to serve."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaizen_api.v1alpha1.promotion import TERMINAL_PHASES


@dataclass
class PromotionIndex:
    """Unfinished Promotions by namespace and name -> (agent, revision)."""

    by_namespace: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)

    @staticmethod
    def target_of(promotion: dict[str, Any]) -> tuple[str, int] | None:
        """(agent, revision) an unfinished Promotion targets; None once it ended."""
        spec = promotion.get("spec") or {}
        agent = (spec.get("agentRef") or {}).get("name")
        revision = spec.get("revision")
        if (promotion.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return None
        return (str(agent), revision) if agent and isinstance(revision, int) else None

    def observe(self, event_type: str | None, promotion: dict[str, Any]) -> None:
        """Record a watch event of a Promotion (DELETED or an ended phase forgets it)."""
        meta = promotion["metadata"]
        entries = self.by_namespace.setdefault(meta["namespace"], {})
        target = self.target_of(promotion)
        if event_type == "DELETED" or target is None:
            entries.pop(meta["name"], None)
        else:
            entries[meta["name"]] = target

    def targeting(self, namespace: str, agent: str) -> dict[int, list[str]]:
        """Revisions of ``agent`` that unfinished Promotions target -> those Promotions."""
        found: dict[int, list[str]] = {}
        for name, (target, revision) in sorted(self.by_namespace.get(namespace, {}).items()):
            if target == agent:
                found.setdefault(revision, []).append(name)
        return found
