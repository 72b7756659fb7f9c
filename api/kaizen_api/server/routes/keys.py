"""API keys: ``ksk_<prefix>_<secret>``, shown once, scoped, expiring, revocable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select

from kaizen_api.server.access import CurrentPrincipal, workspace_access
from kaizen_api.server.db import session
from kaizen_api.server.events import emit_event
from kaizen_api.server.models import ApiKey, Workspace
from kaizen_api.server.permissions import PERMISSION_PATTERN
from kaizen_api.server.problems import API_PREFIX, PROBLEM_RESPONSES, Problem
from kaizen_api.server.routes.orgs import access_to
from kaizen_api.server.security import new_api_key
from kaizen_api.server.state import AppState, app_state

router = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES, tags=["api keys"])
State = Annotated[AppState, Depends(app_state)]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    workspace: str | None = Field(default=None, description="Limit the key to one workspace.")
    permissions: list[Annotated[str, Field(pattern=PERMISSION_PATTERN, max_length=64)]] = Field(
        min_length=1, max_length=50, description="<resource>:<verb>, e.g. agents:*, *:read"
    )
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    workspace: str | None
    permissions: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="The secret, shown this once; only a hash is stored.")


def _out(key: ApiKey, workspace: str | None) -> KeyOut:
    return KeyOut(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        workspace=workspace,
        permissions=key.permissions,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    )


def _key_data(key: ApiKey, workspace: str | None, by: CurrentPrincipal) -> dict[str, object]:
    """An event's data about a key: never its secret or hash."""
    return {
        "keyId": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "workspace": workspace,
        "permissions": key.permissions,
        "actor": by.user.email,
    }


@router.post("/orgs/{org}/keys", status_code=201, response_model=NewKeyOut)
def create_key(org: str, body: KeyIn, principal: CurrentPrincipal, state: State) -> NewKeyOut:
    if principal.key is not None:
        raise Problem(403, "forbidden", "Not allowed", "API keys cannot create API keys")
    with session(state.engine) as db:
        access = access_to(db, principal, org, "keys:create")
        workspace_id = None
        if body.workspace is not None:
            ws = workspace_access(db, access, body.workspace)
            if ws.role is None:
                raise Problem(403, "forbidden", "Not a member", f"workspace {body.workspace!r}")
            workspace_id = ws.workspace.id
        fresh = new_api_key()
        key = ApiKey(
            prefix=fresh.prefix,
            secret_hash=fresh.secret_hash,
            name=body.name,
            org_id=access.org.id,
            workspace_id=workspace_id,
            user_id=principal.user.id,
            permissions=body.permissions,
            expires_at=(
                datetime.now(UTC) + timedelta(days=body.expires_in_days)
                if body.expires_in_days
                else None
            ),
        )
        db.add(key)
        emit_event(db, access.org, "api_key.created", _key_data(key, body.workspace, principal))
    return NewKeyOut(**_out(key, body.workspace).model_dump(), key=fresh.token)


@router.get("/orgs/{org}/keys", response_model=list[KeyOut])
def list_keys(org: str, principal: CurrentPrincipal, state: State) -> list[KeyOut]:
    """Your keys in this organization (org admins see everyone's)."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "keys:read")
        query = select(ApiKey).where(ApiKey.org_id == access.org.id)
        if access.role not in ("org_owner", "org_admin"):
            query = query.where(ApiKey.user_id == principal.user.id)
        keys = db.exec(query.order_by(col(ApiKey.created_at))).all()
        names = {}
        for key in keys:
            if key.workspace_id and key.workspace_id not in names:
                ws = db.get(Workspace, key.workspace_id)
                names[key.workspace_id] = ws.name if ws else None
        return [_out(k, names.get(k.workspace_id or "")) for k in keys]


@router.delete("/orgs/{org}/keys/{key_id}", status_code=204)
def revoke_key(org: str, key_id: str, principal: CurrentPrincipal, state: State) -> Response:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "keys:delete")
        key = db.get(ApiKey, key_id)
        if key is None or key.org_id != access.org.id:
            raise Problem(404, "not-found", "No such key", key_id)
        if key.user_id != principal.user.id and access.role not in ("org_owner", "org_admin"):
            raise Problem(403, "forbidden", "Not allowed", "only its owner or an org admin")
        if key.revoked_at is None:
            key.revoked_at = datetime.now(UTC)
            emit_event(db, access.org, "api_key.revoked", _key_data(key, None, principal))
        db.add(key)
    state.principals.forget_key(key_id)
    return Response(status_code=204)
