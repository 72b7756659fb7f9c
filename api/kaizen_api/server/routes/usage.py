"""Reading usage (``usage:read``: organization owners and billing admins): sums by
hour, day or month with filters, cost by agent, top errors; a month's raw records as
CSV or JSON."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlmodel import col
from sqlmodel import select as select_model

from kaizen_api.server.access import CurrentPrincipal
from kaizen_api.server.budgets import plan_usage_query
from kaizen_api.server.db import aware, session
from kaizen_api.server.models import BillingPeriod
from kaizen_api.server.problems import API_PREFIX, PROBLEM_RESPONSES, Problem
from kaizen_api.server.routes.orgs import access_to
from kaizen_api.server.state import AppState, app_state
from kaizen_api.server.tenancy import MONTHLY, OVERAGE, PLANS
from kaizen_api.server.usage import RECORDS, ROLLUPS

router = APIRouter(prefix=API_PREFIX, responses=PROBLEM_RESPONSES, tags=["usage"])
State = Annotated[AppState, Depends(app_state)]
Text = Annotated[str | None, Query(max_length=253)]


class Sums(BaseModel):
    requests: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tool_calls: int = 0
    cost_usd: float = 0.0
    mean_latency_ms: float = 0.0


class Bucket(Sums):
    start: datetime


class ByAgent(Sums):
    kind: str  # agent | pipeline
    name: str


class ErrorCount(BaseModel):
    outcome: str
    requests: int


class PlanLimit(BaseModel):
    used: int
    limit: int | None  # None: unlimited


class PlanUsage(BaseModel):
    """This month's use of the plan's monthly limits (whatever since/until say)."""

    name: str
    period: str
    overage: str  # block: gateways refuse past a limit; flag: served, flagged for billing
    executions: PlanLimit
    tokens: PlanLimit
    over: list[str]  # the limits reached this month


class UsageOut(BaseModel):
    org: str
    plan: PlanUsage
    since: datetime
    until: datetime
    group: str
    totals: Sums
    series: list[Bucket]
    by_agent: list[ByAgent]
    top_errors: list[ErrorCount]


def _sums_columns() -> list[Any]:
    c = ROLLUPS.c
    errors = func.sum(func.coalesce(c.requests, 0)).filter(c.outcome != "ok")
    return [
        func.sum(c.requests),
        errors,
        func.sum(c.tokens_in),
        func.sum(c.tokens_out),
        func.sum(c.tool_calls),
        func.sum(c.cost_micro_usd),
        func.sum(c.latency_ms),
    ]


def _sums(row: Any) -> dict[str, Any]:
    # PostgreSQL's sum() of BIGINT is NUMERIC (Decimal): back to int and float here.
    requests, errors, tin, tout, tools, cost = (int(v or 0) for v in row[:6])
    latency = float(row[6] or 0)
    return {
        "requests": int(requests),
        "errors": int(errors),
        "tokens_in": int(tin),
        "tokens_out": int(tout),
        "tool_calls": int(tools),
        "cost_usd": int(cost) / 1_000_000,
        "mean_latency_ms": round(float(latency) / requests, 3) if requests else 0.0,
    }


def month_start(t: datetime) -> datetime:
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _period(period: str) -> tuple[datetime, datetime]:
    try:
        start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    except ValueError as exc:
        raise Problem(
            422, "invalid-period", "Invalid period", f"period {period!r} is not YYYY-MM"
        ) from exc
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


@router.get("/orgs/{org}/usage", response_model=UsageOut)
def read_usage(
    org: str,
    principal: CurrentPrincipal,
    state: State,
    since: Annotated[
        datetime | None, Query(description="from (default: this month's start, UTC)")
    ] = None,
    until: Annotated[datetime | None, Query(description="to, excluded (default: now)")] = None,
    group: Literal["hour", "day", "month"] = "day",
    workspace: Annotated[str | None, Query(max_length=30)] = None,
    gateway: Text = None,
    agent: Text = None,
    pipeline: Text = None,
    key: Annotated[str | None, Query(max_length=253, description="the caller (key hash)")] = None,
    model: Text = None,
) -> UsageOut:
    """Sums of the organization's usage per hour, day or month (buckets whose start is in
    [since, until)), in total, by agent/pipeline (most expensive first) and the ten most
    frequent errors. Read from the rollups, so raw-record retention does not shorten it."""
    now = datetime.now(UTC)
    since = aware(since) if since else month_start(now)
    until = aware(until) if until else now
    if until <= since:
        raise Problem(422, "invalid-range", "Invalid time range", "until must be after since")
    with session(state.engine) as db:
        access = access_to(db, principal, org, "usage:read")
        c = ROLLUPS.c
        where = [
            c.org_id == access.org.id,
            c.period == ("hour" if group == "hour" else "day"),
            c.start >= since,
            c.start < until,
        ]
        for column, value in (
            (c.workspace, workspace),
            (c.gateway, gateway),
            (c.caller, key),
            (c.model, model),
        ):
            if value is not None:
                where.append(column == value)
        if agent is not None:
            where += [c.kind == "agent", c.name == agent]
        if pipeline is not None:
            where += [c.kind == "pipeline", c.name == pipeline]
        sums = _sums_columns()
        totals = db.execute(select(*sums).where(*where)).one()
        series_rows = db.execute(
            select(c.start, *sums).where(*where).group_by(c.start).order_by(c.start)
        ).all()
        agent_rows = db.execute(
            select(c.kind, c.name, *sums).where(*where).group_by(c.kind, c.name)
        ).all()
        error_rows = db.execute(
            select(c.outcome, func.sum(c.requests).label("n"))
            .where(*where, c.outcome != "ok")
            .group_by(c.outcome)
            .order_by(func.sum(c.requests).desc(), c.outcome)
            .limit(10)
        ).all()
        this_month = db.execute(
            plan_usage_query(month_start(now)).where(c.org_id == access.org.id)
        ).first()
        plan_name = access.org.plan
    used = {
        "executions": int(this_month[1]) if this_month else 0,
        "tokens": int(this_month[2]) if this_month else 0,
    }
    limits = PLANS.get(plan_name, {})
    plan = PlanUsage(
        name=plan_name,
        period=now.strftime("%Y-%m"),
        overage=OVERAGE.get(plan_name, "flag"),
        executions=PlanLimit(used=used["executions"], limit=limits.get("executions")),
        tokens=PlanLimit(used=used["tokens"], limit=limits.get("tokens")),
        over=[m for m in MONTHLY if limits.get(m) is not None and used[m] >= (limits[m] or 0)],
    )
    series: dict[datetime, dict[str, Any]] = {}
    for row in series_rows:
        start = aware(row[0])
        bucket = month_start(start) if group == "month" else start
        add = _sums(row[1:])
        found = series.get(bucket)
        if found is None:
            series[bucket] = {**add, "_latency": add["mean_latency_ms"] * add["requests"]}
            continue
        for name in ("requests", "errors", "tokens_in", "tokens_out", "tool_calls"):
            found[name] += add[name]
        found["cost_usd"] = round(found["cost_usd"] + add["cost_usd"], 6)
        found["_latency"] += add["mean_latency_ms"] * add["requests"]
    buckets = []
    for start, values in series.items():
        latency = values.pop("_latency")
        values["mean_latency_ms"] = (
            round(latency / values["requests"], 3) if values["requests"] else 0.0
        )
        buckets.append(Bucket(start=start, **values))
    by_agent = sorted(
        (ByAgent(kind=r[0], name=r[1], **_sums(r[2:])) for r in agent_rows),
        key=lambda a: (-a.cost_usd, -a.requests, a.name),
    )
    return UsageOut(
        org=org,
        plan=plan,
        since=since,
        until=until,
        group=group,
        totals=Sums(**_sums(totals)),
        series=buckets,
        by_agent=by_agent,
        top_errors=[ErrorCount(outcome=r[0], requests=int(r[1])) for r in error_rows],
    )


EXPORT_COLUMNS = (
    "time",
    "request_id",
    "workspace",
    "gateway",
    "kind",
    "name",
    "revision",
    "caller",
    "model",
    "tokens_in",
    "tokens_out",
    "tool_calls",
    "latency_ms",
    "cost_usd",
    "status",
    "outcome",
)


@router.get(
    "/orgs/{org}/usage/export",
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}},
)
def export_usage(
    org: str,
    principal: CurrentPrincipal,
    state: State,
    period: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$", description="the month, YYYY-MM")],
    format: Literal["csv", "json"] = "csv",
) -> Any:
    """Every raw usage record of one month (UTC), oldest first: one CSV row or JSON
    object per request. Raw records are kept for KAIZEN_USAGE_RETENTION_DAYS."""
    start, end = _period(period)
    with session(state.engine) as db:
        access = access_to(db, principal, org, "usage:read")
        c = RECORDS.c
        rows = db.execute(
            select(*(c[n] for n in EXPORT_COLUMNS if n != "cost_usd"), c.cost_micro_usd)
            .where(c.org_id == access.org.id, c.time >= start, c.time < end)
            .order_by(c.time, c.id)
        ).all()
    records = [
        {
            **dict(zip(EXPORT_COLUMNS[:-3], r[:-3], strict=True)),
            "time": aware(r[0]).isoformat(),
            "status": r[-3],
            "outcome": r[-2],
            "cost_usd": r[-1] / 1_000_000,
        }
        for r in rows
    ]
    name = f"usage-{org}-{period}"
    if format == "json":
        return JSONResponse(
            {"org": org, "period": period, "records": records},
            headers={"content-disposition": f'attachment; filename="{name}.json"'},
        )

    def lines() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow(record)
            if out.tell() > 65536:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


class PeriodOut(BaseModel):
    period: str
    closed_at: datetime
    digest: str  # SHA-256 of the summary's canonical JSON (sorted keys, no spaces)
    summary: dict[str, Any]


@router.get("/orgs/{org}/billing/periods", response_model=list[PeriodOut])
def list_periods(org: str, principal: CurrentPrincipal, state: State) -> list[PeriodOut]:
    """The organization's closed months, newest first, with their frozen summaries."""
    with session(state.engine) as db:
        access = access_to(db, principal, org, "billing:read")
        rows = db.exec(
            select_model(BillingPeriod)
            .where(BillingPeriod.org_id == access.org.id)
            .order_by(col(BillingPeriod.period).desc())
        ).all()
    return [
        PeriodOut(period=p.period, closed_at=aware(p.closed_at), digest=p.digest, summary=p.summary)
        for p in rows
    ]


@router.get("/orgs/{org}/billing/periods/{period}", response_model=PeriodOut)
def read_period(
    org: str,
    period: Annotated[str, Path(pattern=r"^\d{4}-\d{2}$")],
    principal: CurrentPrincipal,
    state: State,
) -> PeriodOut:
    with session(state.engine) as db:
        access = access_to(db, principal, org, "billing:read")
        found = db.exec(
            select_model(BillingPeriod).where(
                BillingPeriod.org_id == access.org.id, BillingPeriod.period == period
            )
        ).first()
    if found is None:
        raise Problem(
            404,
            "not-found",
            "No such billing period",
            f"{period} is not closed for {org} (kaizen-api close-period closes last month)",
        )
    return PeriodOut(
        period=found.period,
        closed_at=aware(found.closed_at),
        digest=found.digest,
        summary=found.summary,
    )
