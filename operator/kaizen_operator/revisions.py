"""Immutable content-hashed revisions of a kind (Agent, Pipeline): the part every
revisioned kind shares (pure: no client, no clock).

A revision is a ControllerRevision owned by its object, named and labelled through
:mod:`kaizen_operator.names`, holding the object's *content* fields. A new revision is
made when the content hash changes; the newest ``revisionHistoryLimit`` are kept, and
so is every older one a Gateway serves or an unfinished Promotion targets (``retained``);
orphaned revisions restored by ``kaizen export`` are adopted when their content still
matches their hash label.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kaizen_operator import names
from kaizen_operator.conditions import timestamp


@dataclass(frozen=True)
class RevisionedKind:
    """How one kind is revisioned."""

    kind: str
    label: str  # the ControllerRevision label holding the owner's name
    content_fields: tuple[str, ...]
    revision_name: Callable[[str, int], str]
    labels: Callable[[str], dict[str, str]]

    def content_of(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """The revisioned part of a wire-form spec."""
        return {k: spec[k] for k in self.content_fields if k in spec}

    def content_hash(self, spec: Mapping[str, Any]) -> str:
        """Stable hash of the content (canonical JSON)."""
        canonical = json.dumps(self.content_of(spec), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def selector(self, owner: str) -> str:
        """The label selector of ``owner``'s revisions."""
        return f"{self.label}={owner}"


def revision_number(rev: Mapping[str, Any]) -> int:
    """The revision number of a ControllerRevision."""
    return int(rev.get("revision", 0))


def revision_hash(rev: Mapping[str, Any]) -> str:
    """The content hash label of a ControllerRevision."""
    return str((rev["metadata"].get("labels") or {}).get(names.REVISION_HASH_LABEL, ""))


def render_revision(
    kind: RevisionedKind, owner: dict[str, Any], spec: Mapping[str, Any], number: int
) -> dict[str, Any]:
    """The ControllerRevision that freezes ``spec``'s content as revision ``number``."""
    meta = owner["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": kind.revision_name(meta["name"], number),
            "namespace": meta["namespace"],
            "labels": {
                **kind.labels(meta["name"]),
                names.REVISION_HASH_LABEL: kind.content_hash(spec),
            },
            "ownerReferences": [names.owner_reference(owner)],
        },
        "data": {"spec": kind.content_of(spec)},
        "revision": number,
    }


def revision_record(
    rev: Mapping[str, Any], now: datetime, retained_by: tuple[str, ...]
) -> dict[str, Any]:
    """The status.revisions entry (RevisionRecord) of a ControllerRevision."""
    record = {
        "revision": revision_number(rev),
        "name": rev["metadata"]["name"],
        "hash": revision_hash(rev),
        "createdAt": rev["metadata"].get("creationTimestamp") or timestamp(now),
    }
    if retained_by:
        record["retainedBy"] = list(retained_by)
    return record


def split_history(
    revisions: list[dict[str, Any]], limit: int, retained: Mapping[int, tuple[str, ...]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[int]]:
    """(kept, pruned, kept beyond the limit): the newest ``limit`` revisions are kept,
    and so is every older one that ``retained`` names (a Gateway serves it or an
    unfinished Promotion targets it)."""
    old = revisions[:-limit] if len(revisions) > limit else []
    beyond = {revision_number(r) for r in old if retained.get(revision_number(r))}
    pruned = [r for r in old if revision_number(r) not in beyond]
    kept = [r for r in revisions if r not in pruned]
    return kept, pruned, beyond


def with_creation_times(status: dict[str, Any], created: dict[str, str]) -> dict[str, Any]:
    """``status`` with the apiserver's creationTimestamp (``created``: revision name ->
    time) for the revisions just created. The plan can only guess "now" for them, and a
    guess a second off made the next reconcile (every object, after a restart) rewrite
    the status for nothing."""
    revisions = [
        {**r, "createdAt": created.get(r["name"], r["createdAt"])} for r in status["revisions"]
    ]
    return {**status, "revisions": revisions}


def adoptable(kind: RevisionedKind, revision: Mapping[str, Any]) -> bool:
    """Whether an orphaned revision holds what its hash label says (a restored one does;
    one edited by hand since its export does not, and is left alone)."""
    content = (revision.get("data") or {}).get("spec") or {}
    label = revision_hash(revision)
    return bool(label) and label == kind.content_hash(content)


@dataclass(frozen=True)
class RevisionPlan:
    """Revisions to create, adopt and prune, and the status fields they make."""

    create: tuple[dict[str, Any], ...] = ()
    adopt: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    kept: tuple[dict[str, Any], ...] = ()
    latest: int = 0
    records: tuple[dict[str, Any], ...] = field(default=())


def plan_revisions(
    kind: RevisionedKind,
    owner: dict[str, Any],
    spec: Mapping[str, Any],
    revisions: tuple[dict[str, Any], ...],
    orphans: tuple[dict[str, Any], ...],
    retained: Mapping[int, tuple[str, ...]],
    now: datetime,
) -> RevisionPlan:
    """Which revisions ``owner`` (wire-form ``spec``) needs: a new one when its content
    changed, adopted restored ones, and the history pruned to revisionHistoryLimit."""
    digest = kind.content_hash(spec)
    adopted = [r for r in orphans if adoptable(kind, r)]
    existing = sorted((*revisions, *adopted), key=revision_number)
    latest = existing[-1] if existing else None
    create: list[dict[str, Any]] = []
    kept = list(existing)
    if latest is None or revision_hash(latest) != digest:
        # Past every name in use, unadoptable orphans included (their names are taken).
        number = max((revision_number(r) for r in (*existing, *orphans)), default=0) + 1
        revision = render_revision(kind, owner, spec, number)
        create.append(revision)
        kept.append(revision)
    limit = int(spec.get("revisionHistoryLimit", 10))
    kept, pruned, beyond = split_history(kept, limit, retained)
    records = tuple(
        revision_record(
            r,
            now,
            retained.get(revision_number(r), ()) if revision_number(r) in beyond else (),
        )
        for r in kept
    )
    return RevisionPlan(
        create=tuple(create),
        adopt=tuple(r["metadata"]["name"] for r in adopted if r not in pruned),
        delete=tuple(r["metadata"]["name"] for r in pruned),
        kept=tuple(kept),
        latest=revision_number(kept[-1]),
        records=records,
    )


def retention_reasons(
    gateways: Mapping[int, list[str]],
    promotions: Mapping[int, list[str]],
    pinned: Mapping[int, list[str]] | None = None,
) -> dict[int, tuple[str, ...]]:
    """Revision -> why it is retained, from the Gateways serving it, the unfinished
    Promotions targeting it and (agents) the served Pipelines pinning it."""
    reasons: dict[int, list[str]] = {}
    for revision, names_ in gateways.items():
        reasons.setdefault(revision, []).extend(f"served by Gateway {g!r}" for g in names_)
    for revision, names_ in promotions.items():
        reasons.setdefault(revision, []).extend(f"target of Promotion {p!r}" for p in names_)
    for revision, names_ in (pinned or {}).items():
        reasons.setdefault(revision, []).extend(names_)
    return {revision: tuple(why) for revision, why in reasons.items()}
