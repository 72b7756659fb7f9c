"""The audit trail: one append-only record per mutating request, written after the
response is known, plus the middleware that refuses client impersonation headers."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, Request
from sqlalchemy import Engine, delete
from sqlmodel import col
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaizen_api.server.db import session
from kaizen_api.server.models import AuditRecord
from kaizen_api.server.problems import problem_response

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


class AuditMiddleware:
    """Request ids, the impersonation guard, and the audit record of each mutation
    (plain ASGI: no per-request task or body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        try:
            if any(name.lower().startswith(b"impersonate-") for name in headers):
                refused = problem_response(
                    Request(scope),
                    400,
                    "impersonation-refused",
                    "Impersonation headers are not accepted",
                    "the facade impersonates you itself; remove Impersonate-* headers",
                )
                await refused(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if scope["method"] in MUTATING:
                await run_in_threadpool(self._record, scope, headers, status, request_id)

    def _record(
        self, scope: Scope, headers: dict[bytes, bytes], status: int, request_id: str
    ) -> None:
        state = scope.get("state", {})
        route = scope.get("route")
        params = scope.get("path_params") or {}
        client = scope.get("client")
        writer: AuditWriter = scope["app"].state.kaizen.audit
        writer.write(
            AuditRecord(
                org=params.get("org"),
                actor=state.get("actor") or "anonymous",
                key_id=state.get("key_id"),
                action=f"{scope['method']} {getattr(route, 'path', scope['path'])}"[:100],
                resource=scope["path"][:500],
                outcome=status,
                request_id=request_id,
                ip=(client[0] if client else "")[:64],
                user_agent=headers.get(b"user-agent", b"").decode("latin-1")[:300],
            )
        )


def install(app: FastAPI) -> None:
    """Wrap the app in the audit middleware."""
    app.add_middleware(AuditMiddleware)
