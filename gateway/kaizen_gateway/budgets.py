"""Budgets at the gateway: before the upstream call, refuse (402 ``budget_exceeded``)
what a used-up budget covers. The facade decides what is used up (it sees all of an
organization's usage) and writes it to this namespace's Redis hash
(``kaizen_api.metering.budget_key``); every replica reads the same hash, at most once per
``ttl`` seconds. While Redis is unavailable the last list read stays in force."""

from __future__ import annotations

import logging
import time

from kaizen_api.metering import ExceededBudget, budget_key
from kaizen_gateway import metrics
from kaizen_gateway.errors import GatewayError
from kaizen_gateway.redislink import RedisLink, RedisUnavailable

log = logging.getLogger("kaizen_gateway.budgets")


class Budgets:
    """The used-up budgets of one namespace, cached briefly."""

    def __init__(self, link: RedisLink | None, ttl: float = 0.5) -> None:
        self.link = link
        self.ttl = ttl
        self._read = 0.0
        self._exceeded: dict[str, ExceededBudget] = {}

    async def exceeded(self, namespace: str) -> dict[str, ExceededBudget]:
        if self.link is None or time.monotonic() - self._read < self.ttl:
            return self._exceeded
        self._read = time.monotonic()
        try:
            raw = await self.link.call(lambda client: client.hgetall(budget_key(namespace)))
        except RedisUnavailable:
            return self._exceeded
        found = {}
        for name, value in raw.items():
            try:
                found[name.decode()] = ExceededBudget.decode(value)
            except (ValueError, KeyError, TypeError):
                log.warning("ignored a malformed budget entry %r", name)
        self._exceeded = found
        return found

    async def check(self, namespace: str, agent: str, caller: str) -> None:
        """Raise the caller's 402 when a used-up budget covers this request."""
        exceeded = await self.exceeded(namespace)
        if not exceeded:
            return
        for name in sorted(exceeded):
            budget = exceeded[name]
            if not budget.applies(agent, caller):
                continue
            metrics.BUDGET_REFUSALS.labels(agent, name).inc()
            unit = "USD" if budget.metric == "cost" else budget.metric
            digits = 4 if unit == "USD" else 0
            spent, limit = f"{budget.spent:,.{digits}f}", f"{budget.limit:,.{digits}f}"
            remedy = (
                f"upgrade the {budget.target} plan"
                if budget.scope == "plan"
                else "raise the budget"
            )
            raise GatewayError(
                402,
                f"budget {name!r} ({budget.scope}) is used up for this month: {spent} of "
                f"{limit} {unit}; {remedy} or wait for the next month",
                type_="insufficient_quota",
                code="budget_exceeded",
                param=name,
            )
