"""Both storage back ends the facade supports are real servers/files, not stand-ins."""

from __future__ import annotations

import sqlalchemy as sa


def test_database_round_trips_rows(database_url: str) -> None:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"))
        conn.execute(sa.text("INSERT INTO t (id, name) VALUES (1, 'agent')"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM t WHERE id = 1")).scalar_one() == "agent"
        if engine.dialect.name == "postgresql":
            assert "PostgreSQL" in conn.execute(sa.text("SELECT version()")).scalar_one()
    engine.dispose()


def test_migrations_build_the_schema_the_models_describe(database_url: str) -> None:
    """Alembic's head and the SQLModel tables agree (a model changed without a migration
    would fail here, not at a user's upgrade)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    import kaizen_api.server.models  # registers the tables
    import kaizen_api.server.webhook_tables  # noqa: F401 - and the event model's
    from kaizen_api.server.db import engine_for, migrate

    engine = engine_for(database_url)
    migrate(engine)
    with engine.connect() as conn:
        drift = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert drift == []
