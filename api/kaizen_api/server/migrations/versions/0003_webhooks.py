"""events, webhook subscriptions, deliveries and their attempts, watch cursors

Revision ID: 0003_webhooks
Revises: 0002
Create Date: 2026-12-05 08:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003_webhooks"
down_revision = "0002"
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", S(length=64), nullable=False),
        sa.Column("org_id", S(), nullable=False),
        sa.Column("workspace_id", S(length=32), nullable=True),
        sa.Column("type", S(length=100), nullable=False),
        sa.Column("source", S(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_events_org_id", "events", ["org_id"])
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_index("ix_events_source", "events", ["source"])
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", S(), nullable=False),
        sa.Column("org_id", S(), nullable=False),
        sa.Column("workspace_id", S(), nullable=True),
        sa.Column("url", S(length=2048), nullable=False),
        sa.Column("description", S(length=300), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("secret", S(length=100), nullable=False),
        sa.Column("previous_secret", S(length=100), nullable=True),
        sa.Column("previous_secret_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", S(length=500), nullable=False),
        sa.Column("failing_since", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"]),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_subscriptions_org_id", "webhook_subscriptions", ["org_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("subscription_id", S(), nullable=False),
        sa.Column("event_id", S(length=64), nullable=False),
        sa.Column("status", S(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("last_attempt_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", S(length=500), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscription_id"], ["webhook_subscriptions.id"]),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription_id", "event_id"),
    )
    op.create_index(
        "ix_webhook_deliveries_subscription_id", "webhook_deliveries", ["subscription_id"]
    )
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("delivery_id", BIGINT, nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("error", S(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])
    op.create_table(
        "watch_cursors",
        sa.Column("kind", S(length=64), nullable=False),
        sa.Column("resource_version", S(length=64), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kind"),
    )


def downgrade() -> None:
    op.drop_table("watch_cursors")
    op.drop_index("ix_webhook_attempts_delivery_id", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_subscription_id", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_subscriptions_org_id", table_name="webhook_subscriptions")
    op.drop_table("webhook_subscriptions")
    op.drop_index("ix_events_source", table_name="events")
    op.drop_index("ix_events_created_at", table_name="events")
    op.drop_index("ix_events_org_id", table_name="events")
    op.drop_table("events")
