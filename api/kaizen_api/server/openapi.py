"""OpenAPI links of the served document: how a created object's answer feeds the next
call (create an agent -> read, replace with its ETag, delete it). Clients and tools
(schemathesis' stateful runs) follow them; the routes themselves do not change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

P = "/api/v1"
ORG = f"{P}/orgs/{{org}}"
WS = f"{ORG}/workspaces/{{ws}}"
RESOURCES = f"{WS}/{{kind}}"
RESOURCE = f"{RESOURCES}/{{name}}"

SAME_ORG = {"org": "$request.path.org"}
SAME_WS = {**SAME_ORG, "ws": "$request.path.ws"}
SAME_KIND = {**SAME_WS, "kind": "$request.path.kind"}

# (method, path, status) -> link name -> (target method, target path, parameters, body).
# No link leads to a call whose body names other objects (a key's workspace, a
# member's e-mail): those answer 404 for an unknown name, which a client following a
# link from a create would take for the created object missing.
Link = tuple[str, str, dict[str, str], str | None]
LINKS: dict[tuple[str, str, str], dict[str, Link]] = {
    ("post", f"{P}/orgs", "201"): {
        "GetOrganization": ("get", ORG, {"org": "$response.body#/slug"}, None),
        "ListMembers": ("get", f"{ORG}/members", {"org": "$response.body#/slug"}, None),
        "CreateWorkspace": ("post", f"{ORG}/workspaces", {"org": "$response.body#/slug"}, None),
    },
    ("post", f"{ORG}/workspaces", "201"): {
        "GetWorkspace": ("get", WS, {**SAME_ORG, "ws": "$response.body#/name"}, None),
        "ListWorkspaceMembers": (
            "get",
            f"{WS}/members",
            {**SAME_ORG, "ws": "$response.body#/name"},
            None,
        ),
        "CreateResource": ("post", RESOURCES, {**SAME_ORG, "ws": "$response.body#/name"}, None),
        "ListResources": ("get", RESOURCES, {**SAME_ORG, "ws": "$response.body#/name"}, None),
        "DeleteWorkspace": ("delete", WS, {**SAME_ORG, "ws": "$response.body#/name"}, None),
    },
    ("post", f"{ORG}/keys", "201"): {
        "RevokeApiKey": (
            "delete",
            f"{ORG}/keys/{{key_id}}",
            {**SAME_ORG, "key_id": "$response.body#/id"},
            None,
        ),
    },
    ("post", f"{ORG}/members", "201"): {
        "ChangeMember": (
            "put",
            f"{ORG}/members/{{user_id}}",
            {**SAME_ORG, "user_id": "$response.body#/user_id"},
            None,
        ),
        "RemoveMember": (
            "delete",
            f"{ORG}/members/{{user_id}}",
            {**SAME_ORG, "user_id": "$response.body#/user_id"},
            None,
        ),
    },
    ("post", RESOURCES, "201"): {
        "GetResource": (
            "get",
            RESOURCE,
            {**SAME_KIND, "name": "$response.body#/metadata/name"},
            None,
        ),
        "ReplaceResource": (
            "put",
            RESOURCE,
            {
                **SAME_KIND,
                "name": "$response.body#/metadata/name",
                "header.if-match": "$response.header.etag",
            },
            "$response.body",
        ),
        "DeleteResource": (
            "delete",
            RESOURCE,
            {**SAME_KIND, "name": "$response.body#/metadata/name"},
            None,
        ),
    },
    ("get", RESOURCE, "200"): {
        "ReplaceResource": (
            "put",
            RESOURCE,
            {**SAME_KIND, "name": "$request.path.name", "header.if-match": "$response.header.etag"},
            "$response.body",
        ),
        "DeleteResource": ("delete", RESOURCE, {**SAME_KIND, "name": "$request.path.name"}, None),
    },
    ("put", RESOURCE, "200"): {
        "GetResource": ("get", RESOURCE, {**SAME_KIND, "name": "$request.path.name"}, None),
    },
}


def add_links(doc: dict[str, Any]) -> dict[str, Any]:
    """Add ``LINKS`` to the responses of ``doc`` (an OpenAPI document), by operationId."""
    paths = doc.get("paths", {})
    for (method, path, status), links in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            raise ValueError(f"no {status} answer of {method.upper()} {path} to link from")
        out = response.setdefault("links", {})
        for name, (target_method, target_path, parameters, body) in links.items():
            target = paths.get(target_path, {}).get(target_method)
            if target is None:
                raise ValueError(f"link {name}: no {target_method.upper()} {target_path}")
            link: dict[str, Any] = {"operationId": target["operationId"], "parameters": parameters}
            if body is not None:
                link["requestBody"] = body
            out[name] = link
    return doc


def install(app: FastAPI) -> None:
    """Serve the document with its links (built once, like FastAPI's own)."""
    plain: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_links(plain())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
