"""Agents, Pipelines, Gateways, ScalingPolicies and Promotions of a workspace, read and written
on the kube-apiserver as the caller (impersonation): Kubernetes RBAC has the final
word, the facade's permission check is the first line.

Bodies are validated with the same pydantic models the CRDs are generated from.
Optimistic concurrency: GET returns an ETag (the resourceVersion); PUT needs If-Match
(or metadata.resourceVersion) and answers 409 when the object changed meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from kaizen_api.server import policies
from kaizen_api.server.access import (
    CurrentPrincipal,
    WorkspaceAccess,
    org_access,
    workspace_access,
)
from kaizen_api.server.audit import member_of
from kaizen_api.server.db import session
from kaizen_api.server.kube import KubeError, kaizen_path
from kaizen_api.server.problems import API_PREFIX, PROBLEM_RESPONSES, Problem
from kaizen_api.server.state import AppState, app_state
from kaizen_api.server.workspaces import recount_plan_quota
from kaizen_api.v1alpha1.agent import Agent
from kaizen_api.v1alpha1.common import NAME_PATTERN, KaizenModel
from kaizen_api.v1alpha1.gateway import Gateway
from kaizen_api.v1alpha1.pipeline import Pipeline
from kaizen_api.v1alpha1.promotion import Promotion
from kaizen_api.v1alpha1.scaling import ScalingOverride, ScalingPolicy

# A resource name in the path: a DNS-1123 subdomain, or 422 before any apiserver URL is
# built from it (L1: no query, fragment or dot segment can ride along).
Name = Annotated[
    str,
    Path(
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description="The resource's name (a DNS-1123 subdomain).",
    ),
]

router = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES, tags=["resources"])
State = Annotated[AppState, Depends(app_state)]
Json = dict[str, Any]
# Label of an Agent's / a Pipeline's ControllerRevisions (set by the operator).
REVISION_LABELS = {"agents": "kaizen.studio/agent", "pipelines": "kaizen.studio/pipeline"}
# Deepest JSON nesting a resource body may have. Free-form fields (tool parameters)
# take any JSON, and the apiserver stores far deeper objects than the facade can
# serialize back (about 250 levels): past that, every read of the object would fail.
MAX_DEPTH = 100
QUOTA_RETRY_SECONDS = 1.0  # between creates while the workspace's quota is recounted


class Kind(StrEnum):
    agents = "agents"
    pipelines = "pipelines"
    gateways = "gateways"
    scalingpolicies = "scalingpolicies"
    promotions = "promotions"


MODELS: dict[Kind, type[KaizenModel]] = {
    Kind.agents: Agent,
    Kind.pipelines: Pipeline,
    Kind.gateways: Gateway,
    Kind.scalingpolicies: ScalingPolicy,
    Kind.promotions: Promotion,
}
KIND_NAMES = {
    Kind.agents: "Agent",
    Kind.pipelines: "Pipeline",
    Kind.gateways: "Gateway",
    Kind.scalingpolicies: "ScalingPolicy",
    Kind.promotions: "Promotion",
}


class ResourceList(BaseModel):
    items: list[Json]
    continue_: str | None = Field(default=None, alias="continue")
    remaining: int | None = None


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1024)


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revision: int = Field(ge=1)


def _access(
    db: Session, state: AppState, principal: Any, org: str, ws: str, permission: str
) -> WorkspaceAccess:
    access = workspace_access(db, org_access(db, principal, org), ws)
    access.require(permission)  # the workspace role and, for a key, its scope
    return access


def _resolve(principal: Any, state: AppState, org: str, ws: str) -> WorkspaceAccess:
    with session(state.engine) as db:
        return workspace_access(db, org_access(db, principal, org), ws)


async def _check(
    principal: Any,
    state: AppState,
    org: str,
    ws: str,
    permission: str,
    *,
    name: str | None = None,
    body: Json | None = None,
) -> WorkspaceAccess:
    """The caller's access to the workspace, checked for ``permission`` (roles, then
    access policies on object ``name`` / the ``body`` being written). Resolutions are
    remembered 5 s (membership changes clear them at once on this replica); Kubernetes
    RBAC still decides every call. Only a miss reads the database (in the thread pool)."""
    key = (principal.user.id, principal.key.id if principal.key else None, org, ws)
    access = state.accesses.get(key)
    if access is None:
        access = await run_in_threadpool(_resolve, principal, state, org, ws)
        state.accesses.put(key, access)
    member_of(access.org.org.slug)  # remembered resolutions count too (audit view)
    await policies.prepare(state, access, permission, name, body)
    access.require(permission)  # the workspace role and, for a key, its scope; policies
    return access


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (iterative: no recursion limit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _validated(kind: Kind, body: Json, namespace: str, name: str | None = None) -> Json:
    """The body as the apiserver should get it: validated by the kind's model, in the
    workspace's namespace (another namespace is refused, not silently moved)."""
    if _too_deep(body, MAX_DEPTH):
        raise Problem(
            422,
            "invalid-resource",
            "Nested too deeply",
            f"JSON in a resource may nest at most {MAX_DEPTH} levels",
        )
    meta = dict(body.get("metadata") or {})
    if meta.get("namespace") not in (None, namespace):
        raise Problem(
            422,
            "invalid-resource",
            "Wrong namespace",
            f"metadata.namespace must be {namespace} (this workspace) or absent",
        )
    if name is not None and meta.get("name") not in (None, name):
        raise Problem(422, "invalid-resource", "Name mismatch", f"metadata.name must be {name}")
    meta["namespace"] = namespace
    if name is not None:
        meta["name"] = name
    obj = {
        **body,
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": KIND_NAMES[kind],
        "metadata": meta,
    }
    try:
        MODELS[kind].model_validate({k: v for k, v in obj.items() if k != "status"})
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        raise Problem(
            422, "invalid-resource", f"The {KIND_NAMES[kind]} is not valid", errors=errors
        ) from exc
    obj.pop("status", None)
    return obj


def _known_version(version: str) -> str:
    """An If-Match (or metadata.resourceVersion) that cannot be a version the apiserver
    gave out matches no object: 409 like any stale write (the apiserver itself would
    fail parsing it with a 500)."""
    if not version.isdigit() or not version.isascii():
        raise Problem(
            409,
            "conflict",
            "The resource changed or already exists",
            f"{version[:64]!r} is not a version of this resource; GET it for its ETag",
        )
    return version


def _passed_on(obj: Json, raw: bytes, status_code: int = 200) -> Response:
    """The apiserver's object as it sent it (no re-serialization), with its ETag."""
    version = obj.get("metadata", {}).get("resourceVersion", "")
    return Response(
        raw, status_code, headers={"etag": f'"{version}"'}, media_type="application/json"
    )


def _json(value: Any) -> Response:
    """``value`` as FastAPI would encode it (compact UTF-8 JSON), without the model
    round trip: the values come from the apiserver's JSON already (orjson: a page of
    100 Agents encodes in a tenth of the standard library's time)."""
    return Response(orjson.dumps(value), media_type="application/json")


@router.get("/orgs/{org}/workspaces/{ws}/{kind}", response_model=ResourceList)
async def list_resources(
    org: str,
    ws: str,
    kind: Kind,
    principal: CurrentPrincipal,
    state: State,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    continue_: Annotated[str | None, Query(alias="continue", max_length=2048)] = None,
    label_selector: Annotated[str | None, Query(alias="labelSelector", max_length=1024)] = None,
) -> Response:
    """One page of resources; pass ``continue`` from the previous page for the next."""
    access = await _check(principal, state, org, ws, f"{kind}:read")
    params = {"limit": str(limit)}
    if continue_:
        params["continue"] = continue_
    if label_selector:
        params["labelSelector"] = label_selector
    data, _ = await state.kube.arequest(
        "GET", kaizen_path(access.namespace, kind), caller=access.caller, params=params
    )
    meta = data.get("metadata") or {}
    return _json(
        {
            "items": data.get("items") or [],
            "continue": meta.get("continue") or None,
            "remaining": meta.get("remainingItemCount"),
        }
    )


@router.post("/orgs/{org}/workspaces/{ws}/{kind}", status_code=201, response_model=Json)
async def create_resource(
    org: str,
    ws: str,
    kind: Kind,
    body: Annotated[Json, Body()],
    principal: CurrentPrincipal,
    state: State,
) -> Response:
    access = await _check(principal, state, org, ws, f"{kind}:create", body=body)
    obj = _validated(kind, body, access.namespace)
    created, raw = await _create(state, access, kind, obj)
    return _passed_on(created, raw, 201)


async def _create(
    state: AppState, access: WorkspaceAccess, kind: Kind, obj: Json
) -> tuple[Json, bytes]:
    """POST as the caller. A refusal that only says the workspace's quota is not counted
    yet is tried again, after having the quota recounted, for ``quota_wait_seconds``
    (then it stands: 503 quota-pending)."""
    deadline = time.monotonic() + state.kube.quota_wait_seconds
    while True:
        try:
            return await state.kube.arequest(
                "POST",
                kaizen_path(access.namespace, kind),
                caller=access.caller,
                body=obj,
                params={"fieldManager": "kaizen-api"},
            )
        except KubeError as exc:
            if not exc.quota_pending or time.monotonic() + QUOTA_RETRY_SECONDS > deadline:
                raise
        await run_in_threadpool(recount_plan_quota, state.kube, access.org.org, access.workspace)
        await asyncio.sleep(QUOTA_RETRY_SECONDS)


@router.get("/orgs/{org}/workspaces/{ws}/{kind}/{name}", response_model=Json)
async def get_resource(
    org: str,
    ws: str,
    kind: Kind,
    name: Name,
    principal: CurrentPrincipal,
    state: State,
) -> Response:
    access = await _check(principal, state, org, ws, f"{kind}:read", name=name)
    obj, raw = await state.kube.arequest(
        "GET", kaizen_path(access.namespace, kind, name), caller=access.caller
    )
    return _passed_on(obj, raw)


@router.put("/orgs/{org}/workspaces/{ws}/{kind}/{name}", response_model=Json)
async def replace_resource(
    org: str,
    ws: str,
    kind: Kind,
    name: Name,
    body: Annotated[Json, Body()],
    principal: CurrentPrincipal,
    state: State,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Replace the spec (and labels/annotations); needs If-Match or resourceVersion."""
    access = await _check(principal, state, org, ws, f"{kind}:update", name=name, body=body)
    obj = _validated(kind, body, access.namespace, name)
    version = (if_match or "").strip('"') or obj["metadata"].get("resourceVersion")
    if not version:
        raise Problem(
            428,
            "precondition-required",
            "If-Match required",
            "send the ETag of your GET as If-Match (or metadata.resourceVersion)",
        )
    obj["metadata"]["resourceVersion"] = _known_version(str(version))
    replaced, raw = await state.kube.arequest(
        "PUT",
        kaizen_path(access.namespace, kind, name),
        caller=access.caller,
        body=obj,
        params={"fieldManager": "kaizen-api"},
    )
    return _passed_on(replaced, raw)


@router.delete("/orgs/{org}/workspaces/{ws}/{kind}/{name}", status_code=204)
async def delete_resource(
    org: str,
    ws: str,
    kind: Kind,
    name: Name,
    principal: CurrentPrincipal,
    state: State,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    access = await _check(principal, state, org, ws, f"{kind}:delete", name=name)
    body: Json = {"propagationPolicy": "Background"}
    if if_match:
        body["preconditions"] = {"resourceVersion": _known_version(if_match.strip('"'))}
    await state.kube.arequest(
        "DELETE", kaizen_path(access.namespace, kind, name), caller=access.caller, body=body
    )
    return Response(status_code=204)


async def _call(state: AppState, method: str, path: str, **options: Any) -> Json:
    """One apiserver call on the event loop; its parsed answer."""
    data, _ = await state.kube.arequest(method, path, **options)
    return data


async def _merge_patch(
    state: AppState, access: WorkspaceAccess, kind: Kind, name: str, patch: Json
) -> Json:
    return await _call(
        state,
        "PATCH",
        kaizen_path(access.namespace, kind, name),
        caller=access.caller,
        body=patch,
        params={"fieldManager": "kaizen-api"},
        content_type="application/merge-patch+json",
    )


@router.post("/orgs/{org}/workspaces/{ws}/promotions/{name}/approve")
async def approve_promotion(
    org: str, ws: str, name: Name, body: Decision, principal: CurrentPrincipal, state: State
) -> Json:
    """Approve as yourself: the operator's admission webhook records the authenticated
    user (and refuses people outside the approvers list)."""
    access = await _check(principal, state, org, ws, "promotions:approve", name=name)
    patch = {"metadata": {"annotations": {"kaizen.studio/approve": body.reason}}}
    return await _merge_patch(state, access, Kind.promotions, name, patch)


@router.post("/orgs/{org}/workspaces/{ws}/promotions/{name}/reject")
async def reject_promotion(
    org: str, ws: str, name: Name, body: Decision, principal: CurrentPrincipal, state: State
) -> Json:
    access = await _check(principal, state, org, ws, "promotions:approve", name=name)
    patch = {"metadata": {"annotations": {"kaizen.studio/reject": body.reason}}}
    return await _merge_patch(state, access, Kind.promotions, name, patch)


class Versioned(StrEnum):
    """Kinds whose specs the operator keeps as immutable, numbered revisions."""

    agents = "agents"
    pipelines = "pipelines"


async def _revisions(
    state: AppState, access: WorkspaceAccess, kind: Versioned, name: str
) -> list[Json]:
    """The object's ControllerRevisions, newest first (number, hash, content, creation time)."""
    data = await _call(
        state,
        "GET",
        f"/apis/apps/v1/namespaces/{access.namespace}/controllerrevisions",
        caller=access.caller,
        params={"labelSelector": f"{REVISION_LABELS[kind]}={name}"},
    )
    revisions = [
        {
            "revision": int(r.get("revision", 0)),
            "name": r["metadata"]["name"],
            "hash": r["metadata"].get("labels", {}).get("kaizen.studio/revision-hash", ""),
            "createdAt": r["metadata"].get("creationTimestamp"),
            "spec": (r.get("data") or {}).get("spec", {}),
        }
        for r in data.get("items", [])
    ]
    return sorted(revisions, key=lambda r: -r["revision"])


@router.get("/orgs/{org}/workspaces/{ws}/{kind}/{name}/revisions")
async def list_revisions(
    org: str, ws: str, kind: Versioned, name: Name, principal: CurrentPrincipal, state: State
) -> list[Json]:
    """The Agent's or Pipeline's revisions, newest first (number, hash, content, creation
    time)."""
    access = await _check(principal, state, org, ws, f"{kind}:read", name=name)
    return await _revisions(state, access, kind, name)


@router.post("/orgs/{org}/workspaces/{ws}/{kind}/{name}/rollback")
async def rollback(
    org: str,
    ws: str,
    kind: Versioned,
    name: Name,
    body: Rollback,
    principal: CurrentPrincipal,
    state: State,
) -> Json:
    """Restore an earlier revision's content (this makes a new revision: history is
    append-only). Promoted gateways change only through a Promotion."""
    access = await _check(principal, state, org, ws, f"{kind}:update", name=name)
    found = [
        r for r in await _revisions(state, access, kind, name) if r["revision"] == body.revision
    ]
    if not found:
        raise Problem(
            404,
            "not-found",
            "No such revision",
            f"{KIND_NAMES[Kind(kind)]} {name} has no revision {body.revision} (kept revisions: "
            f"GET .../{kind}/{name}/revisions)",
        )
    current = await _call(
        state, "GET", kaizen_path(access.namespace, kind, name), caller=access.caller
    )
    current["spec"] = {**current["spec"], **found[0]["spec"]}
    current.pop("status", None)
    return await _call(
        state,
        "PUT",
        kaizen_path(access.namespace, kind, name),
        caller=access.caller,
        body=current,
        params={"fieldManager": "kaizen-api"},
    )


@router.get("/orgs/{org}/workspaces/{ws}/gateways/{name}/status")
async def gateway_status(
    org: str, ws: str, name: Name, principal: CurrentPrincipal, state: State
) -> Json:
    """The Gateway's status and its autoscaler's numbers, in one answer."""
    access = await _check(principal, state, org, ws, "gateways:read", name=name)
    gateway = await _call(
        state, "GET", kaizen_path(access.namespace, Kind.gateways, name), caller=access.caller
    )
    status = gateway.get("status") or {}
    autoscaler = None
    try:
        hpa = await _call(
            state,
            "GET",
            f"/apis/autoscaling/v2/namespaces/{access.namespace}"
            f"/horizontalpodautoscalers/{name}-gateway",
            caller=access.caller,
        )
        autoscaler = {
            "minReplicas": hpa["spec"].get("minReplicas"),
            "maxReplicas": hpa["spec"].get("maxReplicas"),
            "currentReplicas": (hpa.get("status") or {}).get("currentReplicas"),
            "desiredReplicas": (hpa.get("status") or {}).get("desiredReplicas"),
            "currentMetrics": (hpa.get("status") or {}).get("currentMetrics"),
        }
    except Exception as exc:  # no HPA (no ScalingPolicy), or not readable
        if getattr(exc, "status", None) not in (403, 404):
            raise
    conditions = status.get("conditions") or []
    ready: Json = next((c for c in conditions if c.get("type") == "Ready"), {})
    return {
        "name": name,
        "ready": ready.get("status") == "True",
        "reason": ready.get("reason"),
        "message": ready.get("message"),
        "replicas": status.get("replicas"),
        "readyReplicas": status.get("readyReplicas"),
        "servedRevisions": status.get("servedRevisions") or [],
        "endpoint": status.get("endpoint"),
        "autoscaler": autoscaler,
    }


@router.put("/orgs/{org}/workspaces/{ws}/scalingpolicies/{name}/override")
async def set_override(
    org: str, ws: str, name: Name, body: ScalingOverride, principal: CurrentPrincipal, state: State
) -> Json:
    """Pin or freeze the autoscaler (until expiresAt, if given)."""
    access = await _check(principal, state, org, ws, "scalingpolicies:update", name=name)
    patch = {"spec": {"override": body.to_wire()}}
    return await _merge_patch(state, access, Kind.scalingpolicies, name, patch)


@router.delete("/orgs/{org}/workspaces/{ws}/scalingpolicies/{name}/override")
async def clear_override(
    org: str, ws: str, name: Name, principal: CurrentPrincipal, state: State
) -> Json:
    access = await _check(principal, state, org, ws, "scalingpolicies:update", name=name)
    return await _merge_patch(
        state, access, Kind.scalingpolicies, name, {"spec": {"override": None}}
    )
