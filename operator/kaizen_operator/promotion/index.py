"""Which unfinished Promotions target which Agent or Pipeline revisions, as the
Promotion watch last showed them: an Agent or Pipeline never prunes a revision that one
of them is about to serve."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaizen_api.v1alpha1.promotion import TERMINAL_PHASES, promotion_target


@dataclass
class PromotionIndex:
    """Unfinished Promotions by namespace and name -> (kind, name, revision)."""

    by_namespace: dict[str, dict[str, tuple[str, str, int]]] = field(default_factory=dict)

    @staticmethod
    def target_of(promotion: dict[str, Any]) -> tuple[str, str, int] | None:
        """(kind, name, revision) an unfinished Promotion targets; None once it ended."""
        spec = promotion.get("spec") or {}
        target = promotion_target(spec)
        revision = spec.get("revision")
        if (promotion.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return None
        return (*target, revision) if target and isinstance(revision, int) else None

    def observe(self, event_type: str | None, promotion: dict[str, Any]) -> None:
        """Record a watch event of a Promotion (DELETED or an ended phase forgets it)."""
        meta = promotion["metadata"]
        entries = self.by_namespace.setdefault(meta["namespace"], {})
        target = self.target_of(promotion)
        if event_type == "DELETED" or target is None:
            entries.pop(meta["name"], None)
        else:
            entries[meta["name"]] = target

    def targeting(self, namespace: str, target: str, kind: str = "Agent") -> dict[int, list[str]]:
        """Revisions of ``target`` (an Agent, or a ``kind``) that unfinished Promotions
        target -> those Promotions."""
        found: dict[int, list[str]] = {}
        for name, (k, n, revision) in sorted(self.by_namespace.get(namespace, {}).items()):
            if (k, n) == (kind, target):
                found.setdefault(revision, []).append(name)
        return found
