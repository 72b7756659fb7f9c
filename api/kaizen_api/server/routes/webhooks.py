"""Webhook subscriptions of an organization: create (the signing secret shown once),
list, change, delete, rotate the secret, send a test event, the delivery log and
manual redelivery. Org owners and admins manage them (``webhooks:*``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, delete, select

from kaizen_api.netguard import DestinationNotAllowed
from kaizen_api.server.access import CurrentPrincipal, OrgAccess
from kaizen_api.server.db import aware, session
from kaizen_api.server.events import EVENT_TYPES, emit_event, valid_filter
from kaizen_api.server.models import Workspace
from kaizen_api.server.problems import API_PREFIX, PROBLEM_RESPONSES, Problem
from kaizen_api.server.routes.orgs import access_to
from kaizen_api.server.state import AppState, app_state
from kaizen_api.server.webhook_tables import (
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from kaizen_api.server.webhooks import check_destination, new_secret

router = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES, tags=["webhooks"])
State = Annotated[AppState, Depends(app_state)]
URL_PATTERN = r"^https?://[^\s]+$"
MAX_OVERLAP_SECONDS = 7 * 24 * 3600


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, pattern=URL_PATTERN, description="Where to POST events.")
    events: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=50,
        description="Event types or patterns (promotion.*, *).",
    )
    workspace: str | None = Field(
        default=None, description="Only this workspace's resource events (none: the whole org)."
    )
    description: str = Field(default="", max_length=300)

    @field_validator("events")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        problems = [p for p in (valid_filter(v) for v in value) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return value


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048, pattern=URL_PATTERN)
    events: list[Annotated[str, Field(max_length=100)]] | None = Field(
        default=None, min_length=1, max_length=50
    )
    description: str | None = Field(default=None, max_length=300)
    active: bool | None = Field(default=None, description="true re-enables a disabled one.")

    @field_validator("events")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        problems = [p for p in (valid_filter(v) for v in value or []) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return value


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    workspace: str | None
    description: str
    active: bool
    disabled_reason: str
    previous_secret_until: datetime | None = Field(
        description="Until when the previous secret also signs (after a rotation)."
    )
    created_at: datetime


class NewSecretOut(WebhookOut):
    secret: str = Field(description="The signing secret, shown this once (whsec_...).")


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_OVERLAP_SECONDS,
        description="How long the old secret keeps signing too (default: a day).",
    )


class AttemptOut(BaseModel):
    at: datetime
    response_code: int | None
    latency_ms: float
    error: str


class DeliveryOut(BaseModel):
    id: int
    event_id: str
    event_type: str
    status: str = Field(description="pending, succeeded or failed (retries used up).")
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    response_code: int | None
    latency_ms: float | None
    error: str
    created_at: datetime
    log: list[AttemptOut] = Field(default_factory=list, description="Every attempt, newest first.")


class EventTypeOut(BaseModel):
    type: str
    description: str


def _out(db: Session, sub: WebhookSubscription) -> WebhookOut:
    ws = db.get(Workspace, sub.workspace_id) if sub.workspace_id else None
    return WebhookOut(
        id=sub.id,
        url=sub.url,
        events=sub.event_types,
        workspace=ws.name if ws else None,
        description=sub.description,
        active=sub.active,
        disabled_reason=sub.disabled_reason,
        previous_secret_until=(
            aware(sub.previous_secret_until) if sub.previous_secret_until else None
        ),
        created_at=aware(sub.created_at),
    )


def _checked_url(url: str, state: AppState) -> str:
    try:
        check_destination(url, state.settings.webhooks)
    except DestinationNotAllowed as exc:
        raise Problem(422, "destination-not-allowed", "Receiver not allowed", str(exc)) from exc
    return url


def _sub(db: Session, access: OrgAccess, webhook_id: str) -> WebhookSubscription:
    sub = db.get(WebhookSubscription, webhook_id)
    if sub is None or sub.org_id != access.org.id:  # another org's id: not found either
        raise Problem(404, "not-found", "No such webhook", webhook_id)
    return sub


@router.get("/webhooks/event-types", response_model=list[EventTypeOut])
def event_types(principal: CurrentPrincipal) -> list[EventTypeOut]:
    """Every event type a subscription can filter on."""
    return [EventTypeOut(type=t, description=d) for t, d in EVENT_TYPES.items()]


@router.post("/orgs/{org}/webhooks", status_code=201, response_model=NewSecretOut)
def create_webhook(
    org: str, body: WebhookIn, principal: CurrentPrincipal, state: State
) -> NewSecretOut:
    """Subscribe a URL to the organization's events; the secret is shown this once."""
    url = _checked_url(body.url, state)
    with session(state.engine) as db:
        access = access_to(db, principal, org, "webhooks:create")
        workspace_id = None
        if body.workspace is not None:
            ws = db.exec(
                select(Workspace).where(
                    Workspace.org_id == access.org.id, Workspace.name == body.workspace
                )
            ).first()
            if ws is None:
                raise Problem(
                    404, "not-found", "No such workspace", f"workspace {body.workspace!r}"
                )
            workspace_id = ws.id
        secret = new_secret()
        sub = WebhookSubscription(
            org_id=access.org.id,
            workspace_id=workspace_id,
            url=url,
            description=body.description,
            event_types=body.events,
            secret=secret,
        )
        db.add(sub)
        db.flush()
        out = _out(db, sub)
    return NewSecretOut(**out.model_dump(), secret=secret)


@router.get("/orgs/{org}/webhooks", response_model=list[WebhookOut])
def list_webhooks(org: str, principal: CurrentPrincipal, state: State) -> list[WebhookOut]:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "webhooks:read")
        subs = db.exec(
            select(WebhookSubscription)
            .where(WebhookSubscription.org_id == access.org.id)
            .order_by(col(WebhookSubscription.created_at))
        ).all()
        return [_out(db, s) for s in subs]


@router.get("/orgs/{org}/webhooks/{webhook_id}", response_model=WebhookOut)
def get_webhook(org: str, webhook_id: str, principal: CurrentPrincipal, state: State) -> WebhookOut:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "webhooks:read")
        return _out(db, _sub(db, access, webhook_id))


@router.patch("/orgs/{org}/webhooks/{webhook_id}", response_model=WebhookOut)
def change_webhook(
    org: str, webhook_id: str, body: WebhookPatch, principal: CurrentPrincipal, state: State
) -> WebhookOut:
    """Change the URL, filters or description; ``active: true`` re-enables."""
    url = _checked_url(body.url, state) if body.url is not None else None
    with session(state.engine) as db:
        access = access_to(db, principal, org, "webhooks:update")
        sub = _sub(db, access, webhook_id)
        if url is not None:
            sub.url = url
        if body.events is not None:
            sub.event_types = body.events
        if body.description is not None:
            sub.description = body.description
        if body.active is not None:
            sub.active = body.active
            if body.active:
                sub.disabled_reason, sub.failing_since = "", None
        db.add(sub)
        db.flush()
        return _out(db, sub)


@router.delete("/orgs/{org}/webhooks/{webhook_id}", status_code=204)
def delete_webhook(
    org: str, webhook_id: str, principal: CurrentPrincipal, state: State
) -> Response:
    """Delete the subscription with its delivery log."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "webhooks:delete")
        sub = _sub(db, access, webhook_id)
        ids = select(WebhookDelivery.id).where(WebhookDelivery.subscription_id == sub.id)
        db.exec(delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(ids)))
        db.exec(delete(WebhookDelivery).where(col(WebhookDelivery.subscription_id) == sub.id))
        db.delete(sub)
    return Response(status_code=204)


@router.post("/orgs/{org}/webhooks/{webhook_id}/rotate", response_model=NewSecretOut)
def rotate_secret(
    org: str,
    webhook_id: str,
    principal: CurrentPrincipal,
    state: State,
    body: RotateIn | None = None,
) -> NewSecretOut:
    """A new signing secret (shown this once); the old one keeps signing alongside it
    for the overlap, so receivers can switch without losing a message."""
    overlap = (
        body.overlap_seconds
        if body is not None and body.overlap_seconds is not None
        else state.settings.webhooks.rotation_overlap_seconds
    )
    with session(state.engine) as db:
        access = access_to(db, principal, org, "webhooks:update")
        sub = _sub(db, access, webhook_id)
        secret = new_secret()
        sub.previous_secret = sub.secret
        sub.previous_secret_until = datetime.now(UTC) + timedelta(seconds=overlap)
        sub.secret = secret
        db.add(sub)
        db.flush()
        out = _out(db, sub)
    return NewSecretOut(**out.model_dump(), secret=secret)


def _delivery_out(db: Session, delivery: WebhookDelivery, event: Event) -> DeliveryOut:
    attempts = db.exec(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id == delivery.id)
        .order_by(col(WebhookAttempt.id).desc())
        .limit(50)
    ).all()
    return DeliveryOut(
        id=int(delivery.id or 0),
        event_id=event.id,
        event_type=event.type,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=aware(delivery.next_attempt_at) if delivery.status == "pending" else None,
        last_attempt_at=aware(delivery.last_attempt_at) if delivery.last_attempt_at else None,
        response_code=delivery.response_code,
        latency_ms=delivery.latency_ms,
        error=delivery.error,
        created_at=aware(delivery.created_at),
        log=[
            AttemptOut(
                at=aware(a.at),
                response_code=a.response_code,
                latency_ms=a.latency_ms,
                error=a.error,
            )
            for a in attempts
        ],
    )


@router.post("/orgs/{org}/webhooks/{webhook_id}/test", status_code=202, response_model=DeliveryOut)
def send_test(org: str, webhook_id: str, principal: CurrentPrincipal, state: State) -> DeliveryOut:
    """Queue a ``webhook.test`` event to this subscription only (even while disabled
    it is recorded; it goes out once the subscription is active)."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "webhooks:update")
        sub = _sub(db, access, webhook_id)
        ident = emit_event(
            db,
            access.org,
            "webhook.test",
            {"webhook": sub.id, "requestedBy": principal.user.email},
            only=sub,
        )
        delivery = db.exec(
            select(WebhookDelivery).where(
                WebhookDelivery.subscription_id == sub.id, WebhookDelivery.event_id == ident
            )
        ).one()
        event = db.get(Event, ident)
        assert event is not None  # noqa: S101 - just written
        return _delivery_out(db, delivery, event)


@router.get("/orgs/{org}/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryOut])
def list_deliveries(
    org: str,
    webhook_id: str,
    principal: CurrentPrincipal,
    state: State,
    status: Annotated[str | None, Query(pattern="^(pending|succeeded|failed)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryOut]:
    """The delivery log, newest first: status, attempts, response code, latency."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "webhooks:read")
        sub = _sub(db, access, webhook_id)
        query: Any = (
            select(WebhookDelivery, Event)
            .join(Event, col(Event.id) == col(WebhookDelivery.event_id))
            .where(WebhookDelivery.subscription_id == sub.id)
        )
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        rows = db.exec(query.order_by(col(WebhookDelivery.id).desc()).limit(limit)).all()
        return [_delivery_out(db, d, e) for d, e in rows]


@router.post(
    "/orgs/{org}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
)
def redeliver(
    org: str,
    webhook_id: str,
    delivery_id: Annotated[int, Path(ge=1, le=2**62)],
    principal: CurrentPrincipal,
    state: State,
) -> DeliveryOut:
    """Send a delivery again now, with a fresh retry schedule (same ``webhook-id``)."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "webhooks:update")
        sub = _sub(db, access, webhook_id)
        delivery = db.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.subscription_id != sub.id:
            raise Problem(404, "not-found", "No such delivery", str(delivery_id))
        delivery.status, delivery.attempts = "pending", 0
        delivery.next_attempt_at = datetime.now(UTC)
        db.add(delivery)
        db.flush()
        event = db.get(Event, delivery.event_id)
        assert event is not None  # noqa: S101 - foreign key
        return _delivery_out(db, delivery, event)
