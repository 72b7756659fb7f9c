"""Entry point of ``kaizen-api``: the multi-tenant REST facade."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import version

import uvicorn

from kaizen_api.server.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """``kaizen-api [serve]`` (default), ``migrate``, ``purge-audit``,
    ``sync-workspaces``, ``close-period`` or ``openapi``."""
    parser = argparse.ArgumentParser(
        prog="kaizen-api",
        description="The multi-tenant REST facade. Settings come from the environment: "
        "KAIZEN_DATABASE_URL (default sqlite:///kaizen-api.db), KUBECONFIG, "
        "KAIZEN_JWT_KEY_DIR, KAIZEN_ACCESS_TTL, KAIZEN_REFRESH_TTL, "
        "KAIZEN_API_KEY_RATE_LIMIT, KAIZEN_AUDIT_RETENTION_DAYS, KAIZEN_MAX_BODY_BYTES, "
        "KAIZEN_AUTH_FAILURE_LIMIT, KAIZEN_AUTH_FAILURE_WINDOW, KAIZEN_QUOTA_WAIT, "
        "KAIZEN_MIGRATION_DATABASE_URL, KAIZEN_TRUSTED_PROXIES, KAIZEN_USER_RATE_LIMIT, "
        "KAIZEN_REGISTER_LIMIT, KAIZEN_REGISTER_WINDOW, KAIZEN_PASSWORD_HASH_CONCURRENCY, "
        "KAIZEN_PASSWORD_HASH_WAIT, KAIZEN_ANONYMOUS_AUDIT_LIMIT, KAIZEN_AUDIT_MAX_BACKLOG, "
        "KAIZEN_WORKSPACE_ROLE, KAIZEN_SERVICE_ACCOUNT, KAIZEN_SELF_SERVICE_PLANS, "
        "KAIZEN_PLATFORM_ADMINS, KAIZEN_CONSOLE_DIR, KAIZEN_USAGE_REDIS_URL, "
        "KAIZEN_USAGE_RETENTION_DAYS, KAIZEN_USAGE_CLAIM_IDLE_MS.",
    )
    parser.add_argument("--version", action="version", version=version("kaizen-studio"))
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate", "purge-audit", "sync-workspaces", "close-period", "openapi"],
        help="sync-workspaces: re-apply every workspace's Namespace, RoleBindings and "
        "quota from the database (after a restore); openapi: write the web console's "
        "OpenAPI document and role tables (console/src/api/)",
    )
    parser.add_argument(
        "--check", action="store_true", help="openapi: fail when the written files are stale."
    )
    parser.add_argument(
        "--out", default=None, help="openapi: the folder to write (default console/src/api)."
    )
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server's job
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-migrate", action="store_true", help="Do not migrate at start-up.")
    parser.add_argument(
        "--period",
        help="close-period: the month to close, YYYY-MM (default: the previous month)",
    )
    parser.add_argument(
        "--adopt",
        action="store_true",
        help="sync-workspaces: also take over namespaces an older version made for the "
        "same organization slug and workspace (no org-id label yet); run once at the "
        "upgrade, with the database known to be intact",
    )
    args = parser.parse_args(argv)
    if args.command == "openapi":  # before logging is set up: only its own lines
        return write_documents(args.out, check=args.check)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    if args.command == "migrate":
        from kaizen_api.server.db import migrate_for

        migrate_for(settings.database_url, settings.migration_database_url)
        return 0
    if args.command == "purge-audit":
        from kaizen_api.server.audit import AuditWriter
        from kaizen_api.server.db import engine_for

        # Deleting needs the owner's role: the runtime role may only insert and read.
        owner_url = settings.migration_database_url or settings.database_url
        removed = AuditWriter(engine_for(owner_url)).purge(settings.audit_retention_days)
        print(f"removed {removed} audit record(s) older than {settings.audit_retention_days} days")
        return 0
    if args.command == "close-period":
        from kaizen_api.server.billing import close_period, previous_period
        from kaizen_api.server.db import engine_for

        period = args.period or previous_period()
        try:
            closed = close_period(engine_for(settings.database_url), period)
        except ValueError as exc:
            print(f"kaizen-api: {exc}", file=sys.stderr)
            return 2
        print(f"closed {period} for {len(closed)} organization(s): {', '.join(closed) or '-'}")
        return 0
    from kubernetes.config import ConfigException

    from kaizen_api.server.app import create_app
    from kaizen_api.server.kube import Kube

    try:  # fail fast with a clear message instead of a traceback at start-up
        Kube(settings.kubeconfig).close()
    except (ConfigException, OSError) as exc:
        print(
            f"kaizen-api: no usable Kubernetes credentials ({exc}); set KUBECONFIG or run "
            "in a Pod with a ServiceAccount",
            file=sys.stderr,
        )
        return 2
    if args.command == "sync-workspaces":
        return sync_workspaces(settings, adopt=args.adopt)
    app = create_app(settings, run_migrations=not args.no_migrate)
    # The audit middleware writes the access log (with request ids); it carries no
    # Authorization header, and query strings never hold secrets here. asyncio's own
    # loop: uvloop measured no faster (A/B, same p50) and has an open fd-reuse bug with
    # aiohttp client connections (MagicStack/uvloop#653).
    # X-Forwarded-For is read only from the trusted proxies (none by default: uvicorn
    # would otherwise trust 127.0.0.1 and $FORWARDED_ALLOW_IPS); the throttles and the
    # audit trail then see the real client address, which no other client can forge.
    trusted = settings.trusted_proxies.strip()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,
        loop="asyncio",
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
    )
    return 0


def write_documents(out: str | None, *, check: bool = False) -> int:
    """Write (or with ``check``, compare) the console's OpenAPI document and role tables."""
    from pathlib import Path

    from kaizen_api.server.openapi import CONSOLE_API_DIR, render_documents

    folder = Path(out or CONSOLE_API_DIR)
    files = render_documents()
    if check:
        stale = [
            str(folder / name)
            for name, text in files.items()
            if not (folder / name).exists() or (folder / name).read_text() != text
        ]
        if stale:
            print("out of date (run `kaizen-api openapi`): " + ", ".join(stale), file=sys.stderr)
            return 1
        print("the console's OpenAPI document is up to date")
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    print(f"wrote {', '.join(files)} to {folder}/")
    return 0


def sync_workspaces(settings: Settings, *, adopt: bool = False) -> int:
    """Write each workspace's Kubernetes side (Namespace, RoleBindings, quota) as the
    database says: after restoring the database into a new or emptied cluster."""
    from sqlmodel import select

    from kaizen_api.server.db import engine_for, session
    from kaizen_api.server.kube import Kube
    from kaizen_api.server.models import Organization, Workspace
    from kaizen_api.server.problems import Problem
    from kaizen_api.server.workspaces import sync_workspace

    kube = Kube.for_settings(settings)
    try:
        with session(engine_for(settings.database_url)) as db:
            rows = db.exec(
                select(Organization, Workspace).where(Workspace.org_id == Organization.id)
            ).all()
            refused = 0
            for org, ws in rows:
                try:
                    sync_workspace(kube, db, org, ws, adopt=adopt)
                except Problem as exc:  # a namespace that is not this organization's
                    refused += 1
                    print(f"workspace {org.slug}/{ws.name}: {exc.detail}", file=sys.stderr)
                    continue
                print(f"workspace {org.slug}/{ws.name}: namespace {ws.namespace} in sync")
    finally:
        kube.close()
    print(f"{len(rows) - refused} workspace(s) in sync, {refused} refused")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
