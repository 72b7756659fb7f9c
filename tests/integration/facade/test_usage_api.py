"""The usage API: sums by hour/day/month with filters, cost by agent, top errors and a
month's export, for owners and billing admins only, and never across organizations."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from kaizen_api.metering import ExceededBudget, UsageRecord
from kaizen_api.server.budgets import BudgetPublisher
from kaizen_api.server.usage import UsageStore
from tests.support.facade import Facade


def served(
    name: str,
    *,
    kind: str = "agent",
    tokens: int = 100,
    cost: float = 0.01,
    outcome: str = "ok",
    caller: str = "anonymous",
    at: float | None = None,
) -> UsageRecord:
    return UsageRecord(
        uid=uuid.uuid4().hex,
        request_id=uuid.uuid4().hex,
        time=at or time.time(),
        gateway="prod",
        kind=kind,
        name=name,
        revision=3,
        caller=caller,
        model="gpt-4o-mini",
        tokens_in=tokens,
        tokens_out=tokens // 2,
        tool_calls=1,
        latency_ms=20.0,
        cost_usd=cost,
        status=200 if outcome == "ok" else 429,
        outcome=outcome,
    )


def test_owners_and_billing_admins_read_their_organizations_usage(facade: Facade) -> None:
    owner, billing, dev = facade.user("owner"), facade.user("billing"), facade.user("dev")
    org = facade.org(owner)
    ns = facade.workspace(owner, org, "ml")
    facade.member(owner, org, billing, "billing_admin")
    facade.member(owner, org, dev, "developer")
    store = UsageStore(facade.client.app.state.kaizen.engine)
    store.ingest(
        [(ns, served("helper")) for _ in range(3)]
        + [(ns, served("writer", tokens=1000, cost=0.5, caller="k1"))]
        + [(ns, served("flow", kind="pipeline", cost=0.02))]
        + [(ns, served("helper", outcome="budget_exceeded", tokens=0, cost=0.0))] * 2
    )

    usage = facade.call("GET", f"/orgs/{org}/usage", billing).json()
    # The same record twice in one batch (a redelivery) is counted once.
    assert usage["totals"]["requests"] == 6
    assert usage["totals"]["errors"] == 1
    assert usage["totals"]["tokens_in"] == 300 + 1000 + 100
    assert round(usage["totals"]["cost_usd"], 6) == 0.55
    assert [(a["kind"], a["name"], a["requests"]) for a in usage["by_agent"]] == [
        ("agent", "writer", 1),
        ("agent", "helper", 4),
        ("pipeline", "flow", 1),
    ]
    assert usage["top_errors"] == [{"outcome": "budget_exceeded", "requests": 1}]
    assert len(usage["series"]) == 1 and usage["series"][0]["requests"] == 6

    hourly = facade.call("GET", f"/orgs/{org}/usage", owner, params={"group": "hour"}).json()
    assert hourly["series"][0]["start"].endswith(":00:00Z") and hourly["totals"]["requests"] == 6
    monthly = facade.call("GET", f"/orgs/{org}/usage", owner, params={"group": "month"}).json()
    start = datetime.fromisoformat(monthly["series"][0]["start"])
    assert (start.day, start.hour) == (1, 0)
    only = facade.call(
        "GET", f"/orgs/{org}/usage", owner, params={"agent": "writer", "key": "k1"}
    ).json()
    assert only["totals"]["requests"] == 1 and only["totals"]["tokens_in"] == 1000
    assert (
        facade.call("GET", f"/orgs/{org}/usage", owner, params={"pipeline": "flow"}).json()[
            "totals"
        ]["requests"]
        == 1
    )
    assert (
        facade.call("GET", f"/orgs/{org}/usage", owner, params={"workspace": "other"}).json()[
            "totals"
        ]["requests"]
        == 0
    )

    period = datetime.now(UTC).strftime("%Y-%m")
    exported = facade.call("GET", f"/orgs/{org}/usage/export", billing, params={"period": period})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 6 and {r["workspace"] for r in rows} == {"ml"}
    assert sum(float(r["cost_usd"]) for r in rows) == usage["totals"]["cost_usd"]
    as_json = facade.call(
        "GET", f"/orgs/{org}/usage/export", owner, params={"period": period, "format": "json"}
    )
    assert len(json.loads(as_json.text)["records"]) == 6

    refused = facade.call("GET", f"/orgs/{org}/usage", dev)
    assert refused.status_code == 403 and "usage:read" in refused.json()["detail"]
    bad = facade.call("GET", f"/orgs/{org}/usage/export", owner, params={"period": "2026-13"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


def test_one_organization_cannot_read_anothers_usage(facade: Facade) -> None:
    alice, mallory = facade.user("alice"), facade.user("mallory")
    org_a, org_m = facade.org(alice), facade.org(mallory)
    ns_a = facade.workspace(alice, org_a, "ml")
    UsageStore(facade.client.app.state.kaizen.engine).ingest([(ns_a, served("secret-agent"))])
    for path in (f"/orgs/{org_a}/usage", f"/orgs/{org_a}/usage/export?period=2026-12"):
        assert facade.call("GET", path, mallory).status_code == 404
    own = facade.call("GET", f"/orgs/{org_m}/usage", mallory).json()
    assert own["totals"]["requests"] == 0 and own["by_agent"] == []


def test_budgets_are_set_by_owners_and_billing_admins_of_their_own_organization(
    facade: Facade,
) -> None:
    owner, billing, dev, other = (facade.user(n) for n in ("owner", "billing", "dev", "other"))
    org, org_other = facade.org(owner), facade.org(other)
    ns = facade.workspace(owner, org, "ml")
    facade.member(owner, org, billing, "billing_admin")
    facade.member(owner, org, dev, "developer")
    body = {"scope": "workspace", "workspace": "ml", "metric": "cost", "limit": 0.05}
    put = facade.call("PUT", f"/orgs/{org}/budgets/ml-cost", billing, json=body)
    assert put.status_code == 200, put.text
    assert put.json()["thresholds"] == [50, 80, 100] and put.json()["spent"] == 0
    UsageStore(facade.client.app.state.kaizen.engine).ingest([(ns, served("helper", cost=0.03))])
    listed = facade.call("GET", f"/orgs/{org}/budgets", owner).json()
    assert listed[0]["spent"] == 0.03 and listed[0]["percent"] == 60.0
    assert not listed[0]["exceeded"]

    missing = facade.call(
        "PUT", f"/orgs/{org}/budgets/x", owner, json={**body, "workspace": "nope"}
    )
    assert missing.status_code == 422 and "nope" in missing.json()["detail"]
    assert facade.call("PUT", f"/orgs/{org}/budgets/x", dev, json=body).status_code == 403
    assert facade.call("GET", f"/orgs/{org}/budgets", dev).status_code == 403
    assert facade.call("GET", f"/orgs/{org}/budgets", other).status_code == 404
    assert facade.call("DELETE", f"/orgs/{org}/budgets/ml-cost", other).status_code == 404
    assert facade.call("GET", f"/orgs/{org_other}/budgets", other).json() == []
    assert facade.call("DELETE", f"/orgs/{org}/budgets/ml-cost", billing).status_code == 204
    assert facade.call("GET", f"/orgs/{org}/budgets", owner).json() == []


def test_a_plans_monthly_limit_blocks_on_free_and_is_flagged_on_pro(facade: Facade) -> None:
    """Free: past its 1M tokens a month the gateways are told to refuse, naming the plan.
    Pro: past its limit requests are served and the month is flagged for billing."""
    free_owner, pro_owner = facade.user("free"), facade.user("pro")
    free, pro = facade.org(free_owner, "free"), facade.org(pro_owner, "pro")
    ns_free, ns_pro = (
        facade.workspace(u, o, "ml") for u, o in ((free_owner, free), (pro_owner, pro))
    )
    engine = facade.client.app.state.kaizen.engine
    UsageStore(engine).ingest(
        [
            (ns_free, served("helper", tokens=600_000)),  # in + out: 900,000
            (ns_pro, served("helper", tokens=30_000_000)),  # 45M of 50M
        ]
    )
    publisher = BudgetPublisher(engine)
    assert publisher.evaluate() == {}  # nobody past a limit yet
    UsageStore(engine).ingest(
        [
            (ns_free, served("helper", tokens=100_000)),  # 1,050,000 of 1M
            (ns_pro, served("helper", tokens=4_000_000)),  # 51M of 50M
        ]
    )
    blocked = publisher.evaluate()
    entry = ExceededBudget.decode(blocked[ns_free]["plan-free-tokens"])
    assert (entry.scope, entry.target, entry.limit) == ("plan", "free", 1_000_000)
    assert entry.applies("any-agent", "any-caller")
    assert ns_pro not in blocked  # pro: flag, not block

    free_usage = facade.call("GET", f"/orgs/{free}/usage", free_owner).json()["plan"]
    assert free_usage["name"] == "free" and free_usage["overage"] == "block"
    assert free_usage["tokens"] == {"used": 1_050_000, "limit": 1_000_000}
    assert free_usage["executions"] == {"used": 2, "limit": 10_000}
    assert free_usage["over"] == ["tokens"]
    pro_usage = facade.call("GET", f"/orgs/{pro}/usage", pro_owner).json()["plan"]
    assert pro_usage["overage"] == "flag" and pro_usage["over"] == ["tokens"]
    with engine.connect() as db:
        flagged = db.execute(
            sa.text("SELECT count(*) FROM budget_events WHERE budget_id = 'plan:tokens'")
        ).scalar_one()
    assert flagged == 2  # each org's, once however often it is evaluated


def test_a_closed_billing_period_is_frozen_and_reproducible(
    facade: Facade, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kaizen_api.server.__main__ import main as kaizen_api
    from kaizen_api.server.billing import close_period, digest

    owner, billing, dev, other = (facade.user(n) for n in ("owner", "billing", "dev", "other"))
    org = facade.org(owner)
    ns = facade.workspace(owner, org, "ml")
    facade.member(owner, org, billing, "billing_admin")
    facade.member(owner, org, dev, "developer")
    engine = facade.client.app.state.kaizen.engine
    with engine.begin() as db:  # an organization that existed in October
        db.execute(
            sa.text("UPDATE organizations SET created_at = :t WHERE slug = :s"),
            {"t": datetime(2026, 9, 1, tzinfo=UTC), "s": org},
        )
    october = datetime(2026, 10, 15, 12, tzinfo=UTC).timestamp()
    november = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
    store = UsageStore(engine)
    store.ingest(
        [(ns, served("helper", cost=0.25, at=october)) for _ in range(3)]
        + [(ns, served("helper", outcome="upstream_error", cost=0.0, at=october))]
        + [(ns, served("helper", cost=9.0, at=november))]
    )
    with pytest.raises(ValueError, match="has not ended"):
        close_period(engine, datetime.now(UTC).strftime("%Y-%m"))

    monkeypatch.setenv("KAIZEN_DATABASE_URL", str(engine.url.render_as_string(False)))
    assert kaizen_api(["close-period", "--period", "2026-10"]) == 0
    assert org in capsys.readouterr().out
    period = facade.call("GET", f"/orgs/{org}/billing/periods/2026-10", billing).json()
    summary = period["summary"]
    assert summary["usage"]["requests"] == 4 and summary["usage"]["errors"] == 1
    assert summary["cost_usd"] == 0.75 and summary["plan"]["name"] == "free"
    assert summary["by_workspace"]["ml"]["requests"] == 4
    assert summary["overage"] == {}
    assert period["digest"] == digest(summary)  # anyone can recompute it from the document

    # Late records and a second run leave the closed month as it was.
    store.ingest([(ns, served("helper", cost=1.0, at=october))])
    assert close_period(engine, "2026-10") == []
    again = facade.call("GET", f"/orgs/{org}/billing/periods/2026-10", owner).json()
    assert again == period
    listed = facade.call("GET", f"/orgs/{org}/billing/periods", owner).json()
    assert [p["period"] for p in listed] == ["2026-10"]

    assert facade.call("GET", f"/orgs/{org}/billing/periods", dev).status_code == 403
    assert facade.call("GET", f"/orgs/{org}/billing/periods/2026-10", other).status_code == 404
    missing = facade.call("GET", f"/orgs/{org}/billing/periods/2026-09", owner)
    assert missing.status_code == 404 and "close-period" in missing.json()["detail"]
