"""Driving the REST facade in tests: the real app (in process) on a real database,
talking to the real kube-apiserver; helpers to register users and build tenants."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

PASSWORD = "correct horse battery staple"
API = "/api/v1"


@dataclass
class User:
    email: str
    headers: dict[str, str]
    tokens: dict[str, Any] = field(default_factory=dict)


class Facade:
    """A TestClient with shortcuts for the calls every test makes."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.created_orgs: list[str] = []

    def call(self, method: str, path: str, user: User | None = None, **kw: Any) -> Any:
        headers = {**(user.headers if user else {}), **kw.pop("headers", {})}
        return self.client.request(method, API + path, headers=headers, **kw)

    def user(self, name: str) -> User:
        """A registered, logged-in user with a unique email."""
        email = f"{name}-{uuid.uuid4().hex[:6]}@example.com"
        r = self.call("POST", "/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        r = self.call("POST", "/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        tokens = r.json()
        return User(email, {"authorization": f"Bearer {tokens['access_token']}"}, tokens)

    def org(self, owner: User, plan: str = "free") -> str:
        slug = f"o{uuid.uuid4().hex[:8]}"
        r = self.call("POST", "/orgs", owner, json={"slug": slug, "name": slug, "plan": plan})
        assert r.status_code == 201, r.text
        self.created_orgs.append(slug)
        return slug

    def workspace(self, owner: User, org: str, name: str) -> str:
        r = self.call("POST", f"/orgs/{org}/workspaces", owner, json={"name": name})
        assert r.status_code == 201, r.text
        return str(r.json()["namespace"])

    def member(self, admin: User, org: str, user: User, role: str) -> None:
        r = self.call(
            "POST", f"/orgs/{org}/members", admin, json={"email": user.email, "role": role}
        )
        assert r.status_code == 201, r.text

    def ws_member(self, admin: User, org: str, ws: str, subject: str, role: str) -> None:
        r = self.call(
            "PUT",
            f"/orgs/{org}/workspaces/{ws}/members",
            admin,
            json={"subject": subject, "role": role},
        )
        assert r.status_code == 200, r.text


def agent(name: str, prompt: str = "Be brief.") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": prompt},
    }


def pipeline(name: str, *agents: str, pattern: str = "Sequential") -> dict[str, Any]:
    """A Pipeline whose steps call ``agents`` (one step per agent, named after it)."""
    steps = [{"name": a, "agentRef": {"name": a}} for a in agents or ("a",)]
    return {"metadata": {"name": name}, "spec": {"pattern": pattern, "steps": steps}}


def rate_hit_rows(engine: Engine, limiter: str) -> int:
    """How many hits of one rate limiter the facade's database holds."""
    from kaizen_api.server.ratelimit import HITS

    with engine.connect() as db:
        return int(db.execute(select(func.count()).where(HITS.c.limiter == limiter)).scalar_one())
