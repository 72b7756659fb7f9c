"""The facade's own tables (SQLModel): organizations, users, memberships, teams,
workspaces, API keys, refresh tokens, the append-only audit log and the rate-limit hits
every replica shares.

Kubernetes holds the resources themselves; these tables hold who may do what.
Alembic migrations (``migrations/``) create them; the models are their shape.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"

    id: str = Field(default_factory=new_id, primary_key=True)
    slug: str = Field(index=True, unique=True, max_length=20)
    name: str = Field(max_length=200)
    plan: str = Field(default="free", max_length=20)
    created_at: datetime = Field(default_factory=utcnow)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = Field(default_factory=new_id, primary_key=True)
    email: str = Field(index=True, unique=True, max_length=320)
    name: str = Field(default="", max_length=200)
    password_hash: str = Field(max_length=300)
    created_at: datetime = Field(default_factory=utcnow)
    disabled: bool = False


class Membership(SQLModel, table=True):
    """A user's role in an organization."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("org_id", "user_id"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    org_id: str = Field(foreign_key="organizations.id", index=True)
    user_id: str = Field(foreign_key="users.id", index=True)
    role: str = Field(max_length=30)


class Team(SQLModel, table=True):
    """A group of an organization's users; becomes a Kubernetes group."""

    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    org_id: str = Field(foreign_key="organizations.id", index=True)
    name: str = Field(max_length=40)


class TeamMember(SQLModel, table=True):
    __tablename__ = "team_members"
    __table_args__ = (UniqueConstraint("team_id", "user_id"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    team_id: str = Field(foreign_key="teams.id", index=True)
    user_id: str = Field(foreign_key="users.id", index=True)


class Workspace(SQLModel, table=True):
    """A namespace of an organization."""

    __tablename__ = "workspaces"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    org_id: str = Field(foreign_key="organizations.id", index=True)
    name: str = Field(max_length=30)
    namespace: str = Field(unique=True, max_length=63)
    created_at: datetime = Field(default_factory=utcnow)


class WorkspaceMember(SQLModel, table=True):
    """A user or a team with a role (admin, developer, viewer) in one workspace."""

    __tablename__ = "workspace_members"
    __table_args__ = (UniqueConstraint("workspace_id", "subject_kind", "subject_id"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    workspace_id: str = Field(foreign_key="workspaces.id", index=True)
    subject_kind: str = Field(max_length=10)  # user | team
    subject_id: str = Field(max_length=32)
    role: str = Field(max_length=20)


class Invitation(SQLModel, table=True):
    __tablename__ = "invitations"

    id: str = Field(default_factory=new_id, primary_key=True)
    org_id: str = Field(foreign_key="organizations.id", index=True)
    email: str = Field(max_length=320)
    role: str = Field(max_length=30)
    token_hash: str = Field(index=True, unique=True, max_length=64)
    invited_by: str = Field(foreign_key="users.id")
    expires_at: datetime
    accepted_at: datetime | None = None


class ApiKey(SQLModel, table=True):
    """``ksk_<prefix>_<secret>``: only a hash of the secret is stored."""

    __tablename__ = "api_keys"

    id: str = Field(default_factory=new_id, primary_key=True)
    prefix: str = Field(index=True, unique=True, max_length=16)
    secret_hash: str = Field(max_length=64)
    name: str = Field(max_length=100)
    org_id: str = Field(foreign_key="organizations.id", index=True)
    workspace_id: str | None = Field(default=None, foreign_key="workspaces.id")
    user_id: str = Field(foreign_key="users.id")
    permissions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class RefreshToken(SQLModel, table=True):
    """One issued refresh token (by its JWT id); a family is one login's chain."""

    __tablename__ = "refresh_tokens"

    jti: str = Field(primary_key=True, max_length=32)
    family: str = Field(index=True, max_length=32)
    user_id: str = Field(foreign_key="users.id", index=True)
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None


class AuditRecord(SQLModel, table=True):
    """One mutating request. Append-only: PostgreSQL refuses UPDATE and DELETE."""

    __tablename__ = "audit_records"

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(default_factory=utcnow, index=True)
    org: str | None = Field(default=None, index=True, max_length=32)  # organization slug
    actor: str = Field(max_length=320)
    key_id: str | None = Field(default=None, max_length=32)
    action: str = Field(max_length=100)
    resource: str = Field(max_length=500)
    outcome: int
    request_id: str = Field(max_length=64)
    ip: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=300)


class RateHit(SQLModel, table=True):
    """One counted hit of a rate limit (an API key's request, a failed authentication),
    shared by every replica; see ``ratelimit``. Rows past their window are deleted."""

    __tablename__ = "rate_hits"
    __table_args__ = (Index("ix_rate_hits_window", "limiter", "key", "at"),)

    # BIGINT: a busy facade makes billions of hits over its life (SQLite: its rowid).
    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    limiter: str = Field(max_length=32)
    key: str = Field(max_length=400)
    at: float  # seconds since the epoch


class AccessPolicy(SQLModel, table=True):
    """One named access policy of an organization: Cedar text (see policy_engine)."""

    __tablename__ = "access_policies"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    org_id: str = Field(foreign_key="organizations.id", index=True)
    name: str = Field(max_length=63)
    description: str = Field(default="", max_length=1000)
    cedar: str
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    updated_by: str = Field(default="", max_length=320)


class PolicySetState(SQLModel, table=True):
    """An organization's policy mode and the version of its policy set: every change
    bumps it, so each facade replica knows cheaply when its compiled copy is stale."""

    __tablename__ = "policy_sets"

    org_id: str = Field(foreign_key="organizations.id", primary_key=True)
    mode: str = Field(default="restrict", max_length=20)
    version: int = 0


class UsageRow(SQLModel, table=True):
    """One request a gateway served (kaizen_api.metering.UsageRecord), stored once per
    (namespace, uid) whatever Redis redelivers. Attributed to the organization and
    workspace of the namespace whose stream carried it. Kept for the raw retention."""

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint("namespace", "uid"),
        Index("ix_usage_records_org_time", "org_id", "time"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    uid: str = Field(max_length=64)
    namespace: str = Field(max_length=63)
    org_id: str | None = Field(default=None, max_length=32)  # None: no workspace's namespace
    workspace: str = Field(default="", max_length=30)
    gateway: str = Field(max_length=253)
    kind: str = Field(max_length=10)
    name: str = Field(max_length=253)
    revision: int
    caller: str = Field(max_length=253)
    model: str = Field(max_length=253)
    request_id: str = Field(max_length=253)
    time: datetime
    tokens_in: int = Field(sa_column=Column(BigInteger, nullable=False))
    tokens_out: int = Field(sa_column=Column(BigInteger, nullable=False))
    tool_calls: int
    latency_ms: float
    cost_micro_usd: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: int
    outcome: str = Field(max_length=253)


class UsageRollup(SQLModel, table=True):
    """Usage summed per hour or day and per every dimension the usage API filters on;
    kept for the billing history after raw records are purged. Updated in the same
    transaction as the raw record's insert, so each record is counted once."""

    __tablename__ = "usage_rollups"
    __table_args__ = (
        UniqueConstraint(
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
        Index("ix_usage_rollups_org", "org_id", "period", "start"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )
    period: str = Field(max_length=5)  # hour | day
    start: datetime
    org_id: str = Field(max_length=32)
    workspace: str = Field(max_length=30)
    gateway: str = Field(max_length=253)
    kind: str = Field(max_length=10)
    name: str = Field(max_length=253)
    caller: str = Field(max_length=253)
    model: str = Field(max_length=253)
    outcome: str = Field(max_length=253)
    requests: int = Field(sa_column=Column(BigInteger, nullable=False))
    tokens_in: int = Field(sa_column=Column(BigInteger, nullable=False))
    tokens_out: int = Field(sa_column=Column(BigInteger, nullable=False))
    tool_calls: int = Field(sa_column=Column(BigInteger, nullable=False))
    latency_ms: float  # summed: divided by requests for the mean
    cost_micro_usd: int = Field(sa_column=Column(BigInteger, nullable=False))


class Budget(SQLModel, table=True):
    """A monthly (calendar month, UTC) token or cost budget of an organization, one of
    its workspaces, an agent or a caller (API key hash). Used up, the gateways refuse
    the requests it covers (402) until the month ends or the limit is raised."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    org_id: str = Field(foreign_key="organizations.id", index=True)
    name: str = Field(max_length=63)
    scope: str = Field(max_length=10)  # org | workspace | agent | key
    workspace: str = Field(default="", max_length=30)  # "" for every workspace
    target: str = Field(default="", max_length=253)  # agent name or caller
    metric: str = Field(max_length=10)  # tokens | cost
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))  # tokens or micro-USD
    thresholds: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class BudgetEvent(SQLModel, table=True):
    """A budget crossed one of its thresholds (percent) in a month, or an organization
    went past a plan's monthly limit (budget_id ``plan:<metric>``): recorded once."""

    __tablename__ = "budget_events"
    __table_args__ = (UniqueConstraint("org_id", "budget_id", "period", "threshold"),)

    id: int | None = Field(default=None, primary_key=True)
    budget_id: str = Field(max_length=32, index=True)
    org_id: str = Field(max_length=32, index=True)
    period: str = Field(max_length=7)  # YYYY-MM
    threshold: int
    spent: int = Field(sa_column=Column(BigInteger, nullable=False))
    at: datetime = Field(default_factory=utcnow)


class BillingPeriod(SQLModel, table=True):
    """A closed month of an organization: its frozen summary (usage, cost, plan,
    overage) and the SHA-256 of that document, never recomputed once stored."""

    __tablename__ = "billing_periods"
    __table_args__ = (UniqueConstraint("org_id", "period"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    org_id: str = Field(foreign_key="organizations.id", index=True)
    period: str = Field(max_length=7)  # YYYY-MM
    closed_at: datetime = Field(default_factory=utcnow)
    summary: dict[str, object] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    digest: str = Field(max_length=64)
