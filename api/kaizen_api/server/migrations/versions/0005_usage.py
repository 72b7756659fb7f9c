"""usage records (raw, once per namespace and uid) and their hourly/daily rollups

Revision ID: 0005_usage
Revises: 0004_policies
Create Date: 2026-12-05 08:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005_usage"
down_revision = "0004_policies"
branch_labels = None
depends_on = None


def _text(name: str, length: int, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sqlmodel.sql.sqltypes.AutoString(length=length), nullable=nullable)


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "usage_records",
        _id(),
        _text("uid", 64),
        _text("namespace", 63),
        _text("org_id", 32, nullable=True),
        _text("workspace", 30),
        _text("gateway", 253),
        _text("kind", 10),
        _text("name", 253),
        sa.Column("revision", sa.Integer(), nullable=False),
        _text("caller", 253),
        _text("model", 253),
        _text("request_id", 253),
        sa.Column("time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("tokens_in", sa.BigInteger(), nullable=False),
        sa.Column("tokens_out", sa.BigInteger(), nullable=False),
        sa.Column("tool_calls", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("cost_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        _text("outcome", 253),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace", "uid"),
    )
    op.create_index("ix_usage_records_org_time", "usage_records", ["org_id", "time"], unique=False)
    op.create_table(
        "usage_rollups",
        _id(),
        _text("period", 5),
        sa.Column("start", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        _text("org_id", 32),
        _text("workspace", 30),
        _text("gateway", 253),
        _text("kind", 10),
        _text("name", 253),
        _text("caller", 253),
        _text("model", 253),
        _text("outcome", 253),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("tokens_in", sa.BigInteger(), nullable=False),
        sa.Column("tokens_out", sa.BigInteger(), nullable=False),
        sa.Column("tool_calls", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("cost_micro_usd", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "period",
            "start",
            "org_id",
            "workspace",
            "gateway",
            "kind",
            "name",
            "caller",
            "model",
            "outcome",
            name="uq_usage_rollups_bucket",
        ),
    )
    op.create_index(
        "ix_usage_rollups_org", "usage_rollups", ["org_id", "period", "start"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_usage_rollups_org", table_name="usage_rollups")
    op.drop_table("usage_rollups")
    op.drop_index("ix_usage_records_org_time", table_name="usage_records")
    op.drop_table("usage_records")
