"""One event model for the platform: what happened, to whom it belongs, and its
delivery to the organization's webhook subscriptions.

An event is ``{"type", "timestamp", "data"}`` (the Standard Webhooks payload shape);
its id is derived from its source (a resource's uid and the state that produced it, or
a facade mutation's own id), so deriving it twice stores it once: two facade replicas
watching the same apiserver, or a relist after ``410 Gone``, never duplicate it.

``emit_event`` is the one entry point: the facade's routes call it inside their
transaction (the event and its deliveries commit with the change, an outbox), the
resource watch calls it with the events ``derive`` finds in an object, and the usage
metering calls it for thresholds and closed billing periods.

``derive`` is pure: the events one observed state of an Agent, Pipeline, Gateway,
Promotion or ScalingPolicy implies, each with an id that names that state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import Engine, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from kaizen_api.server.models import Organization, Workspace
from kaizen_api.server.webhook_tables import Event, WebhookDelivery, WebhookSubscription

# Every event type, with what it means (served at GET /api/v1/webhooks/event-types).
EVENT_TYPES: dict[str, str] = {
    "agent.revision.created": "An Agent got a new immutable revision.",
    "agent.revision.archived": "An Agent revision was pruned from its history.",
    "pipeline.revision.created": "A Pipeline got a new immutable revision.",
    "gateway.ready": "A Gateway became Ready.",
    "gateway.degraded": "A Gateway that was Ready no longer is.",
    "promotion.pending": "A Promotion was accepted and waits to start.",
    "promotion.waiting_for_approval": "A Promotion waits for an approver.",
    "promotion.approved": "An approver approved a Promotion.",
    "promotion.progressing": "A Promotion switched traffic and runs its gates.",
    "promotion.verifying": "A Promotion verifies the target after the switch.",
    "promotion.succeeded": "A Promotion ended Succeeded.",
    "promotion.failed": "A Promotion ended Failed (a gate failed; reverted).",
    "promotion.rejected": "A Promotion was rejected by an approver.",
    "promotion.aborted": "A Promotion was aborted.",
    "promotion.errored": "A Promotion ended Errored.",
    "scaling.override.set": "A manual scaling override took effect.",
    "scaling.override.expired": "A manual scaling override lifted at its expiry.",
    "member.added": "A user joined the organization.",
    "member.role_changed": "A member's organization role changed.",
    "member.removed": "A member was removed from the organization.",
    "api_key.created": "An API key was created.",
    "api_key.revoked": "An API key was revoked.",
    "usage.threshold_reached": "An organization's usage crossed a threshold of its plan.",
    "usage.period_closed": "A billing period closed.",
    "webhook.disabled": "A webhook subscription was disabled after persistent failure.",
    "webhook.test": "A test event sent on request.",
}
PHASE_TYPES = {
    "Pending": "promotion.pending",
    "WaitingForApproval": "promotion.waiting_for_approval",
    "Progressing": "promotion.progressing",
    "Verifying": "promotion.verifying",
    "Succeeded": "promotion.succeeded",
    "Failed": "promotion.failed",
    "Rejected": "promotion.rejected",
    "Aborted": "promotion.aborted",
    "Errored": "promotion.errored",
}
FILTER_PATTERN = r"^(\*|[a-z_]+(\.[a-z_]+)*(\.\*)?)$"
MAX_PAYLOAD_BYTES = 64 * 1024  # data beyond this is cut to a summary (see emit_event)


@dataclass(frozen=True)
class Derived:
    """An event a resource's state implies; ``key`` names that state (the event's id
    is made from it), ``after`` a key that must have been emitted first."""

    type: str
    key: str
    data: dict[str, Any]
    after: str | None = None  # the key of an event that must have been recorded first
    after_type: str | None = None  # or: an event of this type of the same resource


def event_id(org_id: str, key: str) -> str:
    """The id of the event of ``key`` in one organization (also its webhook-id)."""
    return "evt_" + hashlib.sha256(f"{org_id}\0{key}".encode()).hexdigest()[:40]


def matches(filters: Iterable[str], type_: str) -> bool:
    """Whether a subscription's filters (``*``, ``promotion.*``, exact types) take
    ``type_``."""
    return any(fnmatchcase(type_, f) for f in filters)


def valid_filter(value: str) -> str | None:
    """Why ``value`` is no event filter (None: it is one that matches some type)."""
    if not re.match(FILTER_PATTERN, value):
        return f"{value!r} is not an event type or a pattern like promotion.*"
    if not any(fnmatchcase(t, value) for t in EVENT_TYPES):
        return f"{value!r} matches no event type (GET /api/v1/webhooks/event-types lists them)"
    return None


def envelope(type_: str, data: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    return {"type": type_, "timestamp": (now or datetime.now(UTC)).isoformat(), "data": data}


def _insert_ignore(db: Session, table: Any, values: dict[str, Any]) -> bool:
    """INSERT unless the primary key exists; True when this call inserted the row."""
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - the facade runs on these two
        stmt = insert(table).values(**values)
    # RETURNING, not rowcount: psycopg reports -1 for a statement that inserted nothing.
    return db.execute(stmt.returning(table.c.id)).first() is not None


def emit_event(
    db: Session,
    org: Organization | str,
    type_: str,
    data: dict[str, Any],
    *,
    key: str | None = None,
    workspace: Workspace | None = None,
    only: WebhookSubscription | None = None,
    source: str | None = None,
    deliver: bool = True,
) -> str | None:
    """Record an event of ``org`` (an Organization or its id) in ``db``'s transaction and
    queue one delivery per active subscription that takes it. ``key`` names its source
    (default: a fresh id, for events that happen once); an event whose key was seen
    before is not recorded again (None is returned). ``only``: deliver to that one
    subscription (test events); ``source``: the uid of the resource it is about. The
    event's id otherwise. ``deliver=False`` records it without deliveries (the state a
    watch finds when it starts for the first time: a baseline, not news)."""
    org_id = org if isinstance(org, str) else org.id
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    from kaizen_api.server.models import new_id

    ident = event_id(org_id, key or new_id())
    slug = org.slug if isinstance(org, Organization) else None
    if slug is None:
        found = db.get(Organization, org_id)
        slug = found.slug if found else ""
    body = {"organization": slug, **({"workspace": workspace.name} if workspace else {}), **data}
    payload = envelope(type_, body)
    if len(repr(payload)) > MAX_PAYLOAD_BYTES:
        payload = envelope(type_, {"organization": slug, "truncated": True})
    values = {
        "id": ident,
        "org_id": org_id,
        "workspace_id": workspace.id if workspace else None,
        "type": type_,
        "source": source,
        "payload": payload,
        "created_at": datetime.now(UTC),
    }
    table = Event.__table__  # type: ignore[attr-defined]
    if not _insert_ignore(db, table, values):
        return None
    if not deliver:
        targets: list[WebhookSubscription] = []
    elif only is not None:
        targets = [only]
    else:
        targets = [
            s
            for s in db.exec(
                select(WebhookSubscription).where(
                    WebhookSubscription.org_id == org_id,
                    col(WebhookSubscription.active).is_(True),
                )
            ).all()
            if matches(s.event_types, type_)
            and (
                s.workspace_id is None or (workspace is not None and s.workspace_id == workspace.id)
            )
        ]
    now = datetime.now(UTC)
    for sub in targets:
        db.add(WebhookDelivery(subscription_id=sub.id, event_id=ident, next_attempt_at=now))
    db.flush()
    return ident


def emitted(db: Session, org_id: str, item: Derived, source: str) -> bool:
    """Whether what ``item`` must follow was recorded."""
    if item.after is not None and db.get(Event, event_id(org_id, item.after)) is None:
        return False
    if item.after_type is not None:
        found = db.exec(
            select(Event.id).where(Event.source == source, Event.type == item.after_type).limit(1)
        ).first()
        return found is not None
    return True


def emit_derived(
    db: Session,
    workspace: Workspace,
    source: str,
    events: Iterable[Derived],
    *,
    deliver: bool = True,
) -> int:
    """Record the derived events of a workspace's resource ``source`` (a uid), each
    once; how many were new."""
    org = db.get(Organization, workspace.org_id)
    if org is None:
        return 0
    new = 0
    for item in events:
        if not emitted(db, org.id, item, source):
            continue
        if emit_event(
            db,
            org,
            item.type,
            item.data,
            key=item.key,
            workspace=workspace,
            source=source,
            deliver=deliver,
        ):
            new += 1
    return new


def emit_now(engine: Engine, org: Organization | str, type_: str, data: dict[str, Any]) -> None:
    """:func:`emit_event` in a transaction of its own (callers without a session)."""
    from kaizen_api.server.db import session

    with session(engine) as db:
        emit_event(db, org, type_, data)


# ------------------------------------------------------------------ derivation (pure)


def _ref(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {"kind": kind, "name": meta.get("name", "")}


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _revisions(obj: dict[str, Any], kind: str, prefix: str) -> list[Derived]:
    uid = (obj.get("metadata") or {}).get("uid", "")
    status = obj.get("status") or {}
    latest = status.get("latestRevision")
    kept = {r.get("revision"): r for r in status.get("revisions") or []}
    out: list[Derived] = []
    if isinstance(latest, int):
        record = kept.get(latest) or {}
        out.append(
            Derived(
                f"{prefix}.revision.created",
                f"{uid}:revision:{latest}",
                {
                    **_ref(obj, kind),
                    "revision": latest,
                    "hash": record.get("hash"),
                    "createdAt": record.get("createdAt"),
                },
            )
        )
        if prefix == "agent" and kept:
            # Pruned: older than the oldest kept one, or a gap between kept ones.
            for number in range(max(1, latest - 200), latest):
                if number not in kept:
                    out.append(
                        Derived(
                            "agent.revision.archived",
                            f"{uid}:archived:{number}",
                            {**_ref(obj, kind), "revision": number},
                            after=f"{uid}:revision:{number}",
                        )
                    )
    return out


def _gateway(obj: dict[str, Any]) -> list[Derived]:
    uid = (obj.get("metadata") or {}).get("uid", "")
    ready = _condition(obj, "Ready")
    if ready is None:
        return []
    since = ready.get("lastTransitionTime", "")
    data = {
        **_ref(obj, "Gateway"),
        "reason": ready.get("reason", ""),
        "message": str(ready.get("message", ""))[:1024],
        "since": since,
        "readyReplicas": (obj.get("status") or {}).get("readyReplicas"),
    }
    if ready.get("status") == "True":
        return [Derived("gateway.ready", f"{uid}:ready:{since}", data)]
    # Degraded only once it had been ready: a new Gateway rolling out is not degraded.
    return [
        Derived("gateway.degraded", f"{uid}:degraded:{since}", data, after_type="gateway.ready")
    ]


def _promotion(obj: dict[str, Any]) -> list[Derived]:
    meta = obj.get("metadata") or {}
    uid = meta.get("uid", "")
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    base = {
        **_ref(obj, "Promotion"),
        "agent": (spec.get("agentRef") or {}).get("name"),
        "revision": spec.get("revision"),
        "from": spec.get("from"),
        "to": spec.get("to"),
    }
    out: list[Derived] = []
    for record in status.get("approvals") or []:
        if record.get("decision") == "Approved":
            out.append(
                Derived(
                    "promotion.approved",
                    f"{uid}:approval:{record.get('user')}",
                    {**base, "user": record.get("user"), "reason": record.get("reason", "")},
                )
            )
    phase = status.get("phase")
    if phase in PHASE_TYPES:
        out.append(
            Derived(
                PHASE_TYPES[phase],
                f"{uid}:phase:{phase}",
                {**base, "phase": phase, "message": str(status.get("message") or "")[:1024]},
            )
        )
    return out


def _scaling(obj: dict[str, Any], now: datetime) -> list[Derived]:
    meta = obj.get("metadata") or {}
    uid, generation = meta.get("uid", ""), meta.get("generation")
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    target = (spec.get("targetRef") or {}).get("name")
    active = status.get("activeOverride")
    wanted = spec.get("override")
    if active:
        return [
            Derived(
                "scaling.override.set",
                f"{uid}:override:{generation}",
                {**_ref(obj, "ScalingPolicy"), "gateway": target, **active},
            )
        ]
    expires = (wanted or {}).get("expiresAt")
    if wanted and expires:
        try:
            ended = datetime.fromisoformat(str(expires).replace("Z", "+00:00")) <= now
        except ValueError:
            ended = False
        if ended:
            return [
                Derived(
                    "scaling.override.expired",
                    f"{uid}:override-expired:{generation}",
                    {**_ref(obj, "ScalingPolicy"), "gateway": target, **wanted},
                    after_type="scaling.override.set",
                )
            ]
    return []


def derive(kind: str, obj: dict[str, Any], now: datetime | None = None) -> list[Derived]:
    """The events the observed state ``obj`` of ``kind`` implies (pure)."""
    if kind == "Agent":
        return _revisions(obj, "Agent", "agent")
    if kind == "Pipeline":
        return _revisions(obj, "Pipeline", "pipeline")
    if kind == "Gateway":
        return _gateway(obj)
    if kind == "Promotion":
        return _promotion(obj)
    if kind == "ScalingPolicy":
        return _scaling(obj, now or datetime.now(UTC))
    return []
