"""`kaizen export` writes objects as one would apply them into an empty cluster."""

from __future__ import annotations

import pytest

from kaizen_api.cli.export import clean

pytestmark = pytest.mark.unit


def test_exported_objects_carry_no_operator_bookkeeping() -> None:
    # Restored with kopf's annotations, an Agent looked already handled: the operator
    # skipped its creation (adopting its restored revisions) until a resync.
    live = {
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": "Agent",
        "metadata": {
            "name": "hello",
            "namespace": "shop",
            "uid": "u",
            "resourceVersion": "9",
            "annotations": {
                "kaizen.studio/kopf-managed": "yes",
                "kaizen.studio/last-handled-configuration": '{"spec": {}}',
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team.example.com/owner": "support",
            },
        },
        "spec": {"model": {"provider": "mock", "name": "echo"}},
        "status": {"latestRevision": 2},
    }
    exported = clean(live)
    assert exported["metadata"] == {
        "name": "hello",
        "namespace": "shop",
        "annotations": {"team.example.com/owner": "support"},
    }
    assert "status" not in exported and exported["spec"] == live["spec"]
