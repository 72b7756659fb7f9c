"""The web console (console/, a single-page app built by Vite) served at ``/``: its
files as they are, and index.html for every other page a client route may name.

The API keeps its paths: a request under /api/, /.well-known/, /healthz, /docs, /redoc
or /openapi.json never reaches the console (an unknown API path still answers the
API's 404 or 405, not a web page)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

# Paths the console never answers: the API's own and FastAPI's documents.
RESERVED = ("/api/", "/.well-known/", "/healthz", "/docs", "/redoc", "/openapi.json")
# Vite names its bundles by content hash: cached for a year; index.html never.
IMMUTABLE = "public, max-age=31536000, immutable"
# The app loads only its own scripts and styles and calls only this origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


class ConsoleRoute(Route):
    """A GET route for any path but the reserved ones (so API routes, matched first,
    keep their 404 and 405 answers)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if scope.get("type") != "http" or path.startswith(RESERVED):
            return Match.NONE, {}
        return super().matches(scope)


def install(app: FastAPI, folder: Path | None) -> None:
    """Serve the built console in ``folder`` at ``/`` (nothing when it is None)."""
    if folder is None:
        return
    root = folder.resolve()
    index = root / "index.html"

    async def page(request: Request) -> Response:
        relative = request.path_params.get("path", "")
        candidate = (root / relative).resolve()
        # Only files inside the build: no dot segment or symlink leads out of it.
        if relative and candidate.is_relative_to(root) and candidate.is_file():
            immutable = candidate.parent == root / "assets"
            headers = {"cache-control": IMMUTABLE} if immutable else {"cache-control": "no-cache"}
            headers["x-content-type-options"] = "nosniff"
            return FileResponse(candidate, headers=headers)
        if "." in relative.rsplit("/", 1)[-1]:  # a missing file, not a client route
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(index, headers=PAGE_HEADERS, media_type="text/html")

    app.router.routes.append(ConsoleRoute("/{path:path}", page, methods=["GET", "HEAD"]))
