"""The audit trail: one append-only record per mutating request, written after the
response is known, plus the middleware that refuses client impersonation headers."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, Request, Response
from sqlalchemy import Engine, delete
from sqlmodel import col
from starlette.concurrency import run_in_threadpool

from kaizen_api.server.db import session
from kaizen_api.server.models import AuditRecord
from kaizen_api.server.problems import problem_response
from kaizen_api.server.state import AppState

log = logging.getLogger("kaizen_api.audit")
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class AuditWriter:
    """Writes records; ones that could not be written (database down) are kept and
    written first next time, so an outage loses none while the process lives."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._backlog: list[AuditRecord] = []
        self._lock = threading.Lock()

    def write(self, record: AuditRecord) -> None:
        with self._lock:
            pending = [*self._backlog, record]
            try:
                with session(self.engine) as db:
                    db.add_all(pending)
                self._backlog = []
            except Exception:  # the database is unreachable: keep the records
                log.exception("audit write failed; %d record(s) kept for retry", len(pending))
                self._backlog = pending

    def purge(self, retention_days: int) -> int:
        """Delete records past retention (the database refuses younger ones)."""
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        with session(self.engine) as db:
            result = db.exec(delete(AuditRecord).where(col(AuditRecord.time) < cutoff))
            return int(result.rowcount or 0)


def install(app: FastAPI) -> None:
    """Request ids, the impersonation guard, and the audit record of each mutation."""

    @app.middleware("http")
    async def audit_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        request.state.request_id = request_id
        if any(name.lower().startswith("impersonate-") for name in request.headers):
            response: Response = problem_response(
                request,
                400,
                "impersonation-refused",
                "Impersonation headers are not accepted",
                "the facade impersonates you itself; remove Impersonate-* headers",
            )
        else:
            response = await call_next(request)
        response.headers["x-request-id"] = request_id
        if request.method in MUTATING:
            state: AppState = request.app.state.kaizen
            route = request.scope.get("route")
            params = request.scope.get("path_params") or {}
            record = AuditRecord(
                org=params.get("org"),
                actor=getattr(request.state, "actor", None) or "anonymous",
                key_id=getattr(request.state, "key_id", None),
                action=f"{request.method} {getattr(route, 'path', request.url.path)}",
                resource=request.url.path[:500],
                outcome=response.status_code,
                request_id=request_id,
                ip=(request.client.host if request.client else "")[:64],
                user_agent=request.headers.get("user-agent", "")[:300],
            )
            await run_in_threadpool(state.audit.write, record)
        return response
