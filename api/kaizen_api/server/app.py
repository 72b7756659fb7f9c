"""The FastAPI application: routes under /api/v1, problem+json errors, the audit
middleware, the body size limit, and the shared state (database, keys, Kubernetes
client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kaizen_api import __version__
from kaizen_api.server import audit, console, openapi, policies, problems
from kaizen_api.server.access import PrincipalCache
from kaizen_api.server.audit import AuditWriter
from kaizen_api.server.cache import TTLCache
from kaizen_api.server.db import engine_for, migrate_for
from kaizen_api.server.kube import Kube
from kaizen_api.server.limits import BodyLimit
from kaizen_api.server.ratelimit import SlidingWindow
from kaizen_api.server.routes import audit as audit_routes
from kaizen_api.server.routes import (
    auth,
    budgets,
    keys,
    orgs,
    resources,
    usage,
    workspaces,
)
from kaizen_api.server.routes import policies as policy_routes
from kaizen_api.server.routes import webhooks as webhook_routes
from kaizen_api.server.security import PasswordWork, SigningKeys
from kaizen_api.server.settings import Settings
from kaizen_api.server.state import AppState
from kaizen_api.server.throttle import AuthThrottle
from kaizen_api.server.usage import UsageConsumer, UsageStore
from kaizen_api.server.watch import Watcher
from kaizen_api.server.webhooks import Deliverer


def create_app(settings: Settings, *, run_migrations: bool = True) -> FastAPI:
    """The facade for ``settings`` (migrations run at start-up unless told not to)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            migrate_for(settings.database_url, settings.migration_database_url)
        engine = engine_for(settings.database_url)
        kube = Kube.for_settings(settings)
        writer = AuditWriter(engine, max_backlog=settings.audit_max_backlog)
        app.state.kaizen = AppState(
            settings=settings,
            engine=engine,
            keys=SigningKeys.load(settings.jwt_key_dir),
            kube=kube,
            key_limiter=SlidingWindow(engine, "api-key", settings.api_key_requests_per_minute),
            auth_throttle=AuthThrottle(
                engine, settings.auth_failure_limit, settings.auth_failure_window_seconds
            ),
            audit=writer,
            anonymous_audit=(
                SlidingWindow(engine, "anon-audit", settings.anonymous_audit_limit)
                if settings.anonymous_audit_limit > 0
                else None
            ),
            user_limiter=SlidingWindow(engine, "user", settings.user_requests_per_minute),
            register_limiter=(
                SlidingWindow(
                    engine, "register", settings.register_limit, settings.register_window_seconds
                )
                if settings.register_limit > 0
                else None
            ),
            passwords=PasswordWork(
                settings.password_hash_concurrency, settings.password_hash_wait_seconds
            ),
            principals=PrincipalCache(),
            accesses=TTLCache(),
            policies=policies.PolicyCache(settings.policy_refresh_seconds),
        )
        deliverer = Deliverer(engine, settings.webhooks)
        watcher = Watcher(engine, kube, on_new=deliverer.wake)
        if settings.webhooks.deliver:
            deliverer.start()
        if settings.webhooks.watch:
            watcher.start()
        consumer = (
            UsageConsumer(
                UsageStore(engine),
                settings.usage_redis_url,
                claim_idle_ms=settings.usage_claim_idle_ms,
                retention_days=settings.usage_retention_days,
            )
            if settings.usage_redis_url
            else None
        )
        if consumer is not None:
            consumer.start()
        try:
            yield
        finally:
            if consumer is not None:
                consumer.stop()
            await watcher.stop()
            await deliverer.stop()
            writer.close()  # records kept through a database outage: a last try
            await kube.aclose()
            engine.dispose()

    app = FastAPI(
        title="Kaizen Studio API",
        version=__version__,
        description="Organizations, workspaces and the Kaizen Studio resources in them. "
        "Every resource call runs on Kubernetes as the caller (impersonation). "
        "Errors are RFC 9457 problem+json.",
        lifespan=lifespan,
    )
    # The modules' routes go straight into the app's route list (their routers carry the
    # /api/v1 prefix and the problem responses): FastAPI 0.165 matches an included router
    # lazily, candidate by candidate, and that cost a get a tenth of its CPU. Workspaces
    # come before the resources' /{kind}. (Routes built this way do not see
    # app.dependency_overrides; nothing here uses overrides.)
    for module in (
        auth,
        orgs,
        keys,
        webhook_routes,
        workspaces,
        policy_routes,
        resources,
        audit_routes,
        usage,
        budgets,
    ):
        app.router.routes.extend(module.router.routes)
    app.include_router(auth.jwks_router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    console.install(app, settings.console_dir)  # last: every API route matches first
    problems.install(app)
    policies.install(app, settings)  # permission checks see the request
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    audit.install(app)  # outermost: requests refused by the body limit are audited too
    openapi.install(app)  # links between operations (create -> get/replace/delete)
    return app
