"""The operator's watch cache keeps what reconciles read, small, and never shared."""

from __future__ import annotations

import pytest

from kaizen_operator.cache import ObjectCache, slim
from tests.support.objects import agent

pytestmark = pytest.mark.unit


def watched_agent(name: str, **labels: str) -> dict[str, object]:
    body = agent(name)
    body["metadata"].update(
        namespace="shop",
        uid=f"uid-{name}",
        resourceVersion="7",
        labels=labels,
        managedFields=[{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        annotations={
            "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 5000 + "}",
            "kaizen.studio/last-handled-configuration": "{" + "y" * 5000 + "}",
            "kaizen.studio/approved-by": "alice",
        },
    )
    body["status"] = {"latestRevision": 3}
    return body


def test_the_cache_keeps_what_reconciles_read_and_drops_the_bulk() -> None:
    kept = slim(watched_agent("a"))
    assert set(kept) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert "managedFields" not in kept["metadata"]
    # the annotations a reconcile reads stay; copies of the spec go
    assert kept["metadata"]["annotations"] == {"kaizen.studio/approved-by": "alice"}
    assert kept["metadata"]["resourceVersion"] == "7"
    assert kept["status"] == {"latestRevision": 3}
    assert len(repr(kept)) < len(repr(watched_agent("a"))) / 5


def test_reads_are_copies_and_deletions_are_forgotten() -> None:
    cache = ObjectCache()
    cache.store(watched_agent("a", team="support"))
    cache.store(watched_agent("b", team="sales"))
    first = cache.get("Agent", "shop", "a")
    assert first is not None
    first["spec"]["systemPrompt"] = "changed by a careless reconcile"
    assert cache.get("Agent", "shop", "a")["spec"] != first["spec"]  # type: ignore[index]
    support = cache.list(
        "Agent", "shop", where=lambda a: a["metadata"]["labels"] == {"team": "support"}
    )
    assert [a["metadata"]["name"] for a in support] == ["a"]
    assert cache.list("Agent", "other") == [] and cache.get("Gateway", "shop", "a") is None
    cache.remove("Agent", "shop", "a")
    assert cache.get("Agent", "shop", "a") is None and len(cache) == 1
    assert cache.holds("kaizen.studio/v1alpha1", "Agent")
    assert not cache.holds("apps/v1", "ControllerRevision")


def test_an_older_version_never_replaces_a_newer_one() -> None:
    # A reconcile's own write (answer at rv 12) must survive the late echo of rv 11.
    cache = ObjectCache()
    newer, older = watched_agent("a"), watched_agent("a")
    newer["metadata"]["resourceVersion"], newer["status"] = "12", {"latestRevision": 4}
    older["metadata"]["resourceVersion"] = "11"
    cache.store(newer)
    cache.store(older)
    assert cache.get("Agent", "shop", "a")["status"] == {"latestRevision": 4}  # type: ignore[index]


def test_a_gateway_deployment_is_kept_without_its_pod_template() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "dev-gateway", "namespace": "shop", "generation": 3},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "gateway"}]}}},
        "status": {"observedGeneration": 3, "availableReplicas": 2},
    }
    cache = ObjectCache()
    assert cache.holds("apps/v1", "Deployment")
    cache.store(deployment)
    kept = cache.get("Deployment", "shop", "dev-gateway")
    assert kept is not None and kept["spec"] == {"replicas": 2}
    assert kept["status"] == deployment["status"] and kept["metadata"]["generation"] == 3


def test_a_relist_drops_what_a_deleted_namespace_took_with_it() -> None:
    cache = ObjectCache()
    for name in ("a", "b"):
        body = watched_agent(name)
        body["metadata"]["resourceVersion"] = "10"
        cache.store(body)
    late = watched_agent("c")
    late["metadata"]["resourceVersion"] = "30"  # created after the list was served
    cache.store(late)
    kept = watched_agent("a")
    kept["metadata"]["resourceVersion"] = "10"
    assert cache.relisted("Agent", "shop", [kept], list_version="20") == ("b",)
    assert [a["metadata"]["name"] for a in cache.list("Agent", "shop")] == ["a", "c"]
    assert cache.relisted("Agent", "shop", [], list_version="40") == ("a", "c")
    assert cache.namespaces("Agent") == set()
