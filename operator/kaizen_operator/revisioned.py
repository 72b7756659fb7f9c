"""The writes every revisioned kind (Agent, Pipeline) shares: which revisions are in use
(retained beyond revisionHistoryLimit), and applying a revision plan (adopt restored
revisions, create new ones, prune old ones, write the status, Events)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import kopf

from kaizen_operator import names
from kaizen_operator.conditions import READY, get_condition
from kaizen_operator.events import record
from kaizen_operator.gateway.index import pinned_in_use, pinned_reason, revisions_in_use
from kaizen_operator.kube import ApiException, Kube
from kaizen_operator.promotion.index import PromotionIndex
from kaizen_operator.revisions import retention_reasons, with_creation_times
from kaizen_operator.runtime import Runtime, write_status

API = "kaizen.studio/v1alpha1"


def retained_revisions(
    rt: Runtime, kind: str, namespace: str, name: str
) -> dict[int, tuple[str, ...]]:
    """Revisions of ``name`` in use, with why: served by a Gateway (the Gateway index),
    targeted by an unfinished Promotion (the Promotion index) or, for an Agent, pinned
    by a served Pipeline. From memory, no reads."""
    return retention_reasons(
        rt.gateways.serving(namespace, name, kind),
        rt.promotions.targeting(namespace, name, kind),
        rt.gateways.pinning(namespace, name) if kind == "Agent" else None,
    )


async def read_retained_revisions(
    kube: Kube, kind: str, namespace: str, name: str
) -> dict[int, tuple[str, ...]]:
    """Like :func:`retained_revisions`, from fresh reads: a pruned revision is gone for
    good, and the watches may not have shown the latest switch yet (the Gateway and
    Promotion watches are separate streams)."""
    gateways: dict[int, list[str]] = {}
    pinned: dict[int, list[str]] = {}
    for gw in await kube.list(API, "Gateway", namespace, fresh=True):
        gw_name = gw["metadata"]["name"]
        for served, revision in revisions_in_use(gw, kind):
            if served == name:
                gateways.setdefault(revision, []).append(gw_name)
        if kind == "Agent":
            for agent, revision, pipeline in sorted(pinned_in_use(gw)):
                if agent == name:
                    pinned.setdefault(revision, []).append(pinned_reason(pipeline, gw_name))
    promotions: dict[int, list[str]] = {}
    for promotion in await kube.list(API, "Promotion", namespace, fresh=True):
        target = PromotionIndex.target_of(promotion)
        if target is not None and target[:2] == (kind, name):
            promotions.setdefault(target[2], []).append(promotion["metadata"]["name"])
    return retention_reasons(gateways, promotions, pinned)


async def write_revisions(
    rt: Runtime,
    owner: dict[str, Any],
    create: Sequence[dict[str, Any]],
    adopt: Sequence[str],
    delete: Sequence[str],
    orphans: Sequence[dict[str, Any]],
    status: dict[str, Any],
) -> None:
    """Apply a revision plan of ``owner`` and write its status; an Event for each
    adopted or created revision and when Ready turns False for a new reason."""
    namespace = owner["metadata"]["namespace"]
    by_name = {r["metadata"]["name"]: r for r in orphans}
    for adopted in adopt:
        try:
            await rt.kube.patch_guarded(
                "apps/v1",
                "ControllerRevision",
                namespace,
                adopted,
                {"metadata": {"ownerReferences": [names.owner_reference(owner)]}},
                by_name[adopted]["metadata"]["resourceVersion"],
            )
        except ApiException as exc:
            if exc.status in (404, 409):  # changed or gone meanwhile: read again
                raise kopf.TemporaryError("restored revision changed", delay=1) from exc
            raise
    if adopt:
        await record(rt.kube, owner, "RevisionsAdopted", "adopted restored " + ", ".join(adopt))
    created: dict[str, str] = {}
    for revision in create:
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
            owner,
            "RevisionCreated",
            f"created revision {revision['revision']} ({revision['metadata']['name']})",
        )
    for old in delete:
        await rt.kube.delete("apps/v1", "ControllerRevision", namespace, old)
    before = get_condition((owner.get("status") or {}).get("conditions"), READY)
    after = get_condition(status["conditions"], READY)
    await write_status(rt.kube, owner, with_creation_times(status, created))
    if after and after["status"] == "False" and (before or {}).get("reason") != after["reason"]:
        await record(rt.kube, owner, after["reason"], after["message"], warning=True)


class RevisionedInputs(Protocol):
    """What a revisioned kind's render inputs carry (a frozen dataclass)."""

    @property
    def orphans(self) -> tuple[dict[str, Any], ...]: ...

    @property
    def retained(self) -> Mapping[int, tuple[str, ...]]: ...


class RevisionedPlan(Protocol):
    """What a revisioned kind's render returns."""

    @property
    def create(self) -> tuple[dict[str, Any], ...]: ...

    @property
    def adopt(self) -> tuple[str, ...]: ...

    @property
    def delete(self) -> tuple[str, ...]: ...

    @property
    def status(self) -> dict[str, Any]: ...

    @property
    def latest_revision(self) -> int | None: ...


Inputs = TypeVar("Inputs", bound=RevisionedInputs)
Resolve = Callable[[Kube, dict[str, Any], datetime, dict[int, tuple[str, ...]]], Awaitable[Inputs]]


async def reconcile_revisioned(
    rt: Runtime,
    kind: str,
    namespace: str,
    name: str,
    resolve: Resolve[Inputs],
    render: Callable[[Inputs], RevisionedPlan],
) -> int | None:
    """The reconcile of a revisioned kind: read, resolve, render, apply; returns the
    latest revision number (None: the object is gone)."""
    async with rt.reconciling(kind, namespace, name):
        obj = await rt.kube.get(API, kind, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None
        inputs = await resolve(
            rt.kube, obj, datetime.now(UTC), retained_revisions(rt, kind, namespace, name)
        )
        plan = render(inputs)
        if plan.delete:  # rare (a new revision past the limit): confirm before deleting
            retained = await read_retained_revisions(rt.kube, kind, namespace, name)
            inputs = replace(inputs, retained=retained)  # type: ignore[type-var]
            plan = render(inputs)
        await write_revisions(
            rt, obj, plan.create, plan.adopt, plan.delete, inputs.orphans, plan.status
        )
        return plan.latest_revision
