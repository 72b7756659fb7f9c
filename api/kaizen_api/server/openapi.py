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
NEW_ORG = {"org": "$response.body#/slug"}  # the organization just created
NEW_WS = {**SAME_ORG, "ws": "$response.body#/name"}  # the workspace just created
NEW_OBJECT = {**SAME_KIND, "name": "$response.body#/metadata/name"}  # the resource created
SAME_OBJECT = {**SAME_KIND, "name": "$request.path.name"}
IF_MATCH = {"header.if-match": "$response.header.etag"}

# (method, path, status) -> link name -> (target method, target path, parameters, body).
# No link leads to a call whose body names other objects (a key's workspace, a
# member's e-mail): those answer 404 for an unknown name, which a client following a
# link from a create would take for the created object missing.
Link = tuple[str, str, dict[str, str], str | None]
LINKS: dict[tuple[str, str, str], dict[str, Link]] = {
    ("post", f"{P}/orgs", "201"): {
        "GetOrganization": ("get", ORG, NEW_ORG, None),
        "ListMembers": ("get", f"{ORG}/members", NEW_ORG, None),
        "CreateWorkspace": ("post", f"{ORG}/workspaces", NEW_ORG, None),
    },
    ("post", f"{ORG}/workspaces", "201"): {
        "GetWorkspace": ("get", WS, NEW_WS, None),
        "ListWorkspaceMembers": ("get", f"{WS}/members", NEW_WS, None),
        "CreateResource": ("post", RESOURCES, NEW_WS, None),
        "ListResources": ("get", RESOURCES, NEW_WS, None),
        "DeleteWorkspace": ("delete", WS, NEW_WS, None),
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
        "GetResource": ("get", RESOURCE, NEW_OBJECT, None),
        "ReplaceResource": ("put", RESOURCE, {**NEW_OBJECT, **IF_MATCH}, "$response.body"),
        "DeleteResource": ("delete", RESOURCE, NEW_OBJECT, None),
    },
    ("get", RESOURCE, "200"): {
        "ReplaceResource": ("put", RESOURCE, {**SAME_OBJECT, **IF_MATCH}, "$response.body"),
        "DeleteResource": ("delete", RESOURCE, SAME_OBJECT, None),
    },
    ("put", RESOURCE, "200"): {
        "GetResource": ("get", RESOURCE, SAME_OBJECT, None),
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


# The web console's typed client is generated from this document (console/src/api/):
# `kaizen-api openapi` writes it, `kaizen-api openapi --check` fails when it is stale.
CONSOLE_API_DIR = "console/src/api"


def render_documents() -> dict[str, str]:
    """The files of the console's client, by name: the OpenAPI document of the app as
    served, and the role tables the console hides actions by (the server still decides)."""
    import json

    from kaizen_api.server.app import create_app
    from kaizen_api.server.permissions import ORG_ROLES, ORG_WIDE, WORKSPACE_ROLES
    from kaizen_api.server.settings import Settings

    doc = create_app(Settings()).openapi()  # no database or cluster is touched
    roles = {"org": ORG_ROLES, "workspace": WORKSPACE_ROLES, "orgWide": ORG_WIDE}
    return {
        "openapi.json": json.dumps(doc, indent=2, ensure_ascii=False) + "\n",
        "roles.json": json.dumps(roles, indent=2) + "\n",
    }
