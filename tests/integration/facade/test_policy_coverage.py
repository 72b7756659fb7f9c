"""Every route of the app consults the organization's access policies: with a policy
that forbids everything, each organization route answers 403 policy-denied to the
organization's owner, except policy administration (never subject to policies, so
owners cannot lock themselves out) and platform-administrator routes. Routes outside
any organization must be listed here, so a new route is classified, not forgotten.
The routes are enumerated from the app itself: ones added later are covered too."""

from __future__ import annotations

import re
from typing import Any

from fastapi.routing import APIRoute

from tests.support.facade import API, Facade, agent

FORBID_ALL = "forbid (principal, action, resource);"
# Routes of no organization (authentication, the caller's own organizations, the schema).
OUTSIDE_ORGS = {
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/auth/refresh"),
    ("POST", "/auth/logout"),
    ("GET", "/auth/me"),
    ("POST", "/orgs"),
    ("GET", "/orgs"),
    ("POST", "/invitations/accept"),
    ("GET", "/policies/schema"),
    ("GET", "/webhooks/event-types"),
}
# Organization routes not subject to its policies.
EXEMPT = re.compile(r"^/orgs/\{org\}/(policies|policy-mode|policy-check)\b|^/orgs/\{org\}/plan$")
PARAMS = {
    "ws": "ml",
    "kind": "agents",
    "name": "x",
    "team": "t",
    "key_id": "k",
    "user_id": "u",
    "subject": "team:t",
    "webhook_id": "w",
    "delivery_id": "1",
    "period": "2026-11",
}
# Required query parameters, so that validation (422) does not hide the check.
QUERIES = {("GET", "/orgs/{org}/usage/export"): "?period=2026-11"}
EMAIL = {"email": "someone@example.com", "role": "viewer"}
# Valid bodies, so that a route's own validation (422) does not hide its check.
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/orgs/{org}/policies/{name}"): {"cedar": FORBID_ALL},
    ("PUT", "/orgs/{org}/policy-mode"): {"mode": "restrict"},
    ("POST", "/orgs/{org}/policy-check"): {"permission": "agents:read"},
    ("POST", "/orgs/{org}/webhooks"): {"url": "https://hooks.example.com/kaizen"},
    ("PATCH", "/orgs/{org}/webhooks/{webhook_id}"): {"active": True},
    ("POST", "/orgs/{org}/webhooks/{webhook_id}/rotate"): {},
    ("PUT", "/orgs/{org}/budgets/{name}"): {"scope": "org", "metric": "tokens", "limit": 1000},
    ("PUT", "/orgs/{org}/plan"): {"plan": "pro"},
    ("POST", "/orgs/{org}/members"): EMAIL,
    ("PUT", "/orgs/{org}/members/{user_id}"): EMAIL,
    ("POST", "/orgs/{org}/invitations"): EMAIL,
    ("POST", "/orgs/{org}/teams"): {"name": "t"},
    ("POST", "/orgs/{org}/teams/{team}/members"): {"email": "someone@example.com"},
    ("POST", "/orgs/{org}/keys"): {"name": "k", "permissions": ["agents:read"]},
    ("POST", "/orgs/{org}/workspaces"): {"name": "w"},
    ("PUT", "/orgs/{org}/workspaces/{ws}/members"): {"subject": "team:t", "role": "viewer"},
    ("POST", "/orgs/{org}/workspaces/{ws}/{kind}"): agent("x"),
    ("PUT", "/orgs/{org}/workspaces/{ws}/{kind}/{name}"): agent("x"),
    ("POST", "/orgs/{org}/workspaces/{ws}/promotions/{name}/approve"): {"reason": "r"},
    ("POST", "/orgs/{org}/workspaces/{ws}/promotions/{name}/reject"): {"reason": "r"},
    ("POST", "/orgs/{org}/workspaces/{ws}/{kind}/{name}/rollback"): {"revision": 1},
    ("PUT", "/orgs/{org}/workspaces/{ws}/scalingpolicies/{name}/override"): {
        "mode": "Pin",
        "replicas": 1,
        "reason": "r",
    },
}


def _routes(facade: Facade) -> list[tuple[str, str, APIRoute]]:
    found = []
    for route in facade.client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, APIRoute) and route.path.startswith(API):
            for method in sorted(route.methods):
                found.append((method, route.path.removeprefix(API), route))
    return found


def test_every_organization_route_consults_the_policies(facade: Facade) -> None:
    owner = facade.user("owner")
    org = facade.org(owner)
    facade.workspace(owner, org, "ml")
    saved = facade.call(
        "PUT", f"/orgs/{org}/policies/deny-everything", owner, json={"cedar": FORBID_ALL}
    )
    assert saved.status_code == 201, saved.text
    routes = _routes(facade)
    assert len(routes) >= 45
    unclassified, not_denied = [], []
    for method, template, route in routes:
        if "{org}" not in template:
            if (method, template) not in OUTSIDE_ORGS:
                unclassified.append(f"{method} {template}")
            continue
        path = template.replace("{org}", org)
        for param, value in PARAMS.items():
            path = path.replace("{" + param + "}", value)
        path += QUERIES.get((method, template), "")
        assert "{" not in path, f"add a sample value for {path} to PARAMS"
        body = BODIES.get((method, template))
        if route.body_field is not None and body is None:
            unclassified.append(f"{method} {template}: add a valid body to BODIES")
            continue
        answer = facade.call(method, path, owner, json=body)
        denied = answer.status_code == 403 and answer.json().get("code") == "policy-denied"
        if EXEMPT.search(template):
            assert not denied, f"{method} {template} must not be subject to policies"
        elif not denied or answer.json()["policies"] != ["deny-everything"]:
            not_denied.append(f"{method} {template}: {answer.status_code} {answer.text[:200]}")
    assert not unclassified, "classify these routes:\n" + "\n".join(unclassified)
    assert not not_denied, "routes that did not consult the policies:\n" + "\n".join(not_denied)
