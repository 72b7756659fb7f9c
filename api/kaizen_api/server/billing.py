"""Billing periods: each organization's month, closed once into a frozen summary (usage,
cost, plan, overage) with the SHA-256 of its canonical JSON. Closing is idempotent: a
period already closed is left as it was (records arriving late change the rollups, not
the frozen document). ``kaizen-api close-period`` runs it (a CronJob in a cluster).
The summary document is the hook for an external billing system (docs/usage.md)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from kaizen_api.server.models import BillingPeriod, Organization, UsageRollup
from kaizen_api.server.tenancy import MONTHLY, OVERAGE, PLANS

PERIODS = BillingPeriod.__table__  # type: ignore[attr-defined]
ROLLUPS = UsageRollup.__table__  # type: ignore[attr-defined]
ORGS = Organization.__table__  # type: ignore[attr-defined]
SCHEMA = "kaizen.studio/billing-period/v1"


def bounds(period: str) -> tuple[datetime, datetime]:
    """[start, end) of a YYYY-MM month in UTC; ValueError when it is not one."""
    start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def previous_period(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    first = now.replace(day=1)
    return (
        first.replace(year=first.year - 1, month=12)
        if first.month == 1
        else first.replace(month=first.month - 1)
    ).strftime("%Y-%m")


def _sums(row: Any) -> dict[str, Any]:
    requests, executions, tin, tout, tools, cost = (int(v or 0) for v in row)
    return {
        "requests": requests,
        "executions": executions,
        "errors": requests - executions,
        "tokens_in": tin,
        "tokens_out": tout,
        "tool_calls": tools,
        "cost_micro_usd": cost,
    }


def summarize(db: Any, org_id: str, slug: str, plan: str, period: str) -> dict[str, Any]:
    """The summary of one organization's month, from the daily rollups."""
    start, end = bounds(period)
    c = ROLLUPS.c
    columns = [
        func.sum(c.requests),
        func.sum(c.requests).filter(c.outcome == "ok"),
        func.sum(c.tokens_in),
        func.sum(c.tokens_out),
        func.sum(c.tool_calls),
        func.sum(c.cost_micro_usd),
    ]
    where = [c.org_id == org_id, c.period == "day", c.start >= start, c.start < end]
    totals = _sums(db.execute(select(*columns).where(*where)).one())
    by_workspace = {
        ws: _sums(rest)
        for ws, *rest in db.execute(
            select(c.workspace, *columns).where(*where).group_by(c.workspace).order_by(c.workspace)
        )
    }
    by_agent = [
        {"kind": kind, "name": name, **_sums(rest)}
        for kind, name, *rest in db.execute(
            select(c.kind, c.name, *columns)
            .where(*where)
            .group_by(c.kind, c.name)
            .order_by(c.kind, c.name)
        )
    ]
    limits = PLANS.get(plan, {})
    used = {
        "executions": totals["executions"],
        "tokens": totals["tokens_in"] + totals["tokens_out"],
    }
    overage = {
        metric: used[metric] - int(limits[metric] or 0)
        for metric in MONTHLY
        if limits.get(metric) is not None and used[metric] > int(limits[metric] or 0)
    }
    return {
        "schema": SCHEMA,
        "org": slug,
        "period": period,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "plan": {
            "name": plan,
            "overage_rule": OVERAGE.get(plan, "flag"),
            "limits": {m: limits.get(m) for m in MONTHLY},
        },
        "usage": totals,
        "cost_usd": totals["cost_micro_usd"] / 1_000_000,
        "overage": overage,
        "by_workspace": by_workspace,
        "by_agent": by_agent,
    }


def digest(summary: dict[str, Any]) -> str:
    canonical = json.dumps(summary, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def close_period(engine: Engine, period: str, now: datetime | None = None) -> list[str]:
    """Close ``period`` for every organization that has no closed summary of it yet;
    the slugs of those closed now. Refuses a month that has not ended."""
    end = bounds(period)[1]
    now = now or datetime.now(UTC)
    if end > now:
        raise ValueError(f"period {period} has not ended yet (it ends {end.isoformat()})")
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    closed = []
    with engine.begin() as db:
        for org_id, slug, plan, created in db.execute(
            select(ORGS.c.id, ORGS.c.slug, ORGS.c.plan, ORGS.c.created_at)
        ):
            created = created if created.tzinfo else created.replace(tzinfo=UTC)
            if created >= end:
                continue  # the organization did not exist in that month
            summary = summarize(db, org_id, slug, plan, period)
            stmt = insert(PERIODS).values(
                id=hashlib.sha256(f"{org_id}/{period}".encode()).hexdigest()[:32],
                org_id=org_id,
                period=period,
                closed_at=now,
                summary=summary,
                digest=digest(summary),
            )
            stmt = stmt.on_conflict_do_nothing(index_elements=["org_id", "period"])
            if db.execute(stmt.returning(PERIODS.c.id)).first() is not None:
                closed.append(slug)
    return closed
