"""render_gateway: every child and field mapping, served revisions by policy, pruning."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from kaizen_operator.agent.render import AgentInputs, render_agent
from kaizen_operator.gateway.policy import GatewayPolicy
from kaizen_operator.gateway.render import GatewayInputs, render_gateway
from kaizen_operator.pipeline.render import PipelineInputs, render_pipeline
from tests.support.objects import agent, gateway, pipeline

NOW = datetime(2026, 5, 1, tzinfo=UTC)
IMAGE = "example.test/kaizen:1"
# A platform that lets Gateways be exposed publicly, on any host and class.
OPEN = GatewayPolicy(
    allowed_images=("mine:",),
    service_types=("ClusterIP", "NodePort", "LoadBalancer"),
    ingress_hosts=("*",),
    ingress_classes=("*",),
)


def with_revisions(*bodies):
    """Agents with status.latestRevision set and their ControllerRevisions, as the operator makes them."""
    agents, revisions = [], {}
    for body in bodies:
        name = body["metadata"]["name"]
        revs = list(revisions.get(name, ()))
        plan = render_agent(AgentInputs(body, tuple(revs), None, None, NOW))
        revs += plan.create
        revisions[name] = tuple(revs)
        agents = [a for a in agents if a["metadata"]["name"] != name] + [
            {**body, "status": plan.status}
        ]
    return tuple(agents), revisions


def render(
    gw,
    agents=(),
    revisions=None,
    *,
    autoscaled=False,
    min_replicas=None,
    deployment=None,
    http_route_api=True,
    policy=None,
    pipelines=(),
    pipeline_revisions=None,
):
    return render_gateway(
        GatewayInputs(
            gw,
            tuple(agents),
            revisions or {},
            autoscaled,
            min_replicas,
            deployment,
            IMAGE,
            NOW,
            http_route_api=http_route_api,
            policy=policy or GatewayPolicy(),
            pipelines=tuple(pipelines),
            pipeline_revisions=pipeline_revisions or {},
        )
    )


def child(plan, kind):
    return next(c for c in plan.children if c["kind"] == kind)


def bundle(plan):
    return json.loads(child(plan, "ConfigMap")["data"]["bundle.json"])


def test_children_are_owned_labelled_and_named_from_the_gateway() -> None:
    plan = render(gateway("dev"))
    kinds = sorted(c["kind"] for c in plan.children)
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "Service", "ServiceAccount"]
    for c in plan.children:
        meta = c["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kaizen.studio/v1alpha1",
                "kind": "Gateway",
                "name": "dev",
                "uid": "uid-gateway-dev",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "kaizen-operator"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "kaizen-studio"
        assert meta["labels"]["kaizen.studio/gateway"] == "dev"
    assert child(plan, "ConfigMap")["metadata"]["name"] == "dev-gateway-bundle"
    assert child(plan, "Deployment")["metadata"]["name"] == "dev-gateway"


def test_deployment_is_hardened_probed_and_runs_the_bundle() -> None:
    plan = render(gateway("dev", replicas=2, resources={"requests": {"cpu": "250m"}}))
    dep = child(plan, "Deployment")
    assert "replicas" not in dep["spec"]  # written apart, under its own field manager
    assert plan.replicas["spec"] == {"replicas": 2}
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["command"] == ["kaizen-gateway"]
    assert container["args"][:2] == ["--bundle", "/etc/kaizen/bundle/bundle.json"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"] == {"requests": {"cpu": "250m"}}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "dev-gateway"
    assert {v["name"] for v in pod["volumes"]} == {"bundle", "tmp"}


def test_default_resources_and_an_allowed_image_override() -> None:
    container = child(render(gateway("dev", image="mine:2"), policy=OPEN), "Deployment")["spec"][
        "template"
    ]["spec"]["containers"][0]
    assert container["image"] == "mine:2"
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}


def test_link_local_upstreams_are_allowed_only_when_the_operator_says_so() -> None:
    def env(allow: bool) -> list[dict[str, str]]:
        inputs = GatewayInputs(
            gateway("dev"), (), {}, False, None, None, IMAGE, NOW, allow_link_local_upstreams=allow
        )
        deployment = child(render_gateway(inputs), "Deployment")
        return deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])

    assert env(False) == []
    assert env(True) == [{"name": "KAIZEN_GATEWAY_ALLOW_LINK_LOCAL", "value": "1"}]


def test_gateway_pods_take_their_redis_url_from_the_namespaces_secret() -> None:
    inputs = GatewayInputs(
        gateway("dev"), (), {}, False, None, None, IMAGE, NOW, redis_secret="kaizen-redis"
    )
    deployment = child(render_gateway(inputs), "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    # By reference only: the URL (and its password) is never in the Deployment itself.
    assert env == [
        {
            "name": "KAIZEN_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": "kaizen-redis", "key": "url", "optional": True}},
        }
    ]


def test_gateway_pods_export_traces_to_the_operators_otlp_endpoint() -> None:
    def env(endpoint: str | None) -> dict[str, str]:
        inputs = GatewayInputs(
            gateway("dev"), (), {}, False, None, None, IMAGE, NOW, otlp_endpoint=endpoint
        )
        deployment = child(render_gateway(inputs), "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e["value"] for e in container.get("env", [])}

    assert env(None) == {}
    exported = env("http://otel-collector.observability.svc:4318")
    assert exported["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4318"
    assert exported["OTEL_SERVICE_NAME"] == "kaizen-gateway"
    attributes = dict(kv.split("=", 1) for kv in exported["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attributes["kaizen.gateway"] == "dev"
    assert attributes["k8s.deployment.name"] == "dev-gateway"
    assert attributes["deployment.environment.name"] == "dev"


def test_the_operator_refuses_an_otlp_endpoint_with_credentials() -> None:
    from kaizen_operator.__main__ import parse_args

    args = parse_args(["--gateway-otlp-endpoint", "https://collector.example:4318"])
    assert args.gateway_otlp_endpoint == "https://collector.example:4318"
    for bad in ("https://user:pw@collector.example:4318", "collector:4318", "ftp://x"):
        with pytest.raises(SystemExit):
            parse_args(["--gateway-otlp-endpoint", bad])


def test_autoscaled_gateway_sets_replicas_only_at_creation() -> None:
    created = render(gateway("dev", replicas=4), autoscaled=True, min_replicas=2)
    assert created.replicas["spec"] == {"replicas": 2}
    live = {"metadata": {"generation": 1}, "spec": {"replicas": 7}, "status": {}}
    running = render(gateway("dev", replicas=4), autoscaled=True, min_replicas=2, deployment=live)
    assert running.replicas is None


def test_dev_gateway_serves_latest_revision_of_selected_active_agents() -> None:
    agents, revs = with_revisions(
        agent("hello", labels={"team": "a"}),
        agent("hello", prompt="v2", labels={"team": "a"}),
        agent("other", labels={"team": "b"}),
        agent("draft", labels={"team": "a"}, lifecycle="Draft"),
    )
    plan = render(gateway("dev", agents={"selector": {"matchLabels": {"team": "a"}}}), agents, revs)
    assert plan.status["servedRevisions"] == [{"agent": "hello", "revision": 2}]
    served = bundle(plan)["agents"]
    assert [(a["name"], a["revision"], a["spec"]["systemPrompt"]) for a in served] == [
        ("hello", 2, "v2")
    ]


def test_selector_expressions() -> None:
    agents, revs = with_revisions(
        agent("a", labels={"tier": "gold"}), agent("b", labels={"tier": "bronze"}), agent("c")
    )
    sel = {
        "matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["bronze"]},
            {"key": "tier", "operator": "Exists"},
        ]
    }
    plan = render(gateway("dev", agents={"selector": sel}), agents, revs)
    assert [s["agent"] for s in plan.status["servedRevisions"]] == ["a"]


def test_promoted_gateway_serves_only_what_promotions_set() -> None:
    agents, revs = with_revisions(agent("hello"), agent("hello", prompt="v2"))
    nothing = render(gateway("prod", "production"), agents, revs)
    assert nothing.status["servedRevisions"] == []
    promoted = gateway("prod", "production", promotedRevisions=[{"agent": "hello", "revision": 1}])
    plan = render(promoted, agents, revs)
    assert plan.status["servedRevisions"] == [{"agent": "hello", "revision": 1}]
    assert bundle(plan)["agents"][0]["spec"]["systemPrompt"] == "Be kind."
    # What status says is an observation, not the source: spec wins.
    promoted["status"] = {"servedRevisions": [{"agent": "hello", "revision": 2}]}
    assert render(promoted, agents, revs).status["servedRevisions"][0]["revision"] == 1


def test_a_gateway_promoted_before_promoted_revisions_existed_keeps_serving() -> None:
    agents, revs = with_revisions(agent("hello"), agent("hello", prompt="v2"))
    legacy = gateway(
        "prod", "production", status={"servedRevisions": [{"agent": "hello", "revision": 1}]}
    )
    assert render(legacy, agents, revs).status["servedRevisions"] == [
        {"agent": "hello", "revision": 1}
    ]


def test_a_promoted_revision_with_other_content_is_not_served() -> None:
    agents, revs = with_revisions(agent("hello"), agent("hello", prompt="v2"))
    entry = {"agent": "hello", "revision": 1, "hash": "0123456789abcdef"}
    plan = render(gateway("prod", "production", promotedRevisions=[entry]), agents, revs)
    assert plan.status["servedRevisions"] == []
    assert "revision 1 has content" in _ready(plan)["message"]
    real = revs["hello"][0]["metadata"]["labels"]["kaizen.studio/revision-hash"]
    entry["hash"] = real
    plan = render(gateway("prod", "production", promotedRevisions=[entry]), agents, revs)
    assert plan.status["servedRevisions"] == [{"agent": "hello", "revision": 1}]


def test_bundle_change_changes_pod_template_hash() -> None:
    agents1, revs1 = with_revisions(agent("hello"))
    agents2, revs2 = with_revisions(agent("hello"), agent("hello", prompt="v2"))
    h1 = child(render(gateway("dev"), agents1, revs1), "Deployment")["spec"]["template"][
        "metadata"
    ]["annotations"]
    h2 = child(render(gateway("dev"), agents2, revs2), "Deployment")["spec"]["template"][
        "metadata"
    ]["annotations"]
    same = child(render(gateway("dev"), agents1, revs1), "Deployment")["spec"]["template"][
        "metadata"
    ]["annotations"]
    assert h1 != h2
    assert h1 == same


def test_secrets_are_mounted_by_reference_never_copied() -> None:
    body = agent(
        "hello",
        model={
            "provider": "openai",
            "name": "gpt-4o",
            "credentialsSecretRef": {"name": "oa-key", "key": "k"},
        },
    )
    agents, revs = with_revisions(body)
    plan = render(gateway("dev"), agents, revs)
    pod = child(plan, "Deployment")["spec"]["template"]["spec"]
    secret_volume = next(v for v in pod["volumes"] if "secret" in v)
    assert secret_volume["secret"] == {"secretName": "oa-key", "optional": True}
    assert any(
        m["mountPath"] == "/var/run/kaizen/secrets/oa-key" and m["readOnly"]
        for m in pod["containers"][0]["volumeMounts"]
    )
    assert bundle(plan)["agents"][0]["spec"]["model"]["credentialsSecretRef"] == {
        "name": "oa-key",
        "key": "k",
    }


def test_service_network_policy_and_ingress_mapping() -> None:
    gw = gateway(
        "prod",
        "production",
        exposure={
            "serviceType": "LoadBalancer",
            "port": 8443,
            "ingress": {"host": "ai.example.com", "className": "nginx", "tlsSecretName": "tls"},
        },
    )
    plan = render(gw, policy=OPEN)
    svc = child(plan, "Service")["spec"]
    assert svc["type"] == "LoadBalancer"
    assert svc["ports"] == [{"name": "http", "port": 8443, "targetPort": "http", "protocol": "TCP"}]
    assert svc["selector"] == {
        "app.kubernetes.io/name": "kaizen-gateway",
        "kaizen.studio/gateway": "prod",
    }
    assert child(plan, "NetworkPolicy")["spec"]["ingress"] == [
        {"ports": [{"port": 8080, "protocol": "TCP"}]}
    ]
    ing = child(plan, "Ingress")["spec"]
    # The APIs only: /metrics and /readyz stay inside the cluster (security review M1, L3).
    assert [p["path"] for p in ing["rules"][0]["http"]["paths"]] == ["/v1", "/agents"]
    assert ing["ingressClassName"] == "nginx"
    assert ing["tls"] == [{"hosts": ["ai.example.com"], "secretName": "tls"}]
    assert ing["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
        "name": "prod-gateway",
        "port": {"name": "http"},
    }
    assert plan.status["endpoint"] == "http://prod-gateway.team-a.svc.cluster.local:8443"


ROUTE = {
    "port": 8443,
    "httpRoute": {
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["ai.example.com"],
    },
}


def test_http_route_attaches_to_its_parents_and_routes_to_the_service() -> None:
    plan = render(gateway("prod", "production", exposure=ROUTE), policy=OPEN)
    route = child(plan, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == "prod-gateway"
    assert route["metadata"]["ownerReferences"][0]["name"] == "prod"
    assert route["spec"] == {
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["ai.example.com"],
        "rules": [
            {
                "matches": [
                    {"path": {"type": "PathPrefix", "value": "/v1"}},
                    {"path": {"type": "PathPrefix", "value": "/agents"}},
                ],
                "backendRefs": [{"name": "prod-gateway", "port": 8443}],
            }
        ],
    }
    applied = next(c for c in plan.status["conditions"] if c["type"] == "RouteApplied")
    assert (applied["status"], applied["reason"]) == ("True", "Applied")
    assert ("gateway.networking.k8s.io/v1", "HTTPRoute", "prod-gateway") not in plan.prune


def test_http_route_is_pruned_when_removed_and_its_condition_goes() -> None:
    before = render(gateway("prod", "production", exposure=ROUTE), policy=OPEN)
    gw = gateway("prod", "production")
    gw["status"] = before.status
    after = render(gw)
    assert "HTTPRoute" not in [c["kind"] for c in after.children]
    assert ("gateway.networking.k8s.io/v1", "HTTPRoute", "prod-gateway") in after.prune
    assert "RouteApplied" not in [c["type"] for c in after.status["conditions"]]


def test_http_route_without_the_gateway_api_is_a_condition_not_a_failure() -> None:
    plan = render(gateway("prod", "production", exposure=ROUTE), http_route_api=False, policy=OPEN)
    assert "HTTPRoute" not in [c["kind"] for c in plan.children]
    applied = next(c for c in plan.status["conditions"] if c["type"] == "RouteApplied")
    assert (applied["status"], applied["reason"]) == ("False", "GatewayAPINotInstalled")
    assert "install the Gateway API CRDs" in applied["message"]
    assert _ready(plan)["reason"] != "GatewayAPINotInstalled"  # the gateway still serves


def test_pdb_only_with_more_than_one_replica_and_pruned_otherwise() -> None:
    many = render(gateway("dev", replicas=3))
    assert child(many, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    one = render(gateway("dev", replicas=1))
    assert "PodDisruptionBudget" not in [c["kind"] for c in one.children]
    assert ("policy/v1", "PodDisruptionBudget", "dev-gateway") in one.prune
    assert ("networking.k8s.io/v1", "Ingress", "dev-gateway") in one.prune
    autoscaled = render(gateway("dev", replicas=1), autoscaled=True, min_replicas=2)
    assert "PodDisruptionBudget" in [c["kind"] for c in autoscaled.children]


def _ready(plan):
    return next(c for c in plan.status["conditions"] if c["type"] == "Ready")


def test_ready_follows_the_deployment_rollout() -> None:
    assert _ready(render(gateway("dev")))["status"] == "False"
    dep = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 2,
            "availableReplicas": 2,
            "readyReplicas": 2,
        },
    }
    plan = render(gateway("dev", replicas=2), deployment=dep)
    assert (_ready(plan)["status"], _ready(plan)["reason"]) == ("True", "Available")
    assert plan.status["readyReplicas"] == 2
    assert (
        plan.status["selector"] == "app.kubernetes.io/name=kaizen-gateway,kaizen.studio/gateway=dev"
    )
    rolling = {**dep, "status": {**dep["status"], "updatedReplicas": 1}}
    plan = render(gateway("dev", replicas=2), deployment=rolling)
    assert _ready(plan)["status"] == "False"
    assert (
        next(c for c in plan.status["conditions"] if c["type"] == "Reconciling")["status"] == "True"
    )


def test_knowledge_config_maps_are_mounted_and_recorded_in_the_bundle() -> None:
    knowledge = [
        {"name": "handbook", "configMapRef": {"name": "hr.handbook"}},
        {"name": "faq", "configMapRef": {"name": "hr-handbook"}},
        {"name": "site", "url": "https://docs.example.test/refunds"},
    ]
    agents, revisions = with_revisions(agent("hello", context={"knowledge": knowledge}))
    plan = render(gateway("dev"), agents, revisions)
    assert bundle(plan)["knowledgeMounts"] == {
        "hr-handbook": "/etc/kaizen/knowledge/hr-handbook",
        "hr.handbook": "/etc/kaizen/knowledge/hr.handbook",
    }
    pod = child(plan, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"] if "configMap" in v and v["name"] != "bundle"}
    assert sorted(v["configMap"]["name"] for v in volumes.values()) == [
        "hr-handbook",
        "hr.handbook",
    ]
    assert len(volumes) == 2  # names differing only by a dot get distinct volumes
    assert all(v["configMap"]["optional"] for v in volumes.values())
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    for name, volume in volumes.items():
        assert mounts[name]["mountPath"] == f"/etc/kaizen/knowledge/{volume['configMap']['name']}"
        assert mounts[name]["readOnly"] is True


def test_a_bundle_without_knowledge_has_no_knowledge_mounts() -> None:
    agents, revisions = with_revisions(agent("hello"))
    plan = render(gateway("dev"), agents, revisions)
    assert "knowledgeMounts" not in bundle(plan)
    volumes = child(plan, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert not [v for v in volumes if v["name"].startswith("knowledge-")]


def test_an_agent_whose_secret_the_operator_may_not_read_is_not_served() -> None:
    """The pairing cannot be checked without reading the Secret: the agent is left out
    (fail closed) and SecretsPaired says which RoleBinding to create."""
    sent = agent(
        "custom",
        model={
            "provider": "openai-compatible",
            "name": "m",
            "endpoint": "https://llm.example.com/v1",
            "credentialsSecretRef": {"name": "llm"},
        },
    )
    agents, revs = with_revisions(sent, agent("plain"))
    gw = gateway("dev", agents={"names": ["custom", "plain"]})
    refusal = "the operator may not read Secret 'llm' in namespace 'n': ... create rolebinding"
    plan = render_gateway(
        GatewayInputs(
            gw, agents, revs, False, None, None, IMAGE, NOW, secret_refusals={"llm": refusal}
        )
    )
    assert [a["name"] for a in bundle(plan)["agents"]] == ["plain"]
    paired = next(c for c in plan.status["conditions"] if c["type"] == "SecretsPaired")
    assert (paired["status"], paired["reason"]) == ("False", "SecretAccessDenied")
    assert paired["message"] == f"agent custom: {refusal}"


def pipelines_with_revisions(*bodies):
    """Pipelines with status.latestRevision set and their ControllerRevisions."""
    out, revisions = [], {}
    for body in bodies:
        plan = render_pipeline(PipelineInputs(body, (), NOW))
        revisions[body["metadata"]["name"]] = plan.create
        out.append({**body, "status": plan.status})
    return tuple(out), revisions


def two_agent_revisions():
    """Agent hello at revisions 1 and 2 (latest)."""
    first = agent("hello", "v1")
    plan1 = render_agent(AgentInputs(first, (), None, None, NOW))
    second = agent("hello", "v2")
    plan2 = render_agent(AgentInputs(second, plan1.create, None, None, NOW))
    return ({**second, "status": plan2.status},), {"hello": (*plan1.create, *plan2.create)}


def test_dev_gateway_bundles_selected_pipelines_latest_revision_and_the_agents_they_pin():
    agents, revs = two_agent_revisions()
    pipes, pipe_revs = pipelines_with_revisions(
        pipeline(
            "flow",
            {"name": "old", "agentRef": {"name": "hello", "revision": 1}},
            {"name": "now", "agentRef": {"name": "hello"}},
        ),
        pipeline("unselected"),
    )
    gw = gateway("dev", pipelines={"names": ["flow"]})
    plan = render(gw, agents, revs, pipelines=pipes, pipeline_revisions=pipe_revs)
    served = bundle(plan)
    assert [(p["name"], p["revision"]) for p in served["pipelines"]] == [("flow", 1)]
    assert [(a["name"], a["revision"]) for a in served["agents"]] == [("hello", 2)]
    assert [(a["name"], a["revision"]) for a in served["pinnedAgents"]] == [("hello", 1)]
    assert served["pinnedAgents"][0]["spec"]["systemPrompt"] == "v1"
    assert plan.status["servedPipelineRevisions"] == [{"pipeline": "flow", "revision": 1}]
    assert plan.status["pinnedRevisions"] == [{"agent": "hello", "revision": 1, "pipeline": "flow"}]


def test_gateway_without_a_pipeline_selection_serves_no_pipelines():
    pipes, pipe_revs = pipelines_with_revisions(pipeline("flow"))
    agents, revs = with_revisions(agent())
    plan = render(gateway("dev"), agents, revs, pipelines=pipes, pipeline_revisions=pipe_revs)
    assert bundle(plan)["pipelines"] == []
    assert "servedPipelineRevisions" not in plan.status


def test_promoted_gateway_serves_only_the_promoted_pipeline_revision():
    pipes, pipe_revs = pipelines_with_revisions(pipeline("flow"))
    agents, revs = with_revisions(agent())
    selecting = {"pipelines": {"names": ["flow"]}}
    nothing = render(
        gateway("prod", "production", **selecting),
        agents,
        revs,
        pipelines=pipes,
        pipeline_revisions=pipe_revs,
    )
    assert bundle(nothing)["pipelines"] == []
    digest = pipe_revs["flow"][0]["metadata"]["labels"]["kaizen.studio/revision-hash"]
    promoted = gateway(
        "prod",
        "production",
        **selecting,
        promotedPipelineRevisions=[{"pipeline": "flow", "revision": 1, "hash": digest}],
    )
    plan = render(promoted, agents, revs, pipelines=pipes, pipeline_revisions=pipe_revs)
    assert [(p["name"], p["revision"]) for p in bundle(plan)["pipelines"]] == [("flow", 1)]


def test_a_pipeline_pinning_a_missing_agent_revision_is_not_served_and_the_gateway_says_why():
    agents, revs = with_revisions(agent())
    pipes, pipe_revs = pipelines_with_revisions(
        pipeline("flow", {"name": "a", "agentRef": {"name": "hello", "revision": 9}})
    )
    gw = gateway("dev", pipelines={"names": ["flow"]})
    plan = render(gw, agents, revs, pipelines=pipes, pipeline_revisions=pipe_revs)
    assert bundle(plan)["pipelines"] == []
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert "pipeline flow: pinned agent hello revision 9 not found" in ready["message"]
