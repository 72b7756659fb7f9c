"""What every request shares: settings, database engine, signing keys, Kubernetes
client, the API-key rate limiter and the failed-authentication throttle (kept on
``app.state``; the limits themselves are counted in the database)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy import Engine

from kaizen_api.server.kube import Kube
from kaizen_api.server.policies import PolicyCache
from kaizen_api.server.ratelimit import SlidingWindow
from kaizen_api.server.security import PasswordWork, SigningKeys
from kaizen_api.server.settings import Settings
from kaizen_api.server.throttle import AuthThrottle

if TYPE_CHECKING:
    from kaizen_api.server.access import PrincipalCache, WorkspaceAccess
    from kaizen_api.server.audit import AuditWriter
    from kaizen_api.server.cache import TTLCache


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    keys: SigningKeys
    kube: Kube
    key_limiter: SlidingWindow
    auth_throttle: AuthThrottle
    audit: AuditWriter
    anonymous_audit: SlidingWindow | None  # records of unauthenticated requests, per address
    user_limiter: SlidingWindow  # requests per user with bearer tokens
    register_limiter: SlidingWindow | None  # registrations per client address
    passwords: PasswordWork  # argon2, bounded concurrency
    principals: PrincipalCache
    accesses: TTLCache[WorkspaceAccess]
    policies: PolicyCache = field(default_factory=PolicyCache)  # compiled Cedar sets


async def app_state(request: Request) -> AppState:
    """The shared state (async: no I/O, so no thread-pool hop per request)."""
    state: AppState = request.app.state.kaizen
    return state
