"""budgets (monthly token/cost limits per org, workspace, agent or caller) and the
threshold events they and the plans' monthly limits emit

Revision ID: 0006_budgets
Revises: 0005_usage
Create Date: 2026-12-05 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006_budgets"
down_revision = "0005_usage"
branch_labels = None
depends_on = None


def _text(name: str, length: int | None = None) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sqlmodel.sql.sqltypes.AutoString(length=length), nullable=False)


def upgrade() -> None:
    op.create_table(
        "budgets",
        _text("id"),
        _text("org_id"),
        _text("name", 63),
        _text("scope", 10),
        _text("workspace", 30),
        _text("target", 253),
        _text("metric", 10),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "name"),
    )
    op.create_index(op.f("ix_budgets_org_id"), "budgets", ["org_id"], unique=False)
    op.create_table(
        "budget_events",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("budget_id", 32),
        _text("org_id", 32),
        _text("period", 7),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "budget_id", "period", "threshold"),
    )
    op.create_index(
        op.f("ix_budget_events_budget_id"), "budget_events", ["budget_id"], unique=False
    )
    op.create_index(op.f("ix_budget_events_org_id"), "budget_events", ["org_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_budget_events_org_id"), table_name="budget_events")
    op.drop_index(op.f("ix_budget_events_budget_id"), table_name="budget_events")
    op.drop_table("budget_events")
    op.drop_index(op.f("ix_budgets_org_id"), table_name="budgets")
    op.drop_table("budgets")
