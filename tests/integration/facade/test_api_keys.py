"""API keys: shown once and stored as a hash, scoped to a workspace and permissions,
expiring, revocable, rate limited with Retry-After, never logged."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from kaizen_api.server.models import ApiKey
from tests.support.facade import Facade, agent


def test_keys_are_shown_once_scoped_and_revocable(
    facade: Facade, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    owner = facade.user("owner")
    org = facade.org(owner)
    for ws in ("ml", "ops"):
        facade.workspace(owner, org, ws)
    r = facade.call(
        "POST",
        f"/orgs/{org}/keys",
        owner,
        json={"name": "ci", "workspace": "ml", "permissions": ["agents:*"]},
    )
    assert r.status_code == 201, r.text
    secret = r.json()["key"]
    assert secret.startswith(f"ksk_{r.json()['prefix']}_")
    key_headers = {"authorization": f"Bearer {secret}"}
    engine = facade.client.app.state.kaizen.engine
    with Session(engine) as db:
        stored = db.exec(select(ApiKey)).one()
        assert secret.split("_", 2)[2] not in stored.secret_hash and len(stored.secret_hash) == 64

    ok = facade.call(
        "POST", f"/orgs/{org}/workspaces/ml/agents", headers=key_headers, json=agent("a")
    )
    assert ok.status_code == 201, ok.text
    other_ws = facade.call("GET", f"/orgs/{org}/workspaces/ops/agents", headers=key_headers)
    assert other_ws.status_code == 403 and "another workspace" in other_ws.json()["detail"]
    scaling = facade.call("GET", f"/orgs/{org}/workspaces/ml/gateways", headers=key_headers)
    assert (
        scaling.status_code == 403
        and "scope does not grant gateways:read" in scaling.json()["detail"]
    )

    listed = facade.call("GET", f"/orgs/{org}/keys", owner).json()
    assert listed[0]["last_used_at"] is not None and "key" not in listed[0]
    assert secret not in str(listed)
    assert facade.call("DELETE", f"/orgs/{org}/keys/{listed[0]['id']}", owner).status_code == 204
    revoked = facade.call("GET", f"/orgs/{org}/workspaces/ml/agents", headers=key_headers)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    assert secret not in caplog.text


def test_expired_and_unknown_keys_are_refused(facade: Facade) -> None:
    owner = facade.user("owner")
    org = facade.org(owner)
    r = facade.call(
        "POST", f"/orgs/{org}/keys", owner, json={"name": "old", "permissions": ["*:read"]}
    )
    secret = r.json()["key"]
    engine = facade.client.app.state.kaizen.engine
    with Session(engine) as db:
        key = db.exec(select(ApiKey)).one()
        key.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        db.add(key)
        db.commit()
    expired = facade.call("GET", f"/orgs/{org}", headers={"authorization": f"Bearer {secret}"})
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    forged = secret[:-4] + "AAAA"
    assert (
        facade.call(
            "GET", f"/orgs/{org}", headers={"authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )
    # A key cannot mint keys or see other organizations.
    fresh = facade.call(
        "POST", f"/orgs/{org}/keys", owner, json={"name": "n", "permissions": ["*:*"]}
    ).json()["key"]
    h = {"authorization": f"Bearer {fresh}"}
    assert (
        facade.call(
            "POST", f"/orgs/{org}/keys", headers=h, json={"name": "x", "permissions": ["*:*"]}
        ).status_code
        == 403
    )


def test_rate_limit_answers_429_with_retry_after(facade: Facade) -> None:
    owner = facade.user("owner")
    org = facade.org(owner)
    secret = facade.call(
        "POST", f"/orgs/{org}/keys", owner, json={"name": "hot", "permissions": ["*:read"]}
    ).json()["key"]
    limiter = facade.client.app.state.kaizen.key_limiter
    limiter.limit = 5  # a low limit for the test; the default is 600 per minute
    h = {"authorization": f"Bearer {secret}"}
    codes = [facade.call("GET", f"/orgs/{org}", headers=h).status_code for _ in range(7)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    last = facade.call("GET", f"/orgs/{org}", headers=h)
    assert last.status_code == 429 and 1 <= int(last.headers["retry-after"]) <= 60
    assert last.json()["code"] == "rate-limited"
