"""Budgets, the facade's side: how much of each budget this month's usage has spent
(from the daily rollups), the threshold events (once per budget, month and threshold),
and the used-up budgets published into each workspace namespace's Redis keys, where
the gateways read them before each upstream call (kaizen_api.metering.budget_key).

The facade is the one place that sees all of an organization's usage (a gateway's Redis
credentials reach only its own namespace), so it decides what is used up; gateways only
refuse. The lag between a record and a refusal is the consumer's (about a second), as
with LiteLLM's batched spend updates: requests in flight meanwhile may go past a limit.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from kaizen_api.metering import ExceededBudget, budget_key
from kaizen_api.server.models import Budget, BudgetEvent, Organization, UsageRollup, Workspace
from kaizen_api.server.tenancy import MONTHLY, OVERAGE, PLANS

log = logging.getLogger("kaizen_api.budgets")
BUDGETS = Budget.__table__  # type: ignore[attr-defined]
EVENTS = BudgetEvent.__table__  # type: ignore[attr-defined]
ROLLUPS = UsageRollup.__table__  # type: ignore[attr-defined]
WORKSPACES = Workspace.__table__  # type: ignore[attr-defined]
ORGS = Organization.__table__  # type: ignore[attr-defined]


def plan_usage_query(since: datetime) -> Any:
    """(org id, executions, tokens) of every organization since ``since``: executions
    are answered requests (outcome ok)."""
    c = ROLLUPS.c
    return (
        select(
            c.org_id,
            func.coalesce(func.sum(c.requests).filter(c.outcome == "ok"), 0),
            func.coalesce(func.sum(c.tokens_in + c.tokens_out), 0),
        )
        .where(c.period == "day", c.start >= since)
        .group_by(c.org_id)
    )


def plan_event_id(metric: str) -> str:
    """The budget_events key of a plan limit (budget ids are hex; this is not)."""
    return f"plan:{metric}"


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def spent_query(budget: Any, since: datetime) -> Any:
    """This month's spend of ``budget`` (tokens, or micro-USD) from the daily rollups."""
    c = ROLLUPS.c
    amount = c.tokens_in + c.tokens_out if budget.metric == "tokens" else c.cost_micro_usd
    query = select(func.coalesce(func.sum(amount), 0)).where(
        c.org_id == budget.org_id, c.period == "day", c.start >= since
    )
    if budget.workspace:
        query = query.where(c.workspace == budget.workspace)
    if budget.scope == "agent":
        query = query.where(c.kind == "agent", c.name == budget.target)
    if budget.scope == "key":
        query = query.where(c.caller == budget.target)
    return query


def display(metric: str, amount: int) -> float:
    """Cost (micro-USD) as US dollars; tokens and executions as they are."""
    return amount / 1_000_000 if metric == "cost" else float(amount)


class BudgetPublisher:
    """Computes every budget's spend, records threshold events, writes used-up budgets
    to Redis (called by the usage consumer after it stored records)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.written: set[str] = set()  # namespaces whose key holds entries

    def evaluate(self, now: datetime | None = None) -> dict[str, dict[str, str]]:
        """namespace -> {budget name: ExceededBudget JSON}; records threshold events."""
        now = now or datetime.now(UTC)
        since, period = month_start(now), now.strftime("%Y-%m")
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        out: dict[str, dict[str, str]] = {}
        with self.engine.begin() as db:
            budgets = db.execute(select(BUDGETS)).all()
            spaces: dict[str, list[tuple[str, str]]] = {}
            for org_id, name, namespace in db.execute(
                select(WORKSPACES.c.org_id, WORKSPACES.c.name, WORKSPACES.c.namespace)
            ):
                spaces.setdefault(org_id, []).append((name, namespace))
            plans: dict[str, str] = {}
            for org_id, plan in db.execute(select(ORGS.c.id, ORGS.c.plan)):
                plans[org_id] = plan
            for org_id, executions, tokens in db.execute(plan_usage_query(since)):
                plan = plans.get(org_id)
                if plan not in PLANS:
                    continue
                used = {"executions": int(executions), "tokens": int(tokens)}
                for metric in MONTHLY:
                    limit = PLANS[plan][metric]
                    if limit is None or used[metric] < limit:
                        continue
                    stmt = insert(EVENTS).values(
                        budget_id=plan_event_id(metric),
                        org_id=org_id,
                        period=period,
                        threshold=100,
                        spent=used[metric],
                        at=now,
                    )
                    db.execute(
                        stmt.on_conflict_do_nothing(
                            index_elements=["org_id", "budget_id", "period", "threshold"]
                        )
                    )
                    if OVERAGE[plan] != "block":
                        continue  # served, and the month is flagged for billing
                    exceeded = ExceededBudget(
                        scope="plan",
                        target=plan,
                        metric=metric,
                        limit=float(limit),
                        spent=float(used[metric]),
                    ).encode()
                    for _, namespace in spaces.get(org_id, []):
                        out.setdefault(namespace, {})[f"plan-{plan}-{metric}"] = exceeded
            for budget in budgets:
                spent = int(db.execute(spent_query(budget, since)).scalar_one())
                for threshold in sorted(budget.thresholds or []):
                    if spent * 100 < threshold * budget.amount:
                        break
                    stmt = insert(EVENTS).values(
                        budget_id=budget.id,
                        org_id=budget.org_id,
                        period=period,
                        threshold=threshold,
                        spent=spent,
                        at=now,
                    )
                    crossed = stmt.on_conflict_do_nothing(
                        index_elements=["org_id", "budget_id", "period", "threshold"]
                    ).returning(EVENTS.c.id)
                    if db.execute(crossed).first() is not None:
                        log.info(
                            "budget %s of org %s reached %d%% (%s of %s %s)",
                            budget.name,
                            budget.org_id,
                            threshold,
                            display(budget.metric, spent),
                            display(budget.metric, budget.amount),
                            budget.metric,
                        )
                if spent < budget.amount:
                    continue
                exceeded = ExceededBudget(
                    scope=budget.scope,
                    target=budget.target,
                    metric=budget.metric,
                    limit=display(budget.metric, budget.amount),
                    spent=display(budget.metric, spent),
                ).encode()
                for ws, namespace in spaces.get(budget.org_id, []):
                    if not budget.workspace or budget.workspace == ws:
                        out.setdefault(namespace, {})[budget.name] = exceeded
        return out

    def publish(self, client: Any, now: datetime | None = None) -> None:
        """Replace each affected namespace's hash of used-up budgets (one transaction)."""
        exceeded = self.evaluate(now)
        pipe = client.pipeline(transaction=True)
        for namespace in sorted(self.written | set(exceeded)):
            pipe.delete(budget_key(namespace))
            if exceeded.get(namespace):
                pipe.hset(budget_key(namespace), mapping=exceeded[namespace])
        pipe.execute()
        self.written = set(exceeded)
