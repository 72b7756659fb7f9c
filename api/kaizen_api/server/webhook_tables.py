"""The tables of the event model and the webhook outbox (SQLModel): events, webhook
subscriptions, their deliveries with every attempt, and the watch cursors that let the
facade resume its apiserver watches after a restart.

One row per event (its id is deterministic, so an event derived twice, by two replicas
or after a relist, is stored once); one delivery row per (subscription, event), which
replicas claim with ``FOR UPDATE SKIP LOCKED`` (see ``webhooks``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from kaizen_api.server.models import new_id, utcnow


class Event(SQLModel, table=True):
    """One platform event of an organization; ``payload`` is what receivers get."""

    __tablename__ = "events"

    id: str = Field(primary_key=True, max_length=64)  # evt_<hash of its source>
    org_id: str = Field(foreign_key="organizations.id", index=True)
    workspace_id: str | None = Field(default=None, max_length=32)
    type: str = Field(max_length=100)
    source: str | None = Field(default=None, index=True, max_length=64)  # a resource's uid
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class WebhookSubscription(SQLModel, table=True):
    """Where an organization's events go. ``secret`` signs; during a rotation's overlap
    ``previous_secret`` signs too, until ``previous_secret_until``."""

    __tablename__ = "webhook_subscriptions"

    id: str = Field(default_factory=new_id, primary_key=True)
    org_id: str = Field(foreign_key="organizations.id", index=True)
    workspace_id: str | None = Field(default=None, foreign_key="workspaces.id")
    url: str = Field(max_length=2048)
    description: str = Field(default="", max_length=300)
    event_types: list[str] = Field(sa_column=Column(JSON, nullable=False))
    secret: str = Field(max_length=100)
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_secret_until: datetime | None = None
    active: bool = True
    disabled_reason: str = Field(default="", max_length=500)
    failing_since: datetime | None = None  # first failed attempt since the last success
    created_at: datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    """One event to one subscription: pending (``next_attempt_at`` is when it is due, or
    when a claim's lease ends), succeeded or failed (retries used up)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    subscription_id: str = Field(foreign_key="webhook_subscriptions.id", index=True)
    event_id: str = Field(foreign_key="events.id", max_length=64)
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0  # since the last (re)delivery began
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_attempt_at: datetime | None = None
    response_code: int | None = None
    latency_ms: float | None = None
    error: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=utcnow)


class WebhookAttempt(SQLModel, table=True):
    """One POST of a delivery: the log the API shows."""

    __tablename__ = "webhook_attempts"

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    delivery_id: int = Field(
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), nullable=False, index=True)
    )
    at: datetime = Field(default_factory=utcnow)
    response_code: int | None = None
    latency_ms: float = 0.0
    error: str = Field(default="", max_length=500)


class WatchCursor(SQLModel, table=True):
    """The resourceVersion up to which one kind's watch has turned changes into events."""

    __tablename__ = "watch_cursors"

    kind: str = Field(primary_key=True, max_length=64)
    resource_version: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow)
