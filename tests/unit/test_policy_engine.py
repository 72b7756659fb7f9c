"""The Cedar policy engine's composition with roles (pure): restrict mode only takes
away, permit-required needs a permit, forbid wins, a failing forbid fails closed, and
decisions name the stored policy (not Cedar's generated ids)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kaizen_api.server.policy_engine import (
    Circumstances,
    InvalidPolicy,
    StoredPolicy,
    Subject,
    Target,
    action_of,
    compile_policies,
    decide,
    validate,
)

DEV = Subject(id="u1", email="dev@corp.example", role="developer", workspace_role="developer")
AGENT = Target(kind="agents", name="a", workspace="ml", labels={"tier": "critical"})
NOON = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # a Wednesday


def at(permission: str, when: datetime = NOON, ip: str = "10.1.2.3") -> Circumstances:
    return Circumstances(permission=permission, method="DELETE", now=when, source_ip=ip)


CRITICAL = StoredPolicy(
    "no-critical-deletes",
    'forbid (principal, action == Kaizen::Action::"delete", resource)\n'
    'when { resource.hasTag("tier") && resource.getTag("tier") == "critical" };',
)
READ_ONLY_PERMIT = StoredPolicy(
    "reads", 'permit (principal, action == Kaizen::Action::"read", resource);'
)


def test_restrict_mode_without_policies_is_the_roles_decision() -> None:
    compiled = compile_policies([], "restrict", 0)
    assert compiled.trivial
    assert decide(compiled, DEV, AGENT, at("agents:delete")).allowed


def test_forbid_names_the_stored_policy_and_wins_over_the_roles_permit() -> None:
    compiled = compile_policies([CRITICAL], "restrict", 1)
    denied = decide(compiled, DEV, AGENT, at("agents:delete"))
    assert (denied.allowed, denied.policies, denied.reason) == (
        False,
        ("no-critical-deletes",),
        "forbidden",
    )
    allowed = decide(
        compiled, DEV, Target(kind="agents", name="b", workspace="ml"), at("agents:delete")
    )
    assert allowed.allowed and allowed.reason == "roles"


def test_permit_required_mode_needs_a_permit_and_forbid_still_wins() -> None:
    compiled = compile_policies([READ_ONLY_PERMIT, CRITICAL], "permit-required", 1)
    read = decide(compiled, DEV, AGENT, at("agents:read"))
    assert read.allowed and read.policies == ("reads",)
    update = decide(compiled, DEV, AGENT, at("agents:update"))
    assert (update.allowed, update.reason) == (False, "not-permitted")
    everything = StoredPolicy("all", "permit (principal, action, resource);")
    compiled = compile_policies([everything, CRITICAL], "permit-required", 2)
    assert decide(compiled, DEV, AGENT, at("agents:delete")).policies == ("no-critical-deletes",)


def test_a_forbid_that_fails_to_evaluate_denies() -> None:
    # Unsafe tag access is refused at save time; compiled directly, it errors when the
    # tag is absent: the guard fails closed.
    broken = StoredPolicy(
        "broken", 'forbid (principal, action, resource) when { resource.getTag("x") == "y" };'
    )
    compiled = compile_policies([broken], "restrict", 1)
    decision = decide(compiled, DEV, Target(kind="agents", workspace="ml"), at("agents:read"))
    assert (decision.allowed, decision.reason, decision.policies) == (False, "error", ("broken",))


@pytest.mark.parametrize(
    ("hour", "weekday_offset", "allowed"),
    [(10, 0, True), (8, 0, False), (17, 0, False), (12, 3, False)],  # +3 days: Saturday
)
def test_time_windows_are_utc_hours_and_iso_weekdays(
    hour: int, weekday_offset: int, allowed: bool
) -> None:
    hours = StoredPolicy(
        "working-hours",
        "forbid (principal, action, resource)\n"
        "unless { context.hour >= 9 && context.hour < 17 && context.dayOfWeek <= 5 };",
    )
    compiled = compile_policies([hours], "restrict", 1)
    when = NOON.replace(hour=hour, day=NOON.day + weekday_offset)
    assert decide(compiled, DEV, AGENT, at("agents:read", when)).allowed is allowed


def test_ip_ranges_and_key_scopes() -> None:
    office = StoredPolicy(
        "office",
        'forbid (principal, action, resource) unless { context.sourceIp.isInRange(ip("10.0.0.0/8")) };',
    )
    wildcard = StoredPolicy(
        "no-wildcard-keys",
        'forbid (principal, action, resource) when { principal.keyScopes.contains("*:*") };',
    )
    compiled = compile_policies([office, wildcard], "restrict", 1)
    assert decide(compiled, DEV, AGENT, at("agents:read", ip="10.9.9.9")).allowed
    assert decide(compiled, DEV, AGENT, at("agents:read", ip="192.0.2.1")).policies == ("office",)
    key = Subject(id="u1", email="dev@corp.example", role="developer", key_scopes=("*:*",))
    assert decide(compiled, key, AGENT, at("agents:read")).policies == ("no-wildcard-keys",)


def test_validation_refuses_unknown_attributes_with_the_engines_message() -> None:
    with pytest.raises(
        InvalidPolicy, match="attribute `labels` on entity type `Kaizen::Resource` not found"
    ):
        validate("forbid (principal, action, resource) when { resource.labels == 1 };")
    with pytest.raises(InvalidPolicy, match="parse error"):
        validate("forbid (principal, action, resource")
    with pytest.raises(InvalidPolicy, match="templates"):
        validate("permit (principal == ?principal, action, resource);")
    assert validate(CRITICAL.text + "\n" + READ_ONLY_PERMIT.text) == 2


def test_verbs_map_to_actions_and_write_groups_them() -> None:
    assert [action_of(p) for p in ("agents:read", "promotions:approve", "pipelines:run")] == [
        "read",
        "approve",
        "other",
    ]
    writes = StoredPolicy(
        "no-writes", 'forbid (principal, action in Kaizen::Action::"write", resource);'
    )
    compiled = compile_policies([writes], "restrict", 1)
    assert decide(compiled, DEV, AGENT, at("agents:read")).allowed
    assert not decide(compiled, DEV, AGENT, at("pipelines:run")).allowed


def test_statements_scoped_to_other_actions_are_not_evaluated_but_still_apply() -> None:
    listed = StoredPolicy(
        "no-edits",
        'forbid (principal, action in [Kaizen::Action::"delete", Kaizen::Action::"update"], '
        "resource);",
    )
    compiled = compile_policies([listed, CRITICAL], "restrict", 1)
    assert decide(compiled, DEV, AGENT, at("agents:update")).policies == ("no-edits",)
    assert decide(compiled, DEV, AGENT, at("agents:delete")).policies == (
        "no-critical-deletes",
        "no-edits",
    )
    assert decide(compiled, DEV, AGENT, at("agents:read")).allowed


def test_decisions_are_keyed_by_what_they_depend_on() -> None:
    from dataclasses import replace

    from kaizen_api.server.policy_engine import decision_key

    unnamed = compile_policies([CRITICAL], "restrict", 1)
    named = compile_policies(
        [
            StoredPolicy(
                "named", 'forbid (principal, action, resource) when { resource.name == "a" };'
            )
        ],
        "restrict",
        1,
    )
    other = replace(AGENT, name="b")
    assert decision_key(unnamed, DEV, AGENT, at("agents:delete")) == decision_key(
        unnamed, DEV, other, at("agents:delete")
    )
    assert decision_key(named, DEV, AGENT, at("agents:delete")) != decision_key(
        named, DEV, other, at("agents:delete")
    )
    later = at("agents:delete", NOON.replace(second=30))
    assert decision_key(unnamed, DEV, AGENT, later) == decision_key(
        unnamed, DEV, AGENT, at("agents:delete")
    )
    assert decision_key(unnamed, DEV, replace(AGENT, labels={}), later) != decision_key(
        unnamed, DEV, AGENT, later
    )
