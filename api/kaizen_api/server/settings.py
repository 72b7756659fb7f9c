"""The facade's settings, read once from the environment (each has a flag too)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kaizen_api.server.guards import WorkspacePolicy
from kaizen_api.server.webhook_config import WebhookConfig


def console_dir() -> Path | None:
    """$KAIZEN_CONSOLE_DIR, else the checkout's console/dist (a development install);
    None when neither holds a built console (index.html)."""
    configured = os.environ.get("KAIZEN_CONSOLE_DIR")
    folder = (
        Path(configured) if configured else Path(__file__).resolve().parents[3] / "console/dist"
    )
    return folder if (folder / "index.html").is_file() else None


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    """Where the facade keeps its state and how it signs and limits."""

    database_url: str = "sqlite:///kaizen-api.db"
    # Migrations run as this role (the tables' owner) when set; the facade itself then
    # connects as database_url's role, granted only what it needs (audit: INSERT, SELECT).
    migration_database_url: str | None = None
    kubeconfig: str | None = None
    jwt_key_dir: Path | None = None  # *.pem RSA private keys; the newest (by name) signs
    issuer: str = "kaizen-studio"
    audience: str = "kaizen-api"
    access_ttl_seconds: int = 900
    refresh_ttl_seconds: int = 14 * 24 * 3600
    api_key_requests_per_minute: int = 600
    audit_retention_days: int = 90
    max_body_bytes: int = 1_048_576  # larger request bodies are answered 413
    # Failed authentications (logins per address and per account, bearer tokens and API
    # keys per address) allowed per window; then 429 until the oldest failure ages out.
    auth_failure_limit: int = 10
    auth_failure_window_seconds: int = 300
    # Requests per minute of one user with bearer tokens (API keys have their own).
    user_requests_per_minute: int = 1200
    # Registrations per client address per window (0: unlimited).
    register_limit: int = 20
    register_window_seconds: int = 3600
    # Password hashes (argon2, 64 MiB each) at once per process, and how long a request
    # waits for one before 503: 4 x 64 MiB fits the chart's 512Mi.
    password_hash_concurrency: int = 4
    password_hash_wait_seconds: float = 2.0
    # Proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client;
    # empty: none, the peer address is the client.
    trusted_proxies: str = ""
    # Audit records of unauthenticated requests per client address per minute (0: all).
    anonymous_audit_limit: int = 60
    # Audit records kept through a database outage; past it mutations are refused 503.
    audit_max_backlog: int = 10_000
    # How long a workspace's creation and a resource create wait for the quota controller
    # to count a new quota ("status unknown for quota") before answering anyway / 503.
    quota_wait_seconds: int = 30
    # Pod Security level, compute quota, LimitRange and egress of workspace namespaces.
    workspace_policy: WorkspacePolicy = field(default_factory=WorkspacePolicy)
    # The ClusterRole (the chart's <release>-api-workspace) the facade binds to its own
    # ServiceAccount ("<namespace>:<name>") in each workspace namespace: what it may do
    # there by impersonation (H4). Empty: no such binding (a facade running with wider
    # credentials, as in development).
    workspace_role: str = ""
    service_account: str = ""
    # The ClusterRole (the chart's <release>-operator-secrets: get secrets) the facade
    # binds to the operator's ServiceAccount ("<namespace>:<name>") in each workspace
    # namespace: the operator reads Secrets only where it is bound. Empty: no binding.
    operator_secrets_role: str = ""
    operator_service_account: str = ""
    # Plans anyone may choose for a new organization (comma-separated); every other
    # plan, and every plan change, is set by a platform administrator (M8): the emails
    # of platform_admins (comma-separated), who need not be members.
    self_service_plans: str = "free"
    platform_admins: str = ""
    # The built web console served at / (None: not served); from_env: $KAIZEN_CONSOLE_DIR
    # or the checkout's console/dist when built.
    console_dir: Path | None = None
    # Webhook retries, leases and the resource watch (KAIZEN_WEBHOOK_*).
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    # Access policies: how stale another replica's change may be here (seconds).
    policy_refresh_seconds: float = 1.0
    # TEST ONLY: take a policy's request time from the X-Kaizen-Test-Time header.
    policy_test_clock: bool = False
    # Usage metering: the Redis the gateways append usage records to (empty: no
    # consumer in this process), how long raw records are kept (rollups stay), and how
    # long a record read by a replica that died waits before another takes it over.
    usage_redis_url: str = ""
    usage_retention_days: int = 90
    usage_claim_idle_ms: int = 30_000

    def is_platform_admin(self, email: str) -> bool:
        admins = {a.strip().lower() for a in self.platform_admins.split(",") if a.strip()}
        return email.lower() in admins

    def self_service(self, plan: str) -> bool:
        return plan in {p.strip() for p in self.self_service_plans.split(",")}

    @classmethod
    def from_env(cls) -> Settings:
        """KAIZEN_DATABASE_URL, KUBECONFIG, KAIZEN_JWT_KEY_DIR, ... (docs/facade.md lists all)"""
        keys = os.environ.get("KAIZEN_JWT_KEY_DIR")
        return cls(
            database_url=os.environ.get("KAIZEN_DATABASE_URL", cls.database_url),
            migration_database_url=os.environ.get("KAIZEN_MIGRATION_DATABASE_URL") or None,
            kubeconfig=os.environ.get("KUBECONFIG"),
            jwt_key_dir=Path(keys) if keys else None,
            access_ttl_seconds=_int("KAIZEN_ACCESS_TTL", cls.access_ttl_seconds),
            refresh_ttl_seconds=_int("KAIZEN_REFRESH_TTL", cls.refresh_ttl_seconds),
            api_key_requests_per_minute=_int(
                "KAIZEN_API_KEY_RATE_LIMIT", cls.api_key_requests_per_minute
            ),
            audit_retention_days=_int("KAIZEN_AUDIT_RETENTION_DAYS", cls.audit_retention_days),
            max_body_bytes=_int("KAIZEN_MAX_BODY_BYTES", cls.max_body_bytes),
            auth_failure_limit=_int("KAIZEN_AUTH_FAILURE_LIMIT", cls.auth_failure_limit),
            auth_failure_window_seconds=_int(
                "KAIZEN_AUTH_FAILURE_WINDOW", cls.auth_failure_window_seconds
            ),
            quota_wait_seconds=_int("KAIZEN_QUOTA_WAIT", cls.quota_wait_seconds),
            user_requests_per_minute=_int("KAIZEN_USER_RATE_LIMIT", cls.user_requests_per_minute),
            register_limit=_int("KAIZEN_REGISTER_LIMIT", cls.register_limit),
            register_window_seconds=_int("KAIZEN_REGISTER_WINDOW", cls.register_window_seconds),
            password_hash_concurrency=_int(
                "KAIZEN_PASSWORD_HASH_CONCURRENCY", cls.password_hash_concurrency
            ),
            password_hash_wait_seconds=float(
                os.environ.get("KAIZEN_PASSWORD_HASH_WAIT", cls.password_hash_wait_seconds)
            ),
            trusted_proxies=os.environ.get("KAIZEN_TRUSTED_PROXIES", cls.trusted_proxies),
            anonymous_audit_limit=_int("KAIZEN_ANONYMOUS_AUDIT_LIMIT", cls.anonymous_audit_limit),
            audit_max_backlog=_int("KAIZEN_AUDIT_MAX_BACKLOG", cls.audit_max_backlog),
            workspace_policy=WorkspacePolicy.from_json(
                os.environ.get("KAIZEN_WORKSPACE_POLICY", "")
            ),
            workspace_role=os.environ.get("KAIZEN_WORKSPACE_ROLE", cls.workspace_role),
            service_account=os.environ.get("KAIZEN_SERVICE_ACCOUNT", cls.service_account),
            operator_secrets_role=os.environ.get(
                "KAIZEN_OPERATOR_SECRETS_ROLE", cls.operator_secrets_role
            ),
            operator_service_account=os.environ.get(
                "KAIZEN_OPERATOR_SERVICE_ACCOUNT", cls.operator_service_account
            ),
            self_service_plans=os.environ.get("KAIZEN_SELF_SERVICE_PLANS", cls.self_service_plans),
            platform_admins=os.environ.get("KAIZEN_PLATFORM_ADMINS", cls.platform_admins),
            console_dir=console_dir(),
            webhooks=WebhookConfig.from_env(),
            policy_refresh_seconds=float(
                os.environ.get("KAIZEN_POLICY_REFRESH", cls.policy_refresh_seconds)
            ),
            policy_test_clock=os.environ.get("KAIZEN_POLICY_TEST_CLOCK", "") == "1",
            usage_redis_url=os.environ.get("KAIZEN_USAGE_REDIS_URL", cls.usage_redis_url),
            usage_retention_days=_int("KAIZEN_USAGE_RETENTION_DAYS", cls.usage_retention_days),
            usage_claim_idle_ms=_int("KAIZEN_USAGE_CLAIM_IDLE_MS", cls.usage_claim_idle_ms),
        )
