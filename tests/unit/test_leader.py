"""Lease rules of the operator's leader election (pure parts)."""

from __future__ import annotations

from datetime import UTC, datetime

from kaizen_operator.leader import LeaseSettings, lease_is_free, render_lease

NOW = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
ME = LeaseSettings(namespace="kaizen-system", name="kaizen-operator", identity="pod-a")


def test_a_new_lease_names_us_and_counts_one_transition() -> None:
    lease = render_lease(ME, None, NOW)
    assert lease["spec"] == {
        "holderIdentity": "pod-a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-23T12:00:00.123456Z",
        "renewTime": "2026-11-23T12:00:00.123456Z",
        "leaseTransitions": 1,
    }
    assert "resourceVersion" not in lease["metadata"]


def test_renewing_keeps_acquire_time_and_transitions_and_guards_the_version() -> None:
    current = {
        "metadata": {"resourceVersion": "42"},
        "spec": {
            "holderIdentity": "pod-a",
            "acquireTime": "2026-11-23T11:00:00.000000Z",
            "leaseTransitions": 3,
        },
    }
    lease = render_lease(ME, current, NOW)
    assert lease["spec"]["acquireTime"] == "2026-11-23T11:00:00.000000Z"
    assert lease["spec"]["leaseTransitions"] == 3
    assert lease["spec"]["renewTime"] == "2026-11-23T12:00:00.123456Z"
    assert lease["metadata"]["resourceVersion"] == "42"


def test_taking_over_counts_a_transition() -> None:
    current = {
        "metadata": {"resourceVersion": "7"},
        "spec": {"holderIdentity": "pod-b", "leaseTransitions": 3},
    }
    assert render_lease(ME, current, NOW)["spec"]["leaseTransitions"] == 4


def test_a_held_lease_is_free_only_after_a_whole_duration_without_change() -> None:
    held = {"holderIdentity": "pod-b", "leaseDurationSeconds": 15}
    assert not lease_is_free(held, "pod-a", unchanged_for=14.9, default_duration=15)
    assert lease_is_free(held, "pod-a", unchanged_for=15, default_duration=15)


def test_a_released_or_own_lease_is_free_at_once() -> None:
    assert lease_is_free({"holderIdentity": ""}, "pod-a", 0, 15)
    assert lease_is_free({"holderIdentity": "pod-a", "leaseDurationSeconds": 15}, "pod-a", 0, 15)
