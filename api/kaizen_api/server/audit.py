"""The audit trail: one append-only record per mutating request, written after the
response is known, plus the middleware that refuses client impersonation headers."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from sqlalchemy import Connection, Engine, Table, delete, insert, select
from sqlmodel import col
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaizen_api.server.db import aware, session
from kaizen_api.server.models import AuditRecord
from kaizen_api.server.problems import API_PREFIX, problem_response
from kaizen_api.server.timing import RequestTiming

log = logging.getLogger("kaizen_api.audit")
access_log = logging.getLogger("kaizen_api.access")
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
AUDIT: Table = AuditRecord.__table__  # type: ignore[attr-defined]


class AuditWriter:
    """Writes records; ones that could not be written (database down) are kept and
    written by a background retry as soon as the database answers again, so an outage
    loses none while the process lives. Meanwhile requests do not wait on the database
    for their record. A write that failed may still have committed (the connection died
    after COMMIT reached the server), so the retry first skips the kept records that
    are already there: each request has exactly one record."""

    def __init__(self, engine: Engine, retry_seconds: float = 1.0) -> None:
        self.engine = engine
        self.retry_seconds = retry_seconds
        self._backlog: list[dict[str, Any]] = []  # unwritten records, oldest first
        self._uncertain = False  # the last failed attempt may have committed
        self._retrying: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the fields above
        self._flush_lock = threading.Lock()  # one writer at a time
        self._closed = threading.Event()

    @property
    def backlog(self) -> int:
        """How many records wait for the database."""
        with self._lock:
            return len(self._backlog)

    def write(self, record: AuditRecord) -> None:
        with self._lock:
            self._backlog.append(record.model_dump(exclude={"id"}))
            if self._retrying is not None:
                return  # the database is away: the retry writes it, in order
        self._flush()

    def _flush(self) -> bool:
        """Write the backlog; False (and a retry scheduled) when the database fails."""
        with self._flush_lock:
            with self._lock:
                pending, uncertain = list(self._backlog), self._uncertain
            if not pending:
                return True
            try:
                # Core, not the ORM: the unit of work cost a fifth of a create's CPU.
                with self.engine.begin() as db:
                    fresh = _not_yet_written(db, pending) if uncertain else pending
                    if fresh:
                        db.execute(insert(AUDIT), fresh)
            except Exception as exc:  # the database is unreachable: keep the records
                with self._lock:
                    self._uncertain = True
                    first = self._retrying is None
                log.warning(
                    "audit write failed (%s); %d record(s) kept for retry",
                    str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                    len(pending),
                    exc_info=first,
                )
                self._retry_later()
                return False
            with self._lock:
                del self._backlog[: len(pending)]
                self._uncertain = False
            if len(pending) > 1:
                log.info("wrote %d kept audit record(s)", len(fresh))
            return True

    def _retry_later(self) -> None:
        with self._lock:
            if self._retrying is not None or self._closed.is_set():
                return
            self._retrying = threading.Thread(target=self._retry, name="audit-retry", daemon=True)
            self._retrying.start()

    def _retry(self) -> None:
        while not self._closed.wait(self.retry_seconds):
            while self._flush():
                with self._lock:
                    if not self._backlog:
                        self._retrying = None
                        return

    def close(self) -> None:
        """Stop retrying and try a last time; records still unwritten are logged whole,
        so not even a process exit during an outage loses one silently."""
        self._closed.set()
        with self._lock:
            retrying = self._retrying
        if retrying is not None:
            retrying.join(timeout=10)
        with self._lock:
            self._retrying = None
        if not self._flush():
            with self._lock:
                left, self._backlog = self._backlog, []
            for values in left:
                log.error("audit record not written: %s", json.dumps(values, default=str))

    def purge(self, retention_days: int) -> int:
        """Delete records past retention (the database refuses younger ones)."""
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        with session(self.engine) as db:
            result = db.exec(delete(AuditRecord).where(col(AuditRecord.time) < cutoff))
            return int(result.rowcount or 0)


def _not_yet_written(db: Connection, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kept records a failed attempt did not commit after all."""
    ids = {values["request_id"] for values in pending}
    rows = db.execute(select(AUDIT).where(AUDIT.c.request_id.in_(ids))).all()
    there = {(r.request_id, aware(r.time), r.action, r.resource, r.outcome) for r in rows}
    return [
        v
        for v in pending
        if (v["request_id"], aware(v["time"]), v["action"], v["resource"], v["outcome"])
        not in there
    ]


class AuditMiddleware:
    """Request ids, Server-Timing, the impersonation guard, the access log line and the
    audit record of each mutation (plain ASGI: no per-request task or body buffering)."""

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
        timing = RequestTiming()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header, timing.header()]
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
            timing.close()
            # The access log is this line, not uvicorn's: it carries the request id that
            # the audit record and problem+json answers carry, and costs less.
            # Percent-encoded as uvicorn's line was: a decoded %0a in a path must not
            # start a forged line of its own.
            query = scope.get("query_string", b"").decode("latin-1")
            access_log.info(
                '%s - "%s %s%s%s" %d %s',
                scope["client"][0] if scope.get("client") else "-",
                scope["method"],
                quote(scope["path"]),
                "?" if query else "",
                quote(query, safe="=&+%;,/:@"),
                status,
                request_id,
            )
            if scope["method"] in MUTATING:
                # The loop's own executor: anyio's thread hop cost a twentieth of a create.
                await asyncio.get_running_loop().run_in_executor(
                    None, self._record, scope, headers, status, request_id
                )

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
                action=f"{scope['method']} {_action_path(route, scope['path'])}"[:100],
                resource=scope["path"][:500],
                outcome=status,
                request_id=request_id,
                ip=(client[0] if client else "")[:64],
                user_agent=headers.get(b"user-agent", b"").decode("latin-1")[:300],
            )
        )


def _action_path(route: Any, path: str) -> str:
    """The route's template as the docs name it (``/orgs/{org}``, without ``/api/v1``);
    a request no route matched keeps its path."""
    template = getattr(route, "path", None)
    return template.removeprefix(API_PREFIX) if isinstance(template, str) else path


def install(app: FastAPI) -> None:
    """Wrap the app in the audit middleware."""
    app.add_middleware(AuditMiddleware)
