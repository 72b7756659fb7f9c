"""Pipelines on the real control plane: revisions, the dev gateway's bundle (with the
agent revisions steps pin, kept while served), and conditions that name what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.test_operator_reconciles import apply_yaml, condition, gateway, get, mock_agent
from tests.support.kube import event_reasons, eventually

GROUP, VERSION = "kaizen.studio", "v1alpha1"


def pipeline_manifest(name: str, *steps: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A Sequential Pipeline of ``steps`` ({"name", "agentRef"|"pipelineRef"})."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {"pattern": "Sequential", "steps": list(steps), **spec},
    }


def step(
    name: str, agent: str | None = None, revision: int | None = None, *, pipeline: str | None = None
) -> dict[str, Any]:
    if pipeline is not None:
        return {"name": name, "pipelineRef": {"name": pipeline}}
    ref: dict[str, Any] = {"name": agent}
    if revision is not None:
        ref["revision"] = revision
    return {"name": name, "agentRef": ref}


def bundle_of(api_client: client.ApiClient, ns: str, gw: str) -> dict[str, Any] | None:
    try:
        cm = client.CoreV1Api(api_client).read_namespaced_config_map(f"{gw}-gateway-bundle", ns)
    except client.ApiException:
        return None
    data: dict[str, Any] = json.loads(cm.data["bundle.json"])
    return data


def served(bundle: dict[str, Any] | None, key: str) -> list[tuple[str, int]]:
    return [(x["name"], x["revision"]) for x in (bundle or {}).get(key) or []]


def ready_reason(api_client: client.ApiClient, ns: str, name: str) -> tuple[str, str] | None:
    obj = get(api_client, ns, "pipelines", name)
    cond = condition(obj, "Ready")
    return (cond["reason"], cond["message"]) if cond else None


def test_pipeline_revisions_reach_the_dev_bundle_and_keep_the_agent_revision_they_pin(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    hello = mock_agent("hello", "v1")
    hello["spec"]["revisionHistoryLimit"] = 1
    apply_yaml(
        crds,
        namespace,
        [
            hello,
            gateway("dev", "dev", ["hello"], pipelines={"names": ["flow"]}),
            pipeline_manifest("flow", step("now", "hello"), step("then", "hello", 1)),
        ],
    )
    eventually(
        lambda: served(bundle_of(api_client, namespace, "dev"), "pipelines") == [("flow", 1)],
        what="dev bundle serving flow r1",
    )
    # Ready once the dev gateway's status shows it serves hello (the unpinned step).
    eventually(
        lambda: (ready_reason(api_client, namespace, "flow") or ("",))[0] == "RevisionReady",
        what=f"flow Ready ({ready_reason(api_client, namespace, 'flow')})",
    )
    flow = get(api_client, namespace, "pipelines", "flow")
    assert flow["status"]["latestRevision"] == 1
    rev = client.AppsV1Api(api_client).read_namespaced_controller_revision("flow-pr1", namespace)
    assert rev.metadata.owner_references[0].uid == flow["metadata"]["uid"]
    assert "RevisionCreated" in event_reasons(api_client, namespace, "flow")

    # A new agent revision past its history limit: r1 is kept because flow pins it,
    # and the bundle carries it as a pinned agent next to the served r2.
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "agents", "hello", {"spec": {"systemPrompt": "v2"}}
    )
    eventually(
        lambda: served(bundle_of(api_client, namespace, "dev"), "agents") == [("hello", 2)],
        what="dev serving hello r2",
    )
    bundle = bundle_of(api_client, namespace, "dev")
    assert served(bundle, "pinnedAgents") == [("hello", 1)]
    assert bundle["pinnedAgents"][0]["spec"]["systemPrompt"] == "v1"

    def kept() -> dict[int, Any]:
        revisions = get(api_client, namespace, "agents", "hello")["status"]["revisions"]
        return {r["revision"]: r.get("retainedBy") for r in revisions}

    # Right after the edit dev still served r1 itself; once it serves r2, only the pin
    # keeps r1 (the Agent's periodic resync rewrites the reason).
    eventually(
        lambda: kept() == {1: ["pinned by Pipeline 'flow' served by Gateway 'dev'"], 2: None},
        timeout=90,
        what=f"hello r1 retained by the pin ({kept()})",
    )

    # Editing a step makes a new pipeline revision, which the dev gateway follows.
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "pipelines", "flow", {"spec": {"timeout": "60s"}}
    )
    eventually(
        lambda: served(bundle_of(api_client, namespace, "dev"), "pipelines") == [("flow", 2)],
        what="dev bundle serving flow r2",
    )


def test_conditions_name_the_missing_or_unserved_agent_and_the_cycle(
    operator: Any, crds: Path, api_client: client.ApiClient, namespace: str
) -> None:
    apply_yaml(
        crds,
        namespace,
        [
            mock_agent("hello"),
            mock_agent("other"),
            gateway("dev", "dev", ["hello"], pipelines={"selector": {}}),
            pipeline_manifest("lost", step("write", "ghost")),
            pipeline_manifest("unserved", step("ok", "hello"), step("check", "other")),
            pipeline_manifest("a", step("call-b", pipeline="b")),
            pipeline_manifest("b", step("call-a", pipeline="a")),
        ],
    )
    eventually(
        lambda: (ready_reason(api_client, namespace, "lost") or ("",))[0] == "AgentNotFound",
        what="lost: AgentNotFound",
    )
    assert (
        "step 'write': Agent 'ghost' (spec.steps[0].agentRef) does not exist"
        in ready_reason(api_client, namespace, "lost")[1]
    )
    assert "AgentNotFound" in event_reasons(api_client, namespace, "lost")
    eventually(
        lambda: (ready_reason(api_client, namespace, "unserved") or ("",))[0] == "AgentNotServed",
        what="unserved: AgentNotServed",
    )
    message = ready_reason(api_client, namespace, "unserved")[1]
    assert "step 'check': Agent 'other' is not served by Gateway 'dev'" in message
    eventually(
        lambda: (ready_reason(api_client, namespace, "a") or ("",))[0] == "PipelineCycle",
        what="a: PipelineCycle",
    )
    assert "a -> b -> a" in ready_reason(api_client, namespace, "a")[1]
    stalled = condition(get(api_client, namespace, "pipelines", "a"), "Stalled")
    assert stalled["status"] == "True"

    # The missing agent appears: the Pipeline that calls it is reconciled at once, and
    # now says what is left (dev, which serves the pipeline, does not serve ghost).
    apply_yaml(crds, namespace, [mock_agent("ghost")])
    eventually(
        lambda: (ready_reason(api_client, namespace, "lost") or ("",))[0] == "AgentNotServed",
        what="lost: from AgentNotFound to AgentNotServed",
    )
