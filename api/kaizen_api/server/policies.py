"""Access policies at request time: every permission check that the roles pass
(``OrgAccess.require`` / ``WorkspaceAccess.require``, which every organization route
calls) then asks the organization's Cedar policies (:mod:`policy_engine`).

- The request (address, time, path parameters) reaches the check through a context
  variable set by :class:`PolicyContext`, so the check needs no new arguments and a
  route added later is covered as soon as it checks a permission.
- Each replica keeps each organization's compiled policy set; a change on this
  replica replaces it at once, and other replicas compare the set's version number
  in the database at most every ``policy_refresh_seconds`` (default 1 s).
- Policy administration (``policies:*``) is exempt, so no policy can lock the owners
  out of fixing it; it needs the org_owner or org_admin role.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from kaizen_api.server.db import session
from kaizen_api.server.models import AccessPolicy, PolicySetState, Team, TeamMember
from kaizen_api.server.policy_engine import (
    Circumstances,
    Compiled,
    Decision,
    StoredPolicy,
    Subject,
    Target,
    compile_policies,
    decide,
    decision_key,
)
from kaizen_api.server.problems import Problem

if TYPE_CHECKING:
    from kaizen_api.server.access import Principal, WorkspaceAccess
    from kaizen_api.server.models import Organization
    from kaizen_api.server.state import AppState

log = logging.getLogger("kaizen_api.policies")
_SCOPE: ContextVar[Scope | None] = ContextVar("kaizen_policy_scope", default=None)
TARGET_KEY = "kaizen_policy_target"  # request.state: labels / target env found for the check
TEST_TIME_HEADER = b"x-kaizen-test-time"
UNKNOWN_ADDRESS = "0.0.0.0"  # noqa: S104 - not bound to: a client that is not an IP address (fails IP-range permits)
EXEMPT = "policies:"  # permissions never subject to policies (no lock-out)


class PolicyContext:
    """Makes the current request's ASGI scope visible to permission checks (plain
    ASGI: a context variable, no per-request object)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _SCOPE.set(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            _SCOPE.reset(token)


def install(app: Any, settings: Any) -> None:
    """Add :class:`PolicyContext`; say loudly when the test clock is on."""
    app.add_middleware(PolicyContext)
    if settings.policy_test_clock:
        log.warning(
            "KAIZEN_POLICY_TEST_CLOCK is on: callers choose the time access policies see "
            "(X-Kaizen-Test-Time). Never enable it outside tests."
        )


class outside_request:
    """Permission checks inside it consult no policies (the dry run checks roles alone)."""

    def __enter__(self) -> None:
        self._token = _SCOPE.set(None)

    def __exit__(self, *_: object) -> None:
        _SCOPE.reset(self._token)


@dataclass
class _Entry:
    compiled: Compiled
    checked: float  # monotonic time of the last version check


class PolicyCache:
    """Compiled policy sets by organization id, re-validated against the database's
    version number at most every ``refresh`` seconds; teams of callers for a few
    seconds (only read when a policy names teams)."""

    def __init__(self, refresh: float = 1.0) -> None:
        self.refresh = refresh
        self._sets: dict[str, _Entry] = {}
        self._teams: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}
        self._decisions: dict[tuple[Any, ...], Decision] = {}
        self._lock = threading.Lock()

    def cached(self, org_id: str) -> Compiled | None:
        """The compiled set if still fresh (no I/O)."""
        entry = self._sets.get(org_id)
        if entry is None or time.monotonic() - entry.checked > self.refresh:
            return None
        return entry.compiled

    def get(self, engine: Engine, org_id: str) -> Compiled:
        """The organization's compiled set (reads the version, and on a change the
        policies, from the database when the cached copy is due a check)."""
        fresh = self.cached(org_id)
        if fresh is not None:
            return fresh
        with session(engine) as db:
            row = db.get(PolicySetState, org_id)
            mode, version = (row.mode, row.version) if row else ("restrict", 0)
            entry = self._sets.get(org_id)
            if entry is not None and entry.compiled.version == version:
                compiled = entry.compiled
            else:
                compiled = load(db, org_id, mode, version)
        with self._lock:
            if len(self._sets) > 100_000:
                self._sets.clear()
            self._sets[org_id] = _Entry(compiled, time.monotonic())
        return compiled

    async def aget(self, engine: Engine, org_id: str) -> Compiled:
        """:meth:`get` from the event loop: the database only in the thread pool."""
        fresh = self.cached(org_id)
        if fresh is not None:
            return fresh
        return await run_in_threadpool(self.get, engine, org_id)

    def decision(
        self,
        org_id: str,
        compiled: Compiled,
        subject: Subject,
        target: Target,
        circumstances: Circumstances,
    ) -> Decision:
        """Cedar's decision, remembered by everything it depends on (the set's version
        among it): callers repeat the same requests within a minute, and a remembered
        decision costs a dictionary lookup instead of evaluating every policy."""
        key = (org_id, *decision_key(compiled, subject, target, circumstances))
        found = self._decisions.get(key)
        if found is None:
            found = decide(compiled, subject, target, circumstances)
            with self._lock:
                if len(self._decisions) >= 50_000:
                    self._decisions.clear()
                self._decisions[key] = found
        return found

    def invalidate(self, org_id: str) -> None:
        with self._lock:
            self._sets.pop(org_id, None)
            self._teams.clear()

    def teams(self, engine: Engine, org_id: str, user_id: str) -> tuple[str, ...]:
        key = (org_id, user_id)
        item = self._teams.get(key)
        if item is not None and item[0] > time.monotonic():
            return item[1]
        with session(engine) as db:
            names = tuple(
                sorted(
                    db.exec(
                        select(Team.name)
                        .join(TeamMember, col(TeamMember.team_id) == col(Team.id))
                        .where(Team.org_id == org_id, TeamMember.user_id == user_id)
                    ).all()
                )
            )
        with self._lock:
            if len(self._teams) > 100_000:
                self._teams.clear()
            self._teams[key] = (time.monotonic() + 5.0, names)
        return names


def load(db: Session, org_id: str, mode: str, version: int) -> Compiled:
    """Compile the organization's stored policies."""
    rows = db.exec(
        select(AccessPolicy).where(AccessPolicy.org_id == org_id).order_by(col(AccessPolicy.name))
    ).all()
    return compile_policies((StoredPolicy(r.name, r.cedar) for r in rows), mode, version)


def source_ip(scope: Scope) -> str:
    """The client's address as uvicorn resolved it (X-Forwarded-For only from
    KAIZEN_TRUSTED_PROXIES); anything that is not an IP becomes 0.0.0.0."""
    client = scope.get("client")
    host = client[0] if client else ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return UNKNOWN_ADDRESS


def request_time(scope: Scope, state: AppState) -> datetime:
    """Now, or (only with the test-only setting KAIZEN_POLICY_TEST_CLOCK) the time
    the request names in X-Kaizen-Test-Time."""
    if state.settings.policy_test_clock:
        for name, value in scope.get("headers", ()):
            if name == TEST_TIME_HEADER:
                try:
                    parsed = datetime.fromisoformat(value.decode("latin-1"))
                except ValueError as exc:
                    raise Problem(
                        400, "invalid-test-time", "Bad X-Kaizen-Test-Time", str(exc)
                    ) from exc
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _team_names(groups: tuple[str, ...], org: str) -> tuple[str, ...]:
    prefix = f"kaizen:team:{org}:"
    return tuple(sorted(g.removeprefix(prefix) for g in groups if g.startswith(prefix)))


def enforce(
    principal: Principal,
    org: Organization,
    org_role: str,
    permission: str,
    workspace: WorkspaceAccess | None = None,
) -> None:
    """403 ``policy-denied`` (naming the policy) when the organization's policies
    refuse a request its roles allowed. Called by every permission check; outside a
    request, and for policy administration, it does nothing."""
    scope = _SCOPE.get()
    if scope is None or permission.startswith(EXEMPT):
        return
    state: AppState = scope["app"].state.kaizen
    cache = state.policies
    compiled = cache.cached(org.id)
    if compiled is None:
        compiled = cache.get(state.engine, org.id)  # on the loop only if prepare() was not called
    if compiled.trivial:
        return
    params: Mapping[str, Any] = scope.get("path_params") or {}
    found: Mapping[str, Any] = scope.get("state", {}).get(TARGET_KEY) or {}
    if workspace is not None:
        teams = _team_names(workspace.caller.groups, org.slug)
    else:
        teams = cache.teams(state.engine, org.id, principal.user.id)
    key = principal.key
    subject = Subject(
        id=principal.user.id,
        email=principal.user.email.lower(),
        role=org_role,
        workspace_role=(workspace.role or "") if workspace else "",
        teams=teams,
        key_scopes=tuple(key.permissions) if key is not None else None,
        key_workspace=_key_workspace(scope, workspace, key),
    )
    kind = permission.partition(":")[0]
    target = Target(
        kind=kind,
        name=str(
            params.get("name")
            or params.get("team")
            or params.get("key_id")
            or params.get("user_id")
            or ""
        ),
        workspace=workspace.workspace.name if workspace else str(params.get("ws") or ""),
        labels=found.get("labels") or {},
        target_environment=str(found.get("targetEnvironment") or ""),
    )
    circumstances = Circumstances(
        permission=permission,
        method=scope.get("method", ""),
        now=request_time(scope, state),
        source_ip=source_ip(scope),
    )
    decision = cache.decision(org.id, compiled, subject, target, circumstances)
    if not decision.allowed:
        raise denial(decision, compiled, permission, target)


def _key_workspace(scope: Scope, workspace: WorkspaceAccess | None, key: Any) -> str:
    if key is None or key.workspace_id is None:
        return ""
    if workspace is not None and workspace.workspace.id == key.workspace_id:
        return workspace.workspace.name
    return str(key.workspace_id)  # another workspace's id: never equal to a name asked for


def denial(decision: Decision, compiled: Compiled, permission: str, target: Target) -> Problem:
    """The problem+json of a policy denial: which policy, on what."""
    what = f"{permission} on {target.kind}" + (f"/{target.name}" if target.name else "")
    where = f" in workspace {target.workspace!r}" if target.workspace else ""
    if decision.reason == "not-permitted":
        detail = (
            f"no policy permits {what}{where}; this organization requires a permit "
            "(policy mode permit-required)"
        )
    elif decision.reason == "error":
        detail = f"policy {', '.join(decision.policies)} could not be evaluated for {what}{where}"
    else:
        detail = f"policy {', '.join(decision.policies)} forbids {what}{where}"
    extra: dict[str, Any] = {"policies": list(decision.policies), "mode": compiled.mode}
    if decision.errors:
        extra["errors"] = list(decision.errors)
    return Problem(403, "policy-denied", "Denied by an access policy", detail, **extra)


async def prepare(
    state: AppState,
    access: WorkspaceAccess,
    permission: str,
    name: str | None,
    body: Mapping[str, Any] | None = None,
) -> None:
    """Before a workspace resource's check: make the policy set fresh without blocking
    the event loop, and, only when some policy reads them, find the object's labels
    (from the body, else the stored object, read as the caller) and a Promotion's
    target environment (its target Gateway's ``spec.environment``)."""
    compiled = await state.policies.aget(state.engine, access.org.org.id)
    if compiled.trivial or not (compiled.needs_labels or compiled.needs_target):
        return
    scope = _SCOPE.get()
    if scope is None:
        return
    kind = permission.partition(":")[0]
    obj: Mapping[str, Any] = body or {}
    labels: dict[str, Any] = {}
    if name:  # an existing object: its stored labels count (a write cannot shed them)
        stored = await _read(state, access, kind, name)
        labels.update((stored.get("metadata") or {}).get("labels") or {})
        obj = obj or stored
    labels.update((obj.get("metadata") or {}).get("labels") or {})
    found: dict[str, Any] = {"labels": labels}
    if compiled.needs_target and kind == "promotions":
        to = (obj.get("spec") or {}).get("to")
        if isinstance(to, str) and to:
            gateway = await _read(state, access, "gateways", to)
            found["targetEnvironment"] = (gateway.get("spec") or {}).get("environment", "")
    scope.setdefault("state", {})[TARGET_KEY] = found


async def _read(
    state: AppState, access: WorkspaceAccess, kind: str, name: str
) -> Mapping[str, Any]:
    """The object as the caller sees it; {} when it cannot be read (absent: the
    request itself then fails on its own)."""
    from kaizen_api.server.kube import KubeError, kaizen_path

    try:
        obj, _ = await state.kube.arequest(
            "GET", kaizen_path(access.namespace, kind, name), caller=access.caller
        )
    except (KubeError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}
