"""The audit trail: one record per mutating request with actor, key, action, outcome
and request id; filters; and the database itself refuses to rewrite or drop it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.support.facade import Facade, agent


def test_mutations_are_recorded_and_filterable(facade: Facade) -> None:
    owner = facade.user("owner")
    org = facade.org(owner)
    facade.workspace(owner, org, "ml")
    r = facade.call(
        "POST",
        f"/orgs/{org}/workspaces/ml/agents",
        owner,
        json=agent("a"),
        headers={"x-request-id": "req-123", "user-agent": "audit-test/1.0"},
    )
    assert r.status_code == 201 and r.headers["x-request-id"] == "req-123"
    facade.call(
        "DELETE", f"/orgs/{org}/workspaces/ml/agents/missing", owner
    )  # a 404 is recorded too
    records = facade.call("GET", f"/orgs/{org}/audit", owner).json()
    assert [(x["action"], x["outcome"]) for x in records] == [
        ("DELETE /orgs/{org}/workspaces/{ws}/{kind}/{name}", 404),
        ("POST /orgs/{org}/workspaces/{ws}/{kind}", 201),
        ("POST /orgs/{org}/workspaces", 201),
        ("POST /orgs", 201),
    ]
    created = records[1]
    assert created["actor"] == owner.email and created["request_id"] == "req-123"
    assert created["user_agent"] == "audit-test/1.0"
    assert created["resource"] == f"/api/v1/orgs/{org}/workspaces/ml/agents"
    only_404 = facade.call("GET", f"/orgs/{org}/audit", owner, params={"outcome": 404}).json()
    assert len(only_404) == 1
    assert facade.call("GET", f"/orgs/{org}/audit", owner, params={"actor": "nobody"}).json() == []


def test_the_database_refuses_to_change_or_delete_audit_records(facade: Facade) -> None:
    owner = facade.user("owner")
    facade.org(owner)
    engine = facade.client.app.state.kaizen.engine
    for statement in (
        "UPDATE audit_records SET actor = 'someone else'",
        "DELETE FROM audit_records",
    ):
        with pytest.raises(sa.exc.DBAPIError) as refused, engine.begin() as conn:
            conn.execute(sa.text(statement))
        assert "audit" in str(refused.value)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM audit_records")).scalar_one() >= 2
    # The retention job may delete only records past 90 days: today's stay.
    assert facade.client.app.state.kaizen.audit.purge(90) == 0
