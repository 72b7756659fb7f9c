"""Reading the audit trail (org owners and admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlmodel import col, select

from kaizen_api.server.access import CurrentPrincipal
from kaizen_api.server.db import session
from kaizen_api.server.models import AuditRecord
from kaizen_api.server.problems import API_PREFIX, PROBLEM_RESPONSES
from kaizen_api.server.routes.orgs import access_to
from kaizen_api.server.state import AppState, app_state

router = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES, tags=["audit"])
State = Annotated[AppState, Depends(app_state)]


class AuditOut(BaseModel):
    id: int
    time: datetime
    actor: str
    key_id: str | None
    action: str
    resource: str
    outcome: int
    request_id: str
    ip: str
    user_agent: str


@router.get("/orgs/{org}/audit", response_model=list[AuditOut])
def read_audit(
    org: str,
    principal: CurrentPrincipal,
    state: State,
    actor: Annotated[str | None, Query(max_length=320)] = None,
    action: Annotated[str | None, Query(max_length=100, description="e.g. POST or a path")] = None,
    outcome: Annotated[int | None, Query(ge=100, le=599)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[AuditOut]:
    """The organization's records, newest first, filtered."""
    with session(state.engine) as db:
        access_to(db, principal, org, "audit:read")
        query = select(AuditRecord).where(AuditRecord.org == org)
        if actor:
            query = query.where(AuditRecord.actor == actor)
        if action:
            query = query.where(col(AuditRecord.action).contains(action))
        if outcome:
            query = query.where(AuditRecord.outcome == outcome)
        if since:
            query = query.where(AuditRecord.time >= since)
        if until:
            query = query.where(AuditRecord.time < until)
        rows = db.exec(query.order_by(col(AuditRecord.id).desc()).offset(offset).limit(limit)).all()
    return [AuditOut.model_validate(r, from_attributes=True) for r in rows]
