"""Database engine and migrations (SQLite file by default, PostgreSQL via psycopg 3)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, make_url, text
from sqlmodel import Session, create_engine

CONNECT_TIMEOUT_SECONDS = 5
log = logging.getLogger("kaizen_api.db")


def aware(value: datetime) -> datetime:
    """A time read back from the database, in UTC (SQLite drops the time zone)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def engine_for(url: str) -> Engine:
    """An engine for ``url``; ``postgresql://`` URLs use psycopg 3."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        # The facade's background workers (usage consumer, budget publisher, webhook
        # watch and deliveries) write beside the requests: a writer waits for SQLite's
        # single write lock up to 30 s instead of failing at sqlite3's default 5 s.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _: Any) -> None:
            cursor = conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: no fsync per commit, still consistent after a crash of the
            # process (PostgreSQL is the production store).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # pre-ping: connections the server dropped (a restart) are replaced, not handed out;
    # the timeouts bound how long a request waits while the server is away, so it
    # answers 503 (problems.database_unavailable) instead of hanging.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_timeout=CONNECT_TIMEOUT_SECONDS * 2,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "kaizen_api.server:migrations")
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def runtime_role(url: str) -> str | None:
    """The PostgreSQL role the facade connects as (None for SQLite)."""
    parsed = make_url(url)
    return parsed.username if parsed.get_backend_name() == "postgresql" else None


def grant_runtime(migration_engine: Engine, role: str) -> None:
    """Give the facade's runtime ``role`` what it needs and no more: rows of every
    table, but on audit_records only INSERT and SELECT, and the schema version read-only.
    Not an owner, it cannot drop or disable the append-only triggers either."""
    quoted = '"' + role.replace('"', '""') + '"'
    with migration_engine.begin() as db:
        for statement in (
            f"GRANT USAGE ON SCHEMA public TO {quoted}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}",
            f"REVOKE UPDATE, DELETE, TRUNCATE ON audit_records FROM {quoted}",
            f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM {quoted}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
            f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {quoted}",
        ):
            db.execute(text(statement))


def migrate_for(database_url: str, migration_url: str | None) -> None:
    """Migrate as the migration role when there is one (and grant the runtime role its
    rights), else as the runtime role itself (SQLite, development)."""
    if not migration_url or migration_url == database_url:
        engine = engine_for(database_url)
        try:
            migrate(engine)
            warn_if_owner(engine)
        finally:
            engine.dispose()
        return
    owner = engine_for(migration_url)
    try:
        migrate(owner)
        role = runtime_role(database_url)
        if role is not None:
            grant_runtime(owner, role)
    finally:
        owner.dispose()


def warn_if_owner(engine: Engine) -> None:
    """A facade that owns audit_records could drop its append-only triggers: say so."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as db:
        owns = db.execute(
            text(
                "SELECT pg_has_role(current_user, tableowner, 'MEMBER') "
                "FROM pg_tables WHERE tablename = 'audit_records'"
            )
        ).scalar()
    if owns:
        log.warning(
            "the facade's database role owns audit_records and could drop its append-only "
            "triggers; set KAIZEN_MIGRATION_DATABASE_URL to run migrations as the owner "
            "and connect as a runtime role (docs/security.md)"
        )


@contextmanager
def session(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as s:
        try:
            yield s
            s.commit()
        except Exception:
            s.rollback()
            raise
