"""rate-limit hits shared by every replica

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_hits",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("limiter", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rate_hits_window", "rate_hits", ["limiter", "key", "at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # One round trip per hit instead of five (BEGIN, lock, insert, count, COMMIT):
        # the same rule as ratelimit.SlidingWindow's SQLite path, which the tests run on
        # both databases. Each statement here takes a fresh snapshot (READ COMMITTED),
        # so the count after the lock sees the hits committed while it waited.
        op.execute(
            """
            CREATE FUNCTION kaizen_rate_hit(
              p_limiter text, p_key text, p_now double precision,
              p_window double precision, p_limit integer
            ) RETURNS integer LANGUAGE plpgsql AS $$
            DECLARE
              earlier integer;
              freed_by double precision;
            BEGIN
              PERFORM pg_advisory_xact_lock(hashtextextended(p_limiter || ':' || p_key, 0));
              SELECT count(*) INTO earlier FROM rate_hits
                WHERE limiter = p_limiter AND key = p_key AND at > p_now - p_window;
              IF earlier < p_limit THEN
                INSERT INTO rate_hits (limiter, key, at) VALUES (p_limiter, p_key, p_now);
                RETURN 0;
              END IF;
              SELECT at INTO freed_by FROM rate_hits
                WHERE limiter = p_limiter AND key = p_key AND at > p_now - p_window
                ORDER BY at OFFSET earlier - p_limit LIMIT 1;
              RETURN greatest(1, ceil(freed_by + p_window - p_now))::integer;
            END $$
            """
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION kaizen_rate_hit")
    op.drop_index("ix_rate_hits_window", table_name="rate_hits")
    op.drop_table("rate_hits")
