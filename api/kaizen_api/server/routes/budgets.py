"""Budgets of an organization (``billing:write`` to set, ``billing:read`` to read: owners
and billing admins): monthly token or cost limits per organization, workspace, agent or
caller, with their spend this month and the thresholds crossed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, Field, model_validator
from sqlmodel import Session, col, select

from kaizen_api.server.access import CurrentPrincipal
from kaizen_api.server.budgets import display, month_start, spent_query
from kaizen_api.server.db import session
from kaizen_api.server.models import Budget, BudgetEvent, Workspace
from kaizen_api.server.problems import API_PREFIX, PROBLEM_RESPONSES, Problem
from kaizen_api.server.routes.orgs import access_to
from kaizen_api.server.state import AppState, app_state

router = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES, tags=["budgets"])
State = Annotated[AppState, Depends(app_state)]
Name = Annotated[str, Path(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]


class BudgetIn(BaseModel):
    scope: Literal["org", "workspace", "agent", "key"]
    workspace: str = Field("", max_length=30, description="required for scope workspace")
    target: str = Field(
        "", max_length=253, description="the agent's name (scope agent) or caller (scope key)"
    )
    metric: Literal["tokens", "cost"]
    limit: float = Field(gt=0, le=1e12, description="tokens, or US dollars (metric cost)")
    thresholds: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [50, 80, 100], max_length=10
    )

    @model_validator(mode="after")
    def _targets(self) -> BudgetIn:
        if self.scope == "workspace" and not self.workspace:
            raise ValueError("scope workspace needs workspace")
        if self.scope in ("agent", "key") and not self.target:
            raise ValueError(f"scope {self.scope} needs target")
        if self.scope in ("org", "workspace") and self.target:
            raise ValueError(f"scope {self.scope} takes no target")
        return self


class ThresholdEvent(BaseModel):
    threshold: int
    spent: float
    at: datetime


class BudgetOut(BaseModel):
    name: str
    scope: str
    workspace: str
    target: str
    metric: str
    limit: float
    thresholds: list[int]
    period: str
    spent: float
    percent: float
    exceeded: bool
    events: list[ThresholdEvent]


def _out(db: Session, budget: Budget) -> BudgetOut:
    now = datetime.now(UTC)
    spent = int(db.execute(spent_query(budget, month_start(now))).scalar_one())
    period = now.strftime("%Y-%m")
    events = db.exec(
        select(BudgetEvent)
        .where(BudgetEvent.budget_id == budget.id, BudgetEvent.period == period)
        .order_by(col(BudgetEvent.threshold))
    ).all()
    return BudgetOut(
        name=budget.name,
        scope=budget.scope,
        workspace=budget.workspace,
        target=budget.target,
        metric=budget.metric,
        limit=display(budget.metric, budget.amount),
        thresholds=budget.thresholds,
        period=period,
        spent=display(budget.metric, spent),
        percent=round(100 * spent / budget.amount, 2),
        exceeded=spent >= budget.amount,
        events=[
            ThresholdEvent(threshold=e.threshold, spent=display(budget.metric, e.spent), at=e.at)
            for e in events
        ],
    )


@router.put("/orgs/{org}/budgets/{name}", response_model=BudgetOut)
def put_budget(
    org: str, name: Name, body: BudgetIn, principal: CurrentPrincipal, state: State
) -> BudgetOut:
    """Create or replace a budget. Used up, the gateways answer the requests it covers
    402 ``budget_exceeded`` (within about a second) until the month ends or it is raised."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "billing:write")
        if body.workspace:
            found = db.exec(
                select(Workspace).where(
                    Workspace.org_id == access.org.id, Workspace.name == body.workspace
                )
            ).first()
            if found is None:
                raise Problem(
                    422,
                    "unknown-workspace",
                    "No such workspace",
                    f"organization {org} has no workspace {body.workspace!r}",
                )
        amount = round(body.limit) if body.metric == "tokens" else round(body.limit * 1_000_000)
        budget = db.exec(
            select(Budget).where(Budget.org_id == access.org.id, Budget.name == name)
        ).first() or Budget(org_id=access.org.id, name=name, scope="", metric="", amount=0)
        budget.scope, budget.workspace, budget.target = body.scope, body.workspace, body.target
        budget.metric, budget.amount = body.metric, max(1, amount)
        budget.thresholds = sorted(set(body.thresholds))
        db.add(budget)
        db.flush()
        return _out(db, budget)


@router.get("/orgs/{org}/budgets", response_model=list[BudgetOut])
def list_budgets(org: str, principal: CurrentPrincipal, state: State) -> list[BudgetOut]:
    """Every budget with this month's spend and the thresholds crossed."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "billing:read")
        budgets = db.exec(
            select(Budget).where(Budget.org_id == access.org.id).order_by(col(Budget.name))
        ).all()
        return [_out(db, b) for b in budgets]


@router.delete("/orgs/{org}/budgets/{name}", status_code=204)
def delete_budget(org: str, name: Name, principal: CurrentPrincipal, state: State) -> Response:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "billing:write")
        budget = db.exec(
            select(Budget).where(Budget.org_id == access.org.id, Budget.name == name)
        ).first()
        if budget is None:
            raise Problem(404, "not-found", "No such budget", f"budget {name!r}")
        db.delete(budget)
    return Response(status_code=204)
