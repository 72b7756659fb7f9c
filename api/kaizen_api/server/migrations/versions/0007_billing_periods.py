"""billing periods: a closed month's frozen summary per organization

Revision ID: 0007_billing_periods
Revises: 0006_budgets
Create Date: 2026-12-05 09:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007_billing_periods"
down_revision = "0006_budgets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_periods",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("org_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("period", sqlmodel.sql.sqltypes.AutoString(length=7), nullable=False),
        sa.Column("closed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "period"),
    )
    op.create_index(op.f("ix_billing_periods_org_id"), "billing_periods", ["org_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_billing_periods_org_id"), table_name="billing_periods")
    op.drop_table("billing_periods")
