"""M-H6: an API key limited to one workspace cannot act at the organization level
(members, keys, teams, workspaces, audit, other workspaces), even when its owner is an
org_admin and the key says ``*:*``; inside its workspace it still works."""

from __future__ import annotations

from typing import Any

from tests.support.facade import Facade, User, agent


def refused(r: Any, code: str = "workspace-scoped-key") -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code, r.json()


def ci_key(facade: Facade) -> tuple[User, User, str, dict[str, str]]:
    owner, admin = facade.user("owner"), facade.user("admin")
    org = facade.org(owner, plan="pro")
    facade.member(owner, org, admin, "org_admin")
    facade.workspace(owner, org, "ci")
    facade.workspace(owner, org, "prod")
    r = facade.call(
        "POST",
        f"/orgs/{org}/keys",
        admin,
        json={"name": "leaked-ci", "workspace": "ci", "permissions": ["*:*"]},
    )
    assert r.status_code == 201, r.text
    return owner, admin, org, {"authorization": f"Bearer {r.json()['key']}"}


def test_a_workspace_key_cannot_manage_the_organization(facade: Facade) -> None:
    owner, _, org, key = ci_key(facade)
    attacker = facade.user("attacker")

    def as_key(method: str, path: str, **kw: Any) -> Any:
        return facade.call(method, path, headers=key, **kw)

    refused(as_key("DELETE", f"/orgs/{org}/workspaces/prod"))
    refused(
        as_key("POST", f"/orgs/{org}/members", json={"email": attacker.email, "role": "org_admin"})
    )
    refused(
        as_key("POST", f"/orgs/{org}/invitations", json={"email": attacker.email, "role": "viewer"})
    )
    refused(as_key("GET", f"/orgs/{org}/members"))
    refused(as_key("GET", f"/orgs/{org}/audit"))
    refused(as_key("GET", f"/orgs/{org}/keys"))
    refused(as_key("GET", f"/orgs/{org}/teams"))
    refused(as_key("POST", f"/orgs/{org}/teams", json={"name": "t"}))
    refused(as_key("POST", f"/orgs/{org}/workspaces", json={"name": "new"}))
    # Nothing happened: prod is there, the attacker is not a member.
    members = facade.call("GET", f"/orgs/{org}/members", owner).json()
    assert attacker.email not in {m["email"] for m in members}
    assert facade.call("GET", f"/orgs/{org}/workspaces/prod", owner).status_code == 200


def test_a_workspace_key_reaches_its_workspace_only(facade: Facade) -> None:
    _, _, org, key = ci_key(facade)
    listed = facade.call("GET", f"/orgs/{org}/workspaces", headers=key)
    assert listed.status_code == 200, listed.text
    assert [w["name"] for w in listed.json()] == ["ci"]
    ok = facade.call("POST", f"/orgs/{org}/workspaces/ci/agents", headers=key, json=agent("a"))
    assert ok.status_code == 201, ok.text
    refused(facade.call("GET", f"/orgs/{org}/workspaces/prod/agents", headers=key), "forbidden")
    refused(facade.call("GET", f"/orgs/{org}/workspaces/prod", headers=key), "forbidden")
    refused(
        facade.call(
            "PUT",
            f"/orgs/{org}/workspaces/prod/members",
            headers=key,
            json={"subject": "team:x", "role": "admin"},
        ),
        "forbidden",
    )


def test_deleting_a_workspace_needs_a_role_in_it(facade: Facade) -> None:
    """An organization-wide key still needs workspaces:delete in its scope."""
    owner = facade.user("owner")
    org = facade.org(owner)
    facade.workspace(owner, org, "dev")
    r = facade.call(
        "POST", f"/orgs/{org}/keys", owner, json={"name": "ro", "permissions": ["*:read"]}
    )
    key = {"authorization": f"Bearer {r.json()['key']}"}
    refused(facade.call("DELETE", f"/orgs/{org}/workspaces/dev", headers=key), "forbidden")
    assert facade.call("GET", f"/orgs/{org}/workspaces/dev", owner).status_code == 200
