"""The audit trail: one append-only record per mutating request, written after the
response is known, plus the middleware that refuses client impersonation headers."""

from __future__ import annotations

import asyncio
import contextvars
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
from kaizen_api.server.problems import API_PREFIX, database_unavailable, problem_response
from kaizen_api.server.ratelimit import SlidingWindow
from kaizen_api.server.timing import RequestTiming

log = logging.getLogger("kaizen_api.audit")
access_log = logging.getLogger("kaizen_api.access")
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
AUDIT: Table = AuditRecord.__table__  # type: ignore[attr-defined]
# Column lengths of audit_records (the database refuses longer values on PostgreSQL).
LENGTHS: dict[str, int] = {c.name: getattr(c.type, "length", None) or 0 for c in AUDIT.columns}
MAX_BACKLOG = 10_000  # records kept through an outage before mutations are refused

# The organization the caller was resolved a member of in this request (a box the
# request's handlers fill in from any thread): only then is a record in its view.
_MEMBER_OF: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "kaizen_audit_member_of", default=None
)


def member_of(slug: str) -> None:
    """Record this request in ``slug``'s audit view: the caller is one of its members."""
    box = _MEMBER_OF.get()
    if box is not None:
        box["org"] = slug


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """A record the database takes whatever the client sent: no NUL (PostgreSQL text
    refuses it), every string cut to its column."""
    out = dict(values)
    for name, value in values.items():
        if isinstance(value, str):
            value = value.replace("\x00", "")
            limit = LENGTHS.get(name, 0)
            out[name] = value[:limit] if limit else value
    return out


class AuditWriter:
    """Writes records; ones that could not be written (database down) are kept and
    written by a background retry as soon as the database answers again, so an outage
    loses none while the process lives. Meanwhile requests do not wait on the database
    for their record. A write that failed may still have committed (the connection died
    after COMMIT reached the server), so the retry first skips the kept records that
    are already there: each request has exactly one record."""

    def __init__(
        self, engine: Engine, retry_seconds: float = 1.0, max_backlog: int = MAX_BACKLOG
    ) -> None:
        self.engine = engine
        self.retry_seconds = retry_seconds
        self.max_backlog = max_backlog
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

    @property
    def accepting(self) -> bool:
        """False while the backlog is full: the facade then refuses mutations (503)
        rather than perform one it could not record."""
        return self.backlog < self.max_backlog

    def write(self, record: AuditRecord) -> None:
        """Keep ``record`` until written. Never refused: the request it records was
        already answered (the bound is enforced before a mutation starts)."""
        with self._lock:
            self._backlog.append(clean(record.model_dump(exclude={"id"})))
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
            except Exception as exc:
                if not database_unavailable(exc):  # the database refused a record
                    return self._one_by_one(pending, uncertain)
                # the database is unreachable: keep the records
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

    def _one_by_one(self, pending: list[dict[str, Any]], uncertain: bool) -> bool:
        """Write ``pending`` one record at a time; a record the database refuses is
        quarantined (logged whole at ERROR, dropped) so it cannot block the others."""
        written = 0
        for values in pending:
            try:
                with self.engine.begin() as db:
                    if not uncertain or _not_yet_written(db, [values]):
                        db.execute(insert(AUDIT), [values])
                written += 1
            except Exception as exc:
                if database_unavailable(exc):
                    with self._lock:
                        del self._backlog[:written]
                        self._uncertain = True
                    self._retry_later()
                    return False
                log.error(
                    "audit record quarantined: the database refused it (%s): %s",
                    str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                    json.dumps(values, default=str),
                )
                written += 1
        with self._lock:
            del self._backlog[: len(pending)]
            self._uncertain = False
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
        self._unrecorded: dict[str, int] = {}  # per address, since the last warning

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

        box: dict[str, str] = {}
        scope_token = _MEMBER_OF.set(box)
        writer: AuditWriter = scope["app"].state.kaizen.audit
        try:
            if scope["method"] in MUTATING and not writer.accepting:
                # Nothing already accepted is dropped; new mutations wait for the database.
                refused = problem_response(
                    Request(scope),
                    503,
                    "audit-unavailable",
                    "The audit trail cannot take more records now",
                    f"{writer.backlog} audit records wait for the database; retry shortly",
                    headers={"retry-after": "5"},
                )
                await refused(scope, receive, send_with_id)
            elif any(name.lower().startswith(b"impersonate-") for name in headers):
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
            _MEMBER_OF.reset(scope_token)
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
                    None, self._record, scope, headers, status, request_id, box.get("org")
                )

    def _record(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        status: int,
        request_id: str,
        org: str | None,
    ) -> None:
        state = scope.get("state", {})
        route = scope.get("route")
        client = scope.get("client")
        address = client[0] if client else ""
        kaizen = scope["app"].state.kaizen
        actor = state.get("actor")
        if actor is None and not self._anonymous_allowed(kaizen.anonymous_audit, address):
            return
        writer: AuditWriter = kaizen.audit
        writer.write(
            AuditRecord(
                org=org,
                actor=actor or "anonymous",
                key_id=state.get("key_id"),
                action=f"{scope['method']} {_action_path(route, scope['path'])}"[:100],
                resource=scope["path"][:500],
                outcome=status,
                request_id=request_id,
                ip=address,
                user_agent=headers.get(b"user-agent", b"").decode("latin-1")[:300],
            )
        )

    def _anonymous_allowed(self, limiter: SlidingWindow | None, address: str) -> bool:
        """Records of requests nobody authenticated for are limited per client address
        (the table is append-only for 90 days); past the limit one warning a minute
        counts them instead. Such a request changed nothing: it was refused before any
        handler ran as anyone."""
        if limiter is None or not limiter.hit(address):
            return True
        count = self._unrecorded.get(address, 0) + 1
        self._unrecorded[address] = count
        if len(self._unrecorded) > 10_000:  # client-chosen keys: bounded
            self._unrecorded.clear()
        if count % 1000 == 1:
            log.warning(
                "audit: %d unauthenticated request(s) from %s over %d a minute not recorded",
                count,
                address,
                limiter.limit,
            )
        return False


def _action_path(route: Any, path: str) -> str:
    """The route's template as the docs name it (``/orgs/{org}``, without ``/api/v1``);
    a request no route matched keeps its path."""
    template = getattr(route, "path", None)
    return template.removeprefix(API_PREFIX) if isinstance(template, str) else path


def install(app: FastAPI) -> None:
    """Wrap the app in the audit middleware."""
    app.add_middleware(AuditMiddleware)
