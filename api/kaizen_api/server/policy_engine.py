"""Access policies in Cedar (pure: no database, no clock, no request).

An organization's policies are Cedar statements (``permit`` / ``forbid``) over the
entities of :data:`SCHEMA`: the caller (``Kaizen::User``), the thing acted on
(``Kaizen::Resource``, its labels as Cedar tags) and the request's context (time,
source address). The engine is `cedarpy` (the Cedar project's Rust evaluator); this
module only compiles stored policies into one ``PolicySet`` and reads its answers.

How Cedar's default-deny composes with roles (see docs/policies.md):

- Roles and key scopes decide first; a request they refuse never reaches the policies.
- ``restrict`` mode (the default): policies can only take away. Compiled with an
  implicit ``permit`` standing for "the role allowed it", so only a matching
  ``forbid`` denies.
- ``permit-required`` mode: a request also needs a matching ``permit`` (Cedar's own
  default-deny), and any ``forbid`` still wins.

A ``forbid`` whose evaluation fails (Cedar skips erroring policies) denies too: a
broken guard fails closed, never open.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import cedarpy

NAMESPACE = "Kaizen"
MODES = ("restrict", "permit-required")
ROLES_POLICY = "kaizen-roles"  # the implicit permit of restrict mode
VERBS = ("read", "create", "update", "delete", "approve")
WRITE_VERBS = ("create", "update", "delete", "approve")
POLICY_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
MAX_POLICY_CHARS = 16_384

SCHEMA = """\
// Kaizen Studio access policies: the entities and actions a policy may name.
// Times are UTC. Absent values are "" or empty sets, never missing attributes.
namespace Kaizen {
  // Teams of the organization: `principal in Kaizen::Team::"contractors"`.
  entity Team;
  // Workspaces: `resource in Kaizen::Workspace::"sandbox"`.
  entity Workspace;

  // The caller: a user with their own login, or through one of their API keys.
  entity User in [Team] = {
    email: String,          // lower case
    emailDomain: String,    // the part after the @
    // organization role: org_owner | org_admin | developer | viewer | billing_admin
    role: String,
    workspaceRole: String,  // admin | developer | viewer in the request's workspace; "" outside one
    teams: Set<String>,     // the caller's teams in this organization
    isApiKey: Bool,         // the request came with an API key
    keyScopes: Set<String>, // that key's permissions (e.g. "agents:*"); empty for a login
    keyWorkspace: String,   // the workspace that key is limited to; "" when none
  };

  // What the request acts on. Labels of the object are its tags:
  // `resource.hasTag("tier") && resource.getTag("tier") == "critical"`.
  entity Resource in [Workspace] = {
    // agents | gateways | scalingpolicies | promotions | workspaces | members | teams |
    // keys | audit | orgs | ... (the permission's resource part)
    kind: String,
    name: String,              // the object's name; "" for a collection
    workspace: String,         // "" for organization-level requests
    // a Promotion's target Gateway environment (e.g. "production"); "" otherwise
    targetEnvironment: String,
  } tags String;

  type Context = {
    permission: String, // the permission the route needs, e.g. "agents:delete"
    method: String,     // GET | POST | PUT | PATCH | DELETE
    now: datetime,      // the request's time (UTC)
    hour: Long,         // 0..23, UTC
    minute: Long,       // 0..59
    dayOfWeek: Long,    // 1 Monday .. 7 Sunday, UTC
    sourceIp: ipaddr,   // the client (X-Forwarded-For only from trusted proxies)
  };

  // Any change: `action in Kaizen::Action::"write"`.
  action "write";
  action "read" appliesTo { principal: User, resource: Resource, context: Context };
  action "create", "update", "delete", "approve" in ["write"]
    appliesTo { principal: User, resource: Resource, context: Context };
  // Verbs without an action of their own (the permission is in context.permission).
  action "other" in ["write"] appliesTo { principal: User, resource: Resource, context: Context };
}
"""

_SCHEMA = cedarpy.Schema.from_str(SCHEMA)
_ERRORED = re.compile(r"policy `([^`]*)`")


def _uid(kind: str, name: str) -> dict[str, str]:
    return {"type": f"{NAMESPACE}::{kind}", "id": name}


def _action_entities() -> str:
    actions: list[dict[str, Any]] = [{"uid": _uid("Action", "write"), "attrs": {}, "parents": []}]
    actions.append({"uid": _uid("Action", "read"), "attrs": {}, "parents": []})
    for verb in (*WRITE_VERBS, "other"):
        parents = [_uid("Action", "write")]
        actions.append({"uid": _uid("Action", verb), "attrs": {}, "parents": parents})
    return json.dumps(actions)


_ACTIONS = cedarpy.Entities.from_json_str(_action_entities())


def action_of(permission: str) -> str:
    """The Cedar action of a permission string (``agents:delete`` -> ``delete``)."""
    verb = permission.partition(":")[2]
    return verb if verb in VERBS else "other"


class InvalidPolicy(ValueError):
    """Policy text Cedar refuses; ``errors`` are the engine's messages."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


def statements(text: str) -> dict[str, Any]:
    """The static policies of ``text`` in Cedar's JSON form, in order (parse only)."""
    try:
        parsed = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        raise InvalidPolicy([f"Policy parse error: {exc}"]) from exc
    if parsed.get("templates"):
        raise InvalidPolicy(["templates (?principal / ?resource slots) are not supported"])
    found: dict[str, Any] = parsed.get("staticPolicies") or {}
    if not found:
        raise InvalidPolicy(["no policy statement: write at least one permit or forbid"])
    return found


def validate(text: str) -> int:
    """Check ``text`` against :data:`SCHEMA` (strict validation: unknown attributes,
    wrong types and unsafe optional access are errors); the number of statements.
    Raises :class:`InvalidPolicy` with the engine's messages."""
    if len(text) > MAX_POLICY_CHARS:
        raise InvalidPolicy([f"a policy may have at most {MAX_POLICY_CHARS} characters"])
    count = len(statements(text))
    result = cedarpy.validate_policies(text, _SCHEMA)
    if not result.validation_passed:
        raise InvalidPolicy([str(e) for e in result.errors] or ["validation failed"])
    return count


@dataclass(frozen=True)
class StoredPolicy:
    """One named policy of an organization (one or more Cedar statements)."""

    name: str
    text: str


@dataclass(frozen=True)
class Compiled:
    """An organization's policies, ready to evaluate."""

    mode: str = "restrict"
    version: int = 0
    policy_set: Any = None  # cedarpy.PolicySet of every statement; None: nothing to evaluate
    by_action: Mapping[str, Any] = field(default_factory=dict)  # the statements an action can match
    forbids: frozenset[str] = frozenset()  # statement ids of forbid statements
    count: int = 0  # named policies
    needs_labels: bool = False  # some policy reads resource tags
    needs_target: bool = False  # some policy reads resource.targetEnvironment
    uses_now: bool = False  # some policy reads context.now (else the minute decides)
    uses_name: bool = False  # some policy reads the object's name (or names a Resource)

    @property
    def trivial(self) -> bool:
        """True when evaluation cannot deny (restrict mode and no policy)."""
        return self.policy_set is None and self.mode == "restrict"


def statement_id(name: str, index: int) -> str:
    return f"{name}#{index}"


def policy_name(statement: str) -> str:
    """The stored policy a statement id belongs to."""
    return statement.rpartition("#")[0] or statement


def _policy_set_json(statements_by_id: Mapping[str, Any]) -> str:
    return json.dumps({"staticPolicies": statements_by_id, "templates": {}, "templateLinks": []})


def _may_match(body: Mapping[str, Any], action: str) -> bool:
    """Whether a statement's action scope admits ``action`` (Cedar evaluates every
    statement of a set; leaving out those scoped to other actions saves their cost).
    A scope this does not understand is kept: Cedar then decides."""
    scope = body.get("action") or {}
    op = scope.get("op")
    if op == "All":
        return True
    named = [scope["entity"]] if "entity" in scope else list(scope.get("entities") or [])
    if op not in ("==", "in") or not named:
        return True
    ids = {e.get("id") for e in named if e.get("type") == f"{NAMESPACE}::Action"}
    if len(ids) != len(named):
        return True
    if op == "in" and "write" in ids and action != "read":
        return True
    return action in ids


def compile_policies(policies: Iterable[StoredPolicy], mode: str, version: int) -> Compiled:
    """One PolicySet of every statement, each with the id ``<policy>#<n>`` so that a
    decision names the policy; restrict mode adds the implicit roles permit."""
    combined: dict[str, Any] = {}
    forbids: set[str] = set()
    count = 0
    for policy in policies:
        count += 1
        for index, body in enumerate(statements(policy.text).values()):
            sid = statement_id(policy.name, index)
            combined[sid] = body
            if body.get("effect") == "forbid":
                forbids.add(sid)
    if not combined and mode == "restrict":
        return Compiled(mode=mode, version=version)
    if mode == "restrict":
        combined[ROLES_POLICY] = json.loads(
            cedarpy.policies_to_json_str("permit (principal, action, resource);")
        )["staticPolicies"]["policy0"]
    text = _policy_set_json(combined)
    return Compiled(
        mode=mode,
        version=version,
        policy_set=cedarpy.PolicySet.from_json_str(text),
        by_action={
            action: cedarpy.PolicySet.from_json_str(
                _policy_set_json({k: v for k, v in combined.items() if _may_match(v, action)})
            )
            for action in (*VERBS, "other")
        },
        forbids=frozenset(forbids),
        count=count,
        needs_labels='"getTag"' in text or '"hasTag"' in text,
        needs_target='"targetEnvironment"' in text,
        uses_now='"attr": "now"' in text,
        uses_name='"attr": "name"' in text or f'"{NAMESPACE}::Resource"' in text,
    )


@dataclass(frozen=True)
class Subject:
    """The caller's attributes (``Kaizen::User``)."""

    id: str
    email: str
    role: str
    workspace_role: str = ""
    teams: tuple[str, ...] = ()
    key_scopes: tuple[str, ...] | None = None  # None: not an API key
    key_workspace: str = ""


@dataclass(frozen=True)
class Target:
    """What is acted on (``Kaizen::Resource``)."""

    kind: str
    name: str = ""
    workspace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    target_environment: str = ""


@dataclass(frozen=True)
class Circumstances:
    """The request's context."""

    permission: str
    method: str
    now: datetime
    source_ip: str  # a parseable address; "0.0.0.0" when unknown


@dataclass(frozen=True)
class Decision:
    """Allowed or not, and by which policies (their names)."""

    allowed: bool
    policies: tuple[str, ...]  # the determining policies (forbids on deny, permits on allow)
    reason: str  # "no-policies" | "roles" | "permitted" | "forbidden" | "not-permitted" | "error"
    errors: tuple[str, ...] = ()


def _entities(subject: Subject, target: Target) -> str:
    user = {
        "uid": _uid("User", subject.id),
        "attrs": {
            "email": subject.email,
            "emailDomain": subject.email.rpartition("@")[2],
            "role": subject.role,
            "workspaceRole": subject.workspace_role,
            "teams": list(subject.teams),
            "isApiKey": subject.key_scopes is not None,
            "keyScopes": list(subject.key_scopes or ()),
            "keyWorkspace": subject.key_workspace,
        },
        "parents": [_uid("Team", t) for t in subject.teams],
    }
    resource = {
        "uid": _uid("Resource", f"{target.workspace}/{target.kind}/{target.name}"),
        "attrs": {
            "kind": target.kind,
            "name": target.name,
            "workspace": target.workspace,
            "targetEnvironment": target.target_environment,
        },
        "parents": [_uid("Workspace", target.workspace)] if target.workspace else [],
        "tags": {str(k): str(v) for k, v in target.labels.items()},
    }
    return json.dumps([user, resource])


def _context(c: Circumstances, with_now: bool) -> str:
    now = c.now.astimezone(UTC)
    context: dict[str, Any] = {
        "permission": c.permission,
        "method": c.method,
        "hour": now.hour,
        "minute": now.minute,
        "dayOfWeek": now.isoweekday(),
        "sourceIp": {"__extn": {"fn": "ip", "arg": c.source_ip}},
    }
    if with_now:  # parsing a datetime costs a third of a small set's evaluation
        context["now"] = {"__extn": {"fn": "datetime", "arg": now.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    return json.dumps(context)


def decision_key(
    compiled: Compiled, subject: Subject, target: Target, circumstances: Circumstances
) -> tuple[Any, ...]:
    """Everything a decision depends on, so that equal keys get equal decisions: the
    set's version, the caller, the target (its name only if a policy reads names), and
    the request's context (its time to the minute, or to the second when a policy
    reads ``context.now``)."""
    now = circumstances.now.astimezone(UTC)
    moment = (
        now.replace(microsecond=0) if compiled.uses_now else now.replace(second=0, microsecond=0)
    )
    return (
        compiled.version,
        compiled.mode,
        subject,
        target.kind,
        target.name if compiled.uses_name else None,  # else decisions differ not by name
        target.workspace,
        tuple(sorted(target.labels.items())),
        target.target_environment,
        circumstances.permission,
        circumstances.method,
        circumstances.source_ip,
        moment,
    )


def decide(
    compiled: Compiled, subject: Subject, target: Target, circumstances: Circumstances
) -> Decision:
    """Cedar's answer for a request the caller's role already allows."""
    if compiled.policy_set is None:
        if compiled.mode == "restrict":
            return Decision(True, (), "no-policies")
        return Decision(False, (), "not-permitted")
    request = {
        "principal": _uid("User", subject.id),
        "action": _uid("Action", action_of(circumstances.permission)),
        "resource": _uid("Resource", f"{target.workspace}/{target.kind}/{target.name}"),
        "context": _context(circumstances, compiled.uses_now),
    }
    entities = _ACTIONS.with_added_json_str(_entities(subject, target))
    policy_set = compiled.by_action.get(action_of(circumstances.permission), compiled.policy_set)
    result = cedarpy.is_authorized(request, policy_set, entities)
    reasons = result.diagnostics.reasons
    errors = tuple(result.diagnostics.errors)
    failed_forbids = [
        m.group(1) for e in errors if (m := _ERRORED.search(e)) and m.group(1) in compiled.forbids
    ]
    if failed_forbids:  # a guard that cannot be evaluated denies (fails closed)
        return Decision(False, _names(failed_forbids), "error", errors)
    if result.allowed:
        permits = [r for r in reasons if r != ROLES_POLICY]
        return Decision(True, _names(permits), "permitted" if permits else "roles", errors)
    forbidding = [r for r in reasons if r in compiled.forbids]
    if forbidding:
        return Decision(False, _names(forbidding), "forbidden", errors)
    return Decision(False, (), "not-permitted", errors)


def _names(statement_ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({policy_name(s) for s in statement_ids}))
