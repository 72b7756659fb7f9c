"""RFC 9457 problem+json errors with stable codes (``type`` ends in the code)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from kaizen_api.server.kube import KubeError

log = logging.getLogger("kaizen_api")
TYPE_BASE = "https://kaizen.studio/problems/"
DATABASE_RETRY_AFTER = 5  # seconds a client is asked to wait while the database is away
QUOTA_RETRY_AFTER = 5  # ... and after the facade waited in vain for the quota controller


class Problem(Exception):
    """An error the caller can act on."""

    def __init__(self, status: int, code: str, title: str, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.extra = extra
        self.headers: dict[str, str] = extra.pop("headers", {}) or {}


def problem_response(
    request: Request, status: int, code: str, title: str, detail: str = "", **extra: Any
) -> JSONResponse:
    headers = extra.pop("headers", None)
    body = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["requestId"] = request_id
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (plus ``code`` and, where relevant, ``errors``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    code: str
    detail: str = ""
    instance: str = ""


def _problem(description: str) -> dict[str, Any]:
    return {
        "model": ProblemDetails,
        "description": description,
        "content": {"application/problem+json": {}},
    }


# Documented on every /api/v1 route, so clients (and schemathesis) know the error shape.
API_PREFIX = "/api/v1"  # every facade route but health, JWKS and the documents
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem("Bad request (e.g. Impersonate-* headers sent)"),
    401: _problem("Not authenticated"),
    403: _problem("Not allowed (facade role, key scope, Kubernetes RBAC or quota)"),
    404: _problem("Not found (or an organization you are not in)"),
    409: _problem("Conflict: exists already, or changed since read"),
    410: _problem("List continuation expired"),
    413: _problem("Request body too large"),
    422: _problem("Invalid request or resource"),
    428: _problem("If-Match required"),
    429: _problem("Rate limited, or too many failed authentications (see Retry-After)"),
    502: _problem("Kubernetes failed"),
    503: _problem(
        "The database is unreachable, or the workspace's quota not counted yet (see Retry-After)"
    ),
}


def database_unavailable(exc: BaseException) -> bool:
    """Whether a database error means "not reachable now" (retry later), as opposed
    to a refused statement (a bug or a constraint, which stays a 500 or its own code)."""
    if isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.DisconnectionError
        | sa_exc.TimeoutError,
    ):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


_KUBE_CODES = {
    400: ("invalid-resource", "The resource is not valid"),
    403: ("forbidden", "Kubernetes RBAC refused the request"),
    404: ("not-found", "No such resource"),
    409: ("conflict", "The resource changed or already exists"),
    410: ("expired", "The list continuation expired; list again"),
    422: ("invalid-resource", "The resource is not valid"),
}


def install(app: FastAPI) -> None:
    """Map every error to problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.code, exc.title, exc.detail, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return problem_response(
            request, 422, "invalid-request", "The request is not valid", errors=errors
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(KubeError)
    async def _kube(request: Request, exc: KubeError) -> JSONResponse:
        if exc.status == 403 and "exceeded quota" in exc.message:
            return problem_response(
                request,
                403,
                "quota-exceeded",
                "The workspace's plan quota is used up",
                exc.message,
            )
        if exc.quota_pending:
            return problem_response(
                request,
                503,
                "quota-pending",
                "The workspace's quota is not counted yet; try again shortly",
                exc.message,
                headers={"retry-after": str(QUOTA_RETRY_AFTER)},
            )
        code, title = _KUBE_CODES.get(exc.status, ("upstream-error", "Kubernetes failed"))
        status = exc.status if exc.status in _KUBE_CODES else 502
        return problem_response(request, status, code, title, exc.message)

    @app.exception_handler(sa_exc.SQLAlchemyError)
    async def _database(request: Request, exc: sa_exc.SQLAlchemyError) -> JSONResponse:
        if not database_unavailable(exc):
            raise exc  # a refused statement: the catch-all below answers 500 and logs it
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            str(exc).splitlines()[0][:300],
        )
        return problem_response(
            request,
            503,
            "database-unavailable",
            "The database is unreachable; retry shortly",
            headers={"retry-after": str(DATABASE_RETRY_AFTER)},
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "internal", "Internal error")
