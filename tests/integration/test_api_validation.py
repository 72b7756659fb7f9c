"""The apiserver refuses bad manifests at apply time with a message naming the field
and the rule; the pydantic layer refuses the same manifests (no drift)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from tests.support.kube import eventually, kubectl
from tests.support.manifests import MODELS, example_files

GROUP, VERSION = "kaizen.studio", "v1alpha1"
PLURALS = {
    "Agent": "agents",
    "Gateway": "gateways",
    "ScalingPolicy": "scalingpolicies",
    "Promotion": "promotions",
    "Pipeline": "pipelines",
}
VALID_SPECS: dict[str, dict[str, Any]] = {
    "Agent": {"model": {"provider": "mock", "name": "echo"}},
    "Gateway": {"environment": "dev", "agents": {"names": ["hello"]}},
    "ScalingPolicy": {
        "targetRef": {"name": "prod"},
        "maxReplicas": 5,
        "metrics": [{"type": "cpu", "averageUtilization": 50}],
    },
    "Promotion": {"agentRef": {"name": "hello"}, "revision": 1, "from": "dev", "to": "staging"},
    "Pipeline": {
        "pattern": "Sequential",
        "steps": [
            {"name": "draft", "agentRef": {"name": "writer"}},
            {"name": "review", "agentRef": {"name": "editor", "revision": 2}},
        ],
    },
}
TWO_STEPS = VALID_SPECS["Pipeline"]["steps"]


@dataclass(frozen=True)
class Bad:
    """One invalid manifest: a change to a valid spec and what the error must say."""

    id: str
    kind: str
    change: dict[str, Any]
    field: str
    says: str


def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


ENDPOINT = "https://llm.internal.example/v1"
CASES = [
    # Pipeline
    Bad(
        "step-with-two-targets",
        "Pipeline",
        {"steps": [{"name": "s", "agentRef": {"name": "a"}, "pipelineRef": {"name": "p"}}]},
        "spec.steps[0]",
        "a step calls exactly one of agentRef or pipelineRef",
    ),
    Bad(
        "unknown-pattern",
        "Pipeline",
        {"pattern": "Swarm"},
        "spec.pattern",
        'Unsupported value: "Swarm"',
    ),
    Bad(
        "router-without-router-block",
        "Pipeline",
        {"pattern": "Router"},
        "spec.router",
        "pattern Router needs the router block",
    ),
    Bad(
        "block-of-another-pattern",
        "Pipeline",
        {"parallel": {"merge": "Concatenate"}},
        "spec",
        "set only the block that matches the pattern",
    ),
    Bad(
        "route-to-missing-step",
        "Pipeline",
        {
            "pattern": "Router",
            "router": {"routes": [{"name": "r", "step": "nowhere", "match": {"regex": "x"}}]},
        },
        "spec.router.routes",
        "every route names a step of this pipeline",
    ),
    Bad(
        "template-with-code",
        "Pipeline",
        {"steps": [{"name": "s", "agentRef": {"name": "a"}, "input": "{{ __import__('os') }}"}]},
        "spec.steps[0].input",
        "input templates may only use",
    ),
    Bad(
        "aggregate-without-aggregator",
        "Pipeline",
        {"pattern": "Parallel", "parallel": {"merge": "Aggregate"}},
        "spec.parallel.aggregator",
        "merge Aggregate needs an aggregator step",
    ),
    Bad(
        "min-successful-above-steps",
        "Pipeline",
        {"pattern": "Parallel", "parallel": {"minSuccessful": 3}},
        "spec.parallel.minSuccessful",
        "parallel.minSuccessful cannot exceed the number of steps",
    ),
    Bad(
        "ensemble-of-one",
        "Pipeline",
        {"pattern": "Ensemble", "steps": TWO_STEPS[:1]},
        "spec.steps",
        "an Ensemble needs at least 2 steps",
    ),
    Bad(
        "equals-without-json-path",
        "Pipeline",
        {
            "pattern": "Router",
            "router": {"routes": [{"name": "r", "step": "draft", "match": {"equals": "high"}}]},
        },
        "spec.router.routes[0].match",
        "a match needs keywords, regex or jsonPath",
    ),
    Bad(
        "pipeline-timeout-too-long",
        "Pipeline",
        {"timeout": "2h"},
        "spec.timeout",
        "timeout must be between 1s and 60m",
    ),
    # Agent
    Bad(
        "unknown-provider",
        "Agent",
        {"model": {"provider": "cohere"}},
        "spec.model.provider",
        'Unsupported value: "cohere"',
    ),
    Bad("missing-model", "Agent", {"model": None}, "spec.model", "Required value"),
    Bad(
        "openai-without-credentials",
        "Agent",
        {"model": {"provider": "openai"}},
        "spec.model.credentialsSecretRef",
        "credentialsSecretRef is required",
    ),
    Bad(
        "compatible-without-endpoint",
        "Agent",
        {"model": {"provider": "openai-compatible"}},
        "spec.model.endpoint",
        "endpoint is required",
    ),
    Bad(
        "temperature-too-high",
        "Agent",
        {"model": {"parameters": {"temperature": 3}}},
        "spec.model.parameters.temperature",
        "less than or equal to 2",
    ),
    Bad(
        "bad-lifecycle",
        "Agent",
        {"lifecycle": "Live"},
        "spec.lifecycle",
        'Unsupported value: "Live"',
    ),
    Bad(
        "endpoint-not-http",
        "Agent",
        {"model": {"provider": "openai-compatible", "endpoint": "ftp://models"}},
        "spec.model.endpoint",
        "should match",
    ),
    Bad(
        "http-tool-without-http",
        "Agent",
        {"tools": [{"name": "t", "type": "http"}]},
        "spec.tools[0].http",
        "http tools need the http block",
    ),
    Bad(
        "tool-name-with-space",
        "Agent",
        {"tools": [{"name": "look up"}]},
        "spec.tools[0].name",
        "should match",
    ),
    Bad(
        "duplicate-tool-names",
        "Agent",
        {"tools": [{"name": "t"}, {"name": "t"}]},
        "spec.tools[1]",
        "Duplicate value",
    ),
    Bad(
        "zero-history",
        "Agent",
        {"revisionHistoryLimit": 0},
        "spec.revisionHistoryLimit",
        "greater than or equal to 1",
    ),
    Bad(
        "bad-tool-timeout",
        "Agent",
        {
            "tools": [
                {"name": "t", "type": "http", "http": {"url": ENDPOINT, "timeout": "5 seconds"}}
            ]
        },
        "spec.tools[0].http.timeout",
        "should match",
    ),
    Bad(
        "runtime-deadline-too-long",
        "Agent",
        {"runtime": {"timeout": "2h"}},
        "spec.runtime.timeout",
        "timeout must be between 1s and 60m",
    ),
    Bad(
        "runtime-zero-steps",
        "Agent",
        {"runtime": {"maxSteps": 0}},
        "spec.runtime.maxSteps",
        "greater than or equal to 1",
    ),
    Bad(
        "knowledge-two-sources",
        "Agent",
        {
            "context": {
                "knowledge": [{"name": "k", "url": ENDPOINT, "configMapRef": {"name": "cm"}}]
            }
        },
        "spec.context.knowledge[0]",
        "set exactly one of configMapRef or url",
    ),
    # Another tenant's ConfigMap cannot be named, nor a path out of the knowledge mount.
    Bad(
        "knowledge-other-namespace",
        "Agent",
        {
            "context": {
                "knowledge": [{"name": "k", "configMapRef": {"name": "cm", "namespace": "b"}}]
            }
        },
        "spec.context.knowledge[0].configMapRef.namespace",
        "unknown field",
    ),
    Bad(
        "knowledge-path-name",
        "Agent",
        {"context": {"knowledge": [{"name": "k", "configMapRef": {"name": "../secrets"}}]}},
        "spec.context.knowledge[0].configMapRef.name",
        "should match",
    ),
    Bad(
        "knowledge-top-k",
        "Agent",
        {"context": {"retrieval": {"topK": 100}}},
        "spec.context.retrieval.topK",
        "less than or equal to 20",
    ),
    # Gateway
    Bad(
        "negative-replicas",
        "Gateway",
        {"replicas": -1},
        "spec.replicas",
        "greater than or equal to 0",
    ),
    Bad("bad-environment", "Gateway", {"environment": "Prod!"}, "spec.environment", "should match"),
    Bad(
        "selector-and-names",
        "Gateway",
        {"agents": {"selector": {"matchLabels": {"a": "b"}}}},
        "spec.agents",
        "set exactly one of agents.selector or agents.names",
    ),
    Bad(
        "bad-selector-operator",
        "Gateway",
        {
            "agents": {
                "names": None,
                "selector": {
                    "matchExpressions": [{"key": "a", "operator": "Like", "values": ["x"]}]
                },
            }
        },
        "spec.agents.selector.matchExpressions[0].operator",
        'Unsupported value: "Like"',
    ),
    Bad(
        "selector-in-without-values",
        "Gateway",
        {
            "agents": {
                "names": None,
                "selector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
            }
        },
        "spec.agents.selector.matchExpressions[0]",
        "values must be non-empty for In and NotIn",
    ),
    Bad(
        "bad-quantity",
        "Gateway",
        {"resources": {"requests": {"cpu": "lots"}}},
        "spec.resources.requests.cpu",
        "should match",
    ),
    Bad(
        "apikey-without-secret",
        "Gateway",
        {"auth": {"mode": "APIKey"}},
        "spec.auth.apiKeysSecretRef",
        "apiKeysSecretRef is required when mode is APIKey",
    ),
    Bad(
        "burst-below-rate",
        "Gateway",
        {"rateLimits": {"total": {"requestsPerSecond": 10, "burst": 5}}},
        "spec.rateLimits.total.burst",
        "burst must be at least requestsPerSecond",
    ),
    Bad(
        "bad-service-type",
        "Gateway",
        {"exposure": {"serviceType": "Internal"}},
        "spec.exposure.serviceType",
        'Unsupported value: "Internal"',
    ),
    Bad(
        "port-out-of-range",
        "Gateway",
        {"exposure": {"port": 70000}},
        "spec.exposure.port",
        "less than or equal to 65535",
    ),
    Bad("typo-in-field-name", "Gateway", {"replcias": 2}, "spec.replcias", "unknown field"),
    # ScalingPolicy
    Bad(
        "min-above-max",
        "ScalingPolicy",
        {"minReplicas": 6},
        "spec.minReplicas",
        "minReplicas must be less than or equal to maxReplicas",
    ),
    Bad(
        "pin-without-replicas",
        "ScalingPolicy",
        {"override": {"mode": "Pin"}},
        "spec.override.replicas",
        "override.replicas is required when mode is Pin",
    ),
    Bad(
        "override-out-of-bounds",
        "ScalingPolicy",
        {"override": {"mode": "Pin", "replicas": 9}},
        "spec.override.replicas",
        "override.replicas must be within minReplicas..maxReplicas",
    ),
    Bad(
        "expires-not-a-date",
        "ScalingPolicy",
        {"override": {"mode": "FreezeScaleDown", "expiresAt": "tomorrow"}},
        "spec.override.expiresAt",
        "date-time",
    ),
    Bad(
        "stabilization-too-long",
        "ScalingPolicy",
        {"behavior": {"scaleDown": {"stabilizationWindow": "2h"}}},
        "spec.behavior.scaleDown.stabilizationWindow",
        "stabilizationWindow must be at most 1h",
    ),
    Bad(
        "bad-duration",
        "ScalingPolicy",
        {"behavior": {"scaleUp": {"period": "5 minutes"}}},
        "spec.behavior.scaleUp.period",
        "should match",
    ),
    Bad(
        "cpu-with-average-value",
        "ScalingPolicy",
        {"metrics": [{"type": "cpu", "averageValue": 5}]},
        "spec.metrics[0]",
        "cpu and memory metrics take averageUtilization",
    ),
    Bad("no-metrics", "ScalingPolicy", {"metrics": []}, "spec.metrics", "at least 1 items"),
    Bad(
        "duplicate-metric",
        "ScalingPolicy",
        {
            "metrics": [
                {"type": "cpu", "averageUtilization": 50},
                {"type": "cpu", "averageUtilization": 60},
            ]
        },
        "spec.metrics[1]",
        "Duplicate value",
    ),
    Bad(
        "target-not-a-gateway",
        "ScalingPolicy",
        {"targetRef": {"kind": "Deployment"}},
        "spec.targetRef.kind",
        'Unsupported value: "Deployment"',
    ),
    # Promotion
    Bad(
        "from-equals-to",
        "Promotion",
        {"to": "dev"},
        "spec",
        "from and to must name different Gateways",
    ),
    Bad(
        "revision-zero", "Promotion", {"revision": 0}, "spec.revision", "greater than or equal to 1"
    ),
    Bad(
        "approval-without-approvers",
        "Promotion",
        {"approval": {"required": True}},
        "spec.approval.approvers",
        "approval.required needs at least one approver",
    ),
    Bad(
        "metric-gate-without-bound",
        "Promotion",
        {"gates": {"metrics": [{"metric": "errorRate"}]}},
        "spec.gates.metrics[0]",
        "set max, min, or both",
    ),
    Bad(
        "bad-soak-duration",
        "Promotion",
        {"gates": {"soak": {"duration": "forever"}}},
        "spec.gates.soak.duration",
        "should match",
    ),
]


def manifest(case: Bad) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": case.kind,
        "metadata": {"name": "bad"},
        "spec": merged(VALID_SPECS[case.kind], case.change),
    }


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 25
    assert {c.kind for c in CASES} == set(MODELS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.kind}-{c.id}")
def test_apiserver_rejects_with_field_and_rule(
    case: Bad, api_client: client.ApiClient, crds: Path, namespace: str
) -> None:
    api = client.CustomObjectsApi(api_client)
    with pytest.raises(ApiException) as rejected:
        api.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURALS[case.kind],
            manifest(case),
            dry_run="All",
            field_validation="Strict",
        )
    message = json.loads(rejected.value.body)["message"]
    assert rejected.value.status in (400, 422), message
    assert case.field in message, message
    assert case.says in message, message


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.kind}-{c.id}")
def test_python_models_reject_the_same_manifest(case: Bad) -> None:
    with pytest.raises(ValidationError):
        MODELS[case.kind].model_validate(manifest(case))


@pytest.mark.parametrize("kind", sorted(VALID_SPECS))
def test_valid_base_specs_are_accepted(
    kind: str, api_client: client.ApiClient, crds: Path, namespace: str
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": "ok"},
        "spec": VALID_SPECS[kind],
    }
    MODELS[kind].model_validate(body)
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], body, dry_run="All", field_validation="Strict"
    )


def test_promotion_spec_is_immutable(
    api_client: client.ApiClient, crds: Path, namespace: str
) -> None:
    api = client.CustomObjectsApi(api_client)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Promotion",
        "metadata": {"name": "p"},
        "spec": VALID_SPECS["Promotion"],
    }
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "promotions", body)
    with pytest.raises(ApiException) as rejected:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "promotions", "p", {"spec": {"revision": 2}}
        )
    assert rejected.value.status == 422
    assert "Promotion spec is immutable: create a new Promotion instead" in rejected.value.body
    # Status stays writable (the operator records progress there).
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "promotions", "p", {"status": {"phase": "Pending"}}
    )


def test_examples_apply_and_list_with_printer_columns(crds: Path, namespace: str) -> None:
    files = [arg for f in example_files() for arg in ("-f", str(f))]
    kubectl(crds, "apply", "--dry-run=server", "-n", namespace, *files)
    kubectl(crds, "apply", "-n", namespace, *files)
    listing = kubectl(crds, "get", "kaizen", "-n", namespace).stdout
    for header in (
        "PATTERN",
        "MODEL",
        "LIFECYCLE",
        "REVISION",
        "ENVIRONMENT",
        "REPLICAS",
        "TARGET",
        "MIN",
        "MAX",
        "FROM",
        "TO",
        "PHASE",
    ):
        assert header in listing, listing
    for name in (
        "agent.kaizen.studio/support-assistant",
        "pipeline.kaizen.studio/support-router",
        "gateway.kaizen.studio/production",
        "scalingpolicy.kaizen.studio/production",
        "promotion.kaizen.studio/hello-agent-r1-to-staging",
    ):
        assert name in listing, listing


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("agents.spec.model", "The language model behind the agent."),
        ("agents.spec.model.provider", "deterministic, offline"),
        ("gateways.spec.revisionPolicy", "Promoted: serve only revisions that Promotions set"),
        ("scalingpolicies.spec.override.mode", "Pin, FreezeScaleDown or FreezeScaleUp."),
        ("promotions.spec.approval.minApprovals", "Distinct approvers needed."),
    ],
)
def test_kubectl_explain_shows_field_descriptions(crds: Path, field: str, text: str) -> None:
    def explained() -> str | None:
        # The Gateway API CRDs are installed too, and `gateways` alone resolves to theirs.
        out = kubectl(crds, "explain", field, "--api-version=kaizen.studio/v1alpha1", check=False)
        words = " ".join(out.stdout.split())
        return words if text in words else None

    # The apiserver publishes a new CRD's OpenAPI a moment after the CRD is Established.
    eventually(explained, timeout=30, what=f"`kubectl explain {field}` to say {text!r}")
