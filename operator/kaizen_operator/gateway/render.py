"""Gateway -> ServiceAccount, ConfigMap bundle, Deployment, Service, PDB, NetworkPolicy,
Ingress, and the Gateway's status (pure: no client, no clock)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kaizen_api.netguard import display_url
from kaizen_api.netpolicy import egress_rules
from kaizen_api.pairing import ALLOWED_DESTINATIONS, agent_refusals, secrets_sent
from kaizen_api.v1alpha1.agent import AgentSpec, Lifecycle, MCPTransport, ToolType
from kaizen_api.v1alpha1.bundle import (
    BUNDLE_FILE,
    BUNDLE_MOUNT,
    GATEWAY_PORT,
    SECRETS_MOUNT,
    AgentBundle,
    BundledAgent,
    BundledPipeline,
    knowledge_mount,
    knowledge_volume_name,
    secret_volume_name,
)
from kaizen_api.v1alpha1.common import LabelSelector, ResourceRequirements
from kaizen_api.v1alpha1.gateway import (
    GatewaySpec,
    PipelineSelection,
    RevisionPolicy,
    promoted_pipeline_revisions,
    promoted_revisions,
)
from kaizen_api.v1alpha1.pipeline import PipelineSpec
from kaizen_operator import names
from kaizen_operator.conditions import ready_conditions, set_condition
from kaizen_operator.gateway.policy import NOT_ALLOWED, GatewayPolicy, violations
from kaizen_operator.secrets import SECRET_ACCESS_DENIED

DEFAULT_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
POD_USER = 10001
HTTP_ROUTE = ("gateway.networking.k8s.io/v1", "HTTPRoute")
# Set only while spec.exposure.httpRoute is: False when the cluster lacks the Gateway API.
ROUTE_APPLIED = "RouteApplied"

# What an Ingress or HTTPRoute exposes: the OpenAI-compatible and native APIs, not
# /metrics (agents, token counts, cost) nor /readyz (bundle and tool-server errors).
PUBLIC_PATHS = ("/v1", "/agents")
SECRETS_PAIRED = "SecretsPaired"  # False while an agent is not served: kaizen_api.pairing

# The gateway's own switch for its SSRF guard (kaizen_gateway.__main__ reads it).
ALLOW_LINK_LOCAL_ENV = "KAIZEN_GATEWAY_ALLOW_LINK_LOCAL"
# The gateway's Redis (kaizen_gateway.__main__ reads it), from a Secret's "url" key.
REDIS_URL_ENV = "KAIZEN_REDIS_URL"
OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
REDIS_URL_KEY = "url"


@dataclass(frozen=True)
class GatewayInputs:
    """Everything the Gateway render needs, read by resolve_gateway."""

    gateway: dict[str, Any]
    agents: tuple[dict[str, Any], ...]
    revisions: Mapping[str, tuple[dict[str, Any], ...]]  # agent name -> its ControllerRevisions
    autoscaled: bool
    min_replicas: int | None
    deployment: dict[str, Any] | None
    image: str
    now: datetime
    # Gateway pods may call link-local / metadata upstreams (operator flag; off by default).
    allow_link_local_upstreams: bool = False
    # The cluster serves the Gateway API's HTTPRoute (its CRD is installed).
    http_route_api: bool = True
    # MCP servers as the gateway pods report them on /readyz, merged over pods
    # (read_tool_servers); None when no pod answered.
    tool_servers: tuple[Mapping[str, Any], ...] | None = None
    # Secret in the Gateway's namespace whose "url" key is the pods' Redis (operator flag).
    redis_secret: str | None = None
    # OTLP/HTTP collector the pods export traces to (operator flag); None: no export.
    otlp_endpoint: str | None = None
    # What the platform lets a Gateway ask for (operator flags, chart gatewayPolicy).
    policy: GatewayPolicy = field(default_factory=GatewayPolicy)
    # The operator's own namespace (its pods scrape and smoke-test gateway pods).
    operator_namespace: str | None = None
    # Annotations of the Secrets the agents send to URLs they choose (kaizen_api.pairing);
    # a Secret missing here does not exist.
    secret_annotations: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)
    # Secrets the operator may not read (403), with the RoleBinding that grants them: the
    # agents sending them are not served (kaizen_operator.secrets).
    secret_refusals: Mapping[str, str] = field(default_factory=dict)
    # Pipelines the Gateway may serve and their ControllerRevisions (pipeline name ->);
    # ``revisions`` also holds the revisions of the agents their steps pin.
    pipelines: tuple[dict[str, Any], ...] = ()
    pipeline_revisions: Mapping[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ServedPipelines:
    """What a Gateway serves of its pipelines."""

    pipelines: list[BundledPipeline] = field(default_factory=list)
    pinned: list[BundledAgent] = field(default_factory=list)  # not served as models
    pinned_by: list[tuple[str, int, str]] = field(default_factory=list)  # (agent, rev, pipeline)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GatewayPlan:
    """Children to apply, optional children to prune, and the status."""

    children: tuple[dict[str, Any], ...]
    replicas: dict[str, Any] | None  # applied after the children, by REPLICAS_MANAGER
    prune: tuple[tuple[str, str, str], ...]  # (apiVersion, kind, name)
    status: dict[str, Any]
    bundle: AgentBundle = field(repr=False)


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions or []:
        present = req.key in labels
        if req.operator == "In" and labels.get(req.key) not in req.values:
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def selector_string(selector: LabelSelector) -> str:
    """The label-selector query string the apiserver understands."""
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for req in selector.match_expressions or []:
        if req.operator in ("In", "NotIn"):
            parts.append(f"{req.key} {req.operator.lower()} ({','.join(req.values)})")
        elif req.operator == "Exists":
            parts.append(req.key)
        else:
            parts.append(f"!{req.key}")
    return ",".join(parts)


def selected_agents(spec: GatewaySpec, agents: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """The Agents a Gateway selects, by name order."""
    if spec.agents.names is not None:
        wanted = set(spec.agents.names)
        chosen = [a for a in agents if a["metadata"]["name"] in wanted]
    else:
        sel = spec.agents.selector or LabelSelector()
        chosen = [a for a in agents if selector_matches(sel, a["metadata"].get("labels") or {})]
    return sorted(chosen, key=lambda a: a["metadata"]["name"])


def selected_pipelines(
    selection: PipelineSelection | None, pipelines: tuple[dict[str, Any], ...]
) -> list[dict[str, Any]]:
    """The Pipelines a Gateway selects, by name order (none when unset)."""
    if selection is None:
        return []
    if selection.names is not None:
        wanted = set(selection.names)
        chosen = [p for p in pipelines if p["metadata"]["name"] in wanted]
    else:
        sel = selection.selector or LabelSelector()
        chosen = [p for p in pipelines if selector_matches(sel, p["metadata"].get("labels") or {})]
    return sorted(chosen, key=lambda p: p["metadata"]["name"])


def pinned_agent_refs(spec: Mapping[str, Any]) -> set[tuple[str, int]]:
    """(agent, revision) of every step of a wire-form PipelineSpec that pins a revision."""
    return {
        (s.agent_ref.name, s.agent_ref.revision)
        for s in PipelineSpec.model_validate(dict(spec)).targets()
        if s.agent_ref is not None and s.agent_ref.revision is not None
    }


def _revision(revs: tuple[dict[str, Any], ...], number: int | None) -> dict[str, Any] | None:
    if number is None:
        return None
    return next((r for r in revs if int(r.get("revision", 0)) == number), None)


def served_agents(inputs: GatewayInputs, spec: GatewaySpec) -> tuple[list[BundledAgent], list[str]]:
    """Which revision of each selected Agent this Gateway serves, and what it cannot serve."""
    policy = spec.effective_revision_policy()
    promoted = promoted_revisions(inputs.gateway)
    served, problems = [], []
    for agent in selected_agents(spec, inputs.agents):
        name = agent["metadata"]["name"]
        if agent["spec"].get("lifecycle", Lifecycle.ACTIVE) != Lifecycle.ACTIVE:
            continue
        revs = inputs.revisions.get(name, ())
        expected_hash = None
        if policy == RevisionPolicy.LATEST:
            number = (agent.get("status") or {}).get("latestRevision")
        else:
            entry = promoted.get(name)
            if entry is None:
                continue  # nothing promoted here yet
            number, expected_hash = int(entry["revision"]), entry.get("hash")
        rev = _revision(revs, number)
        if rev is None:
            if number is not None:
                problems.append(f"agent {name}: revision {number} not found")
            continue
        actual_hash = rev["metadata"].get("labels", {}).get(names.REVISION_HASH_LABEL, "")
        if expected_hash and actual_hash != expected_hash:
            problems.append(
                f"agent {name}: revision {number} has content {actual_hash}, not the promoted "
                f"{expected_hash}; promote the revision to serve again"
            )
            continue
        content = AgentSpec.model_validate(dict(rev["data"]["spec"]))
        refusals = [
            inputs.secret_refusals[s]
            for s in sorted(secrets_sent(content))
            if s in inputs.secret_refusals
        ]
        refusals = refusals or agent_refusals(content, inputs.secret_annotations)
        if refusals:  # not served: its Secrets would go where no administrator allowed
            problems += [f"agent {name}: {r}" for r in refusals]
            continue
        served.append(
            BundledAgent(name=name, revision=int(rev["revision"]), hash=actual_hash, spec=content)
        )
    return served, problems


def served_pipelines(
    inputs: GatewayInputs, spec: GatewaySpec, agents: list[BundledAgent]
) -> ServedPipelines:
    """Which revision of each selected Pipeline this Gateway serves (latest under
    revisionPolicy Latest, else the promoted one), the agent revisions they pin, and what
    it cannot serve. A pipeline whose pinned revision is missing (or may not be given
    its Secrets) is not served: every step of a served pipeline can run."""
    out = ServedPipelines()
    policy = spec.effective_revision_policy()
    promoted = promoted_pipeline_revisions(inputs.gateway)
    as_models = {(a.name, a.revision) for a in agents}
    pinned: dict[tuple[str, int], BundledAgent] = {}
    for pipeline in selected_pipelines(spec.pipelines, inputs.pipelines):
        name = pipeline["metadata"]["name"]
        if pipeline["spec"].get("lifecycle", Lifecycle.ACTIVE) != Lifecycle.ACTIVE:
            continue
        expected_hash = None
        if policy == RevisionPolicy.LATEST:
            number = (pipeline.get("status") or {}).get("latestRevision")
        else:
            entry = promoted.get(name)
            if entry is None:
                continue  # nothing promoted here yet
            number, expected_hash = int(entry["revision"]), entry.get("hash")
        rev = _revision(inputs.pipeline_revisions.get(name, ()), number)
        if rev is None:
            if number is not None:
                out.problems.append(f"pipeline {name}: revision {number} not found")
            continue
        actual_hash = rev["metadata"].get("labels", {}).get(names.REVISION_HASH_LABEL, "")
        if expected_hash and actual_hash != expected_hash:
            out.problems.append(
                f"pipeline {name}: revision {number} has content {actual_hash}, not the "
                f"promoted {expected_hash}; promote the revision to serve again"
            )
            continue
        content = PipelineSpec.model_validate(dict(rev["data"]["spec"]))
        needs: list[BundledAgent] = []
        missing: list[str] = []
        for agent, pin in sorted(pinned_agent_refs(rev["data"]["spec"])):
            agent_rev = _revision(inputs.revisions.get(agent, ()), pin)
            if agent_rev is None:
                missing.append(f"pipeline {name}: pinned agent {agent} revision {pin} not found")
                continue
            agent_spec = AgentSpec.model_validate(dict(agent_rev["data"]["spec"]))
            refusals = agent_refusals(agent_spec, inputs.secret_annotations)
            if refusals:
                missing += [f"pipeline {name}: pinned agent {agent}: {r}" for r in refusals]
                continue
            needs.append(
                BundledAgent(
                    name=agent,
                    revision=pin,
                    hash=agent_rev["metadata"].get("labels", {}).get(names.REVISION_HASH_LABEL, ""),
                    spec=agent_spec,
                )
            )
        if missing:
            out.problems.extend(missing)
            continue
        for bundled in needs:
            out.pinned_by.append((bundled.name, bundled.revision, name))
            if (bundled.name, bundled.revision) not in as_models:
                pinned[(bundled.name, bundled.revision)] = bundled
        out.pipelines.append(
            BundledPipeline(
                name=name, revision=int(rev["revision"]), hash=actual_hash, spec=content
            )
        )
    out.pinned.extend(pinned[k] for k in sorted(pinned))
    return out


def render_bundle(
    inputs: GatewayInputs,
    spec: GatewaySpec,
    served: list[BundledAgent],
    pipelines: ServedPipelines | None = None,
) -> AgentBundle:
    """The agent bundle the gateway pods load."""
    meta = inputs.gateway["metadata"]
    pipelines = pipelines or ServedPipelines()
    config_maps = sorted(
        {
            source.config_map_ref.name
            for agent in (*served, *pipelines.pinned)
            for source in (agent.spec.context.knowledge or [] if agent.spec.context else [])
            if source.config_map_ref is not None
        }
    )
    return AgentBundle(
        gateway=meta["name"],
        namespace=meta["namespace"],
        environment=spec.environment,
        agents=served,
        pipelines=pipelines.pipelines,
        pinned_agents=pipelines.pinned,
        rate_limits=spec.rate_limits,
        auth=spec.auth,
        knowledge_mounts={name: knowledge_mount(name) for name in config_maps} or None,
    )


def bundle_text(bundle: AgentBundle) -> str:
    """The ConfigMap's bundle.json (stable text, so its hash only moves on real change)."""
    return json.dumps(bundle.to_wire(), sort_keys=True, indent=2) + "\n"


def _meta(inputs: GatewayInputs, name: str, component: str = "gateway") -> dict[str, Any]:
    gw = inputs.gateway["metadata"]["name"]
    return {
        "name": name,
        "namespace": inputs.gateway["metadata"]["namespace"],
        "labels": names.gateway_labels(gw, component),
        "ownerReferences": [names.owner_reference(inputs.gateway)],
    }


def render_service_account(inputs: GatewayInputs) -> dict[str, Any]:
    """The pods' identity; no API token is mounted (the gateway never calls the apiserver)."""
    gw = inputs.gateway["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(inputs, names.gateway_workload(gw)),
        "automountServiceAccountToken": False,
    }


def render_bundle_config_map(inputs: GatewayInputs, text: str) -> dict[str, Any]:
    """The ConfigMap with the agent bundle (references to Secrets, never their values)."""
    gw = inputs.gateway["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(inputs, names.gateway_bundle(gw), "bundle"),
        "data": {BUNDLE_FILE: text},
    }


def _secret_names(bundle: AgentBundle) -> list[str]:
    found = set()
    for agent in (*bundle.agents, *bundle.pinned_agents):
        if agent.spec.model.credentials_secret_ref:
            found.add(agent.spec.model.credentials_secret_ref.name)
        for tool in agent.spec.tools or []:
            if tool.http and tool.http.headers_secret_ref:
                found.add(tool.http.headers_secret_ref.name)
    if bundle.auth and bundle.auth.api_keys_secret_ref:
        found.add(bundle.auth.api_keys_secret_ref.name)
    return sorted(found)


def render_deployment(
    inputs: GatewayInputs, spec: GatewaySpec, bundle: AgentBundle, bundle_hash: str
) -> dict[str, Any]:
    """The gateway Deployment; a new bundle hash rolls the pods."""
    gw = inputs.gateway["metadata"]["name"]
    workload = names.gateway_workload(gw)
    resources = (
        spec.resources.to_wire()
        if spec.resources
        else ResourceRequirements.model_validate(DEFAULT_RESOURCES).to_wire()
    )
    secrets = _secret_names(bundle)
    mounts = [
        {"name": "bundle", "mountPath": BUNDLE_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, the only writable path
    ] + [
        {"name": secret_volume_name(s), "mountPath": f"{SECRETS_MOUNT}/{s}", "readOnly": True}
        for s in secrets
    ]
    knowledge = sorted((bundle.knowledge_mounts or {}).items())
    mounts += [
        {"name": knowledge_volume_name(cm), "mountPath": path, "readOnly": True}
        for cm, path in knowledge
    ]
    volumes = [
        {"name": "bundle", "configMap": {"name": names.gateway_bundle(gw)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ] + [
        # optional: a missing Secret breaks only the agents that use it, not the pod.
        {"name": secret_volume_name(s), "secret": {"secretName": s, "optional": True}}
        for s in secrets
    ]
    # A knowledge ConfigMap is mounted as a volume, not read into the bundle: the kubelet
    # updates the files in place when it is edited, and the gateway re-indexes them
    # without a rollout. Optional: a missing one is reported on /readyz, not a stuck pod.
    volumes += [
        {"name": knowledge_volume_name(cm), "configMap": {"name": cm, "optional": True}}
        for cm, _ in knowledge
    ]
    deployment_spec: dict[str, Any] = {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": names.gateway_selector_labels(gw)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {
            "metadata": {
                "labels": names.gateway_labels(gw),
                "annotations": {names.BUNDLE_HASH_ANNOTATION: bundle_hash},
            },
            "spec": {
                "serviceAccountName": workload,
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": POD_USER,
                    "runAsGroup": POD_USER,
                    "fsGroup": POD_USER,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "gateway",
                        "image": spec.image or inputs.image,
                        "command": ["kaizen-gateway"],
                        "args": [
                            "--bundle",
                            f"{BUNDLE_MOUNT}/{BUNDLE_FILE}",
                            "--host",
                            "0.0.0.0",  # noqa: S104 - inside the pod network namespace
                            "--port",
                            str(GATEWAY_PORT),
                        ],
                        "ports": [
                            {"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/readyz", "port": "http"},
                            "periodSeconds": 5,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": "http"},
                            "periodSeconds": 10,
                            "failureThreshold": 3,
                        },
                        "resources": resources,
                        **({"env": env} if (env := render_env(inputs)) else {}),
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": mounts,
                    }
                ],
                "volumes": volumes,
            },
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(inputs, workload),
        "spec": deployment_spec,
    }


def render_env(inputs: GatewayInputs) -> list[dict[str, Any]]:
    """The gateway container's environment. The Redis URL (it may hold a password) comes
    from the Secret by reference; optional, so a namespace without it still serves, with
    memory skipped and per-pod rate limits. With an OTLP endpoint, the standard OTel
    variables name the collector and say which Gateway a span comes from."""
    env: list[dict[str, Any]] = []
    if inputs.allow_link_local_upstreams:
        env.append({"name": ALLOW_LINK_LOCAL_ENV, "value": "1"})
    if inputs.redis_secret:
        ref = {"name": inputs.redis_secret, "key": REDIS_URL_KEY, "optional": True}
        env.append({"name": REDIS_URL_ENV, "valueFrom": {"secretKeyRef": ref}})
    if inputs.otlp_endpoint:
        meta = inputs.gateway["metadata"]
        resource = {
            "k8s.namespace.name": meta["namespace"],
            "k8s.deployment.name": names.gateway_workload(meta["name"]),
            "kaizen.gateway": meta["name"],
            "deployment.environment.name": str(inputs.gateway["spec"].get("environment", "")),
        }
        env += [
            {"name": OTLP_ENDPOINT_ENV, "value": inputs.otlp_endpoint},
            {"name": "OTEL_SERVICE_NAME", "value": "kaizen-gateway"},
            {
                "name": "OTEL_RESOURCE_ATTRIBUTES",
                "value": ",".join(f"{k}={v}" for k, v in resource.items()),
            },
        ]
    return env


def render_replicas(inputs: GatewayInputs, spec: GatewaySpec) -> dict[str, Any] | None:
    """The replica count, applied under its own field manager, or None to leave it alone.

    Without a ScalingPolicy the Gateway's spec.replicas is written. With one, the HPA
    owns the count and nothing is written — except once, when the Deployment is
    created, to start at the policy's minimum. A separate manager keeps the field
    when we stop writing it, so handing it to the HPA never resets it to 1.
    """
    if inputs.autoscaled:
        if inputs.deployment is not None:
            return None
        replicas = min(inputs.min_replicas or spec.replicas, inputs.policy.max_replicas)
    else:
        replicas = spec.replicas
    gw = inputs.gateway["metadata"]["name"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": names.gateway_workload(gw),
            "namespace": inputs.gateway["metadata"]["namespace"],
        },
        "spec": {"replicas": replicas},
    }


def render_service(inputs: GatewayInputs, spec: GatewaySpec) -> dict[str, Any]:
    """The Service in front of the gateway pods."""
    gw = inputs.gateway["metadata"]["name"]
    exposure = spec.exposure
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(inputs, names.gateway_workload(gw)),
        "spec": {
            "type": exposure.service_type if exposure else "ClusterIP",
            "selector": names.gateway_selector_labels(gw),
            "ports": [
                {
                    "name": "http",
                    "port": exposure.port if exposure else 80,
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ],
        },
    }


def render_pdb(inputs: GatewayInputs) -> dict[str, Any]:
    """Keep all but one pod up during voluntary disruptions."""
    gw = inputs.gateway["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(inputs, names.gateway_workload(gw)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.gateway_selector_labels(gw)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def render_network_policy(inputs: GatewayInputs, spec: GatewaySpec) -> dict[str, Any]:
    """Ingress: the gateway port, from the Gateway's own namespace, the operator's and
    the ingress controllers' (from anywhere only for an allowed NodePort/LoadBalancer).
    Egress: the internet, DNS and the endpoints the platform lists; never link-local
    (cloud metadata) nor cluster-internal addresses (kaizen_api.netpolicy)."""
    gw = inputs.gateway["metadata"]["name"]
    port = {"ports": [{"port": GATEWAY_PORT, "protocol": "TCP"}]}
    public = spec.exposure is not None and spec.exposure.service_type != "ClusterIP"
    namespaces = sorted(
        {*inputs.policy.ingress_namespaces, *filter(None, [inputs.operator_namespace])}
    )
    peers: list[dict[str, Any]] = [{"podSelector": {}}] + [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        for ns in namespaces
    ]
    ingress = [port] if public else [{"from": peers, **port}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(inputs, names.gateway_workload(gw)),
        "spec": {
            "podSelector": {"matchLabels": names.gateway_selector_labels(gw)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress_rules(inputs.policy.egress_allow, inputs.policy.egress_denied),
        },
    }


def render_ingress(inputs: GatewayInputs, spec: GatewaySpec) -> dict[str, Any] | None:
    """An Ingress to the Service, when the Gateway asks for one."""
    if not spec.exposure or not spec.exposure.ingress:
        return None
    ing = spec.exposure.ingress
    gw = inputs.gateway["metadata"]["name"]
    workload = names.gateway_workload(gw)
    body: dict[str, Any] = {
        "rules": [
            {
                "host": ing.host,
                "http": {
                    "paths": [
                        {
                            "path": path,
                            "pathType": "Prefix",
                            "backend": {"service": {"name": workload, "port": {"name": "http"}}},
                        }
                        for path in PUBLIC_PATHS
                    ]
                },
            }
        ]
    }
    if ing.class_name:
        body["ingressClassName"] = ing.class_name
    if ing.tls_secret_name:
        body["tls"] = [{"hosts": [ing.host], "secretName": ing.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(inputs, workload),
        "spec": body,
    }


def render_http_route(inputs: GatewayInputs, spec: GatewaySpec) -> dict[str, Any] | None:
    """A Gateway API HTTPRoute to the Service, when the Gateway asks for one."""
    if not spec.exposure or not spec.exposure.http_route:
        return None
    route = spec.exposure.http_route
    workload = names.gateway_workload(inputs.gateway["metadata"]["name"])
    parents = [p.to_wire() for p in route.parent_refs]
    body: dict[str, Any] = {
        "parentRefs": parents,
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": p}} for p in PUBLIC_PATHS],
                "backendRefs": [{"name": workload, "port": spec.exposure.port}],
            }
        ],
    }
    if route.hostnames:
        body["hostnames"] = list(route.hostnames)
    return {
        "apiVersion": HTTP_ROUTE[0],
        "kind": HTTP_ROUTE[1],
        "metadata": _meta(inputs, workload),
        "spec": body,
    }


def _rollout(inputs: GatewayInputs, desired: int | None) -> tuple[bool, str, dict[str, Any]]:
    dep = inputs.deployment
    if dep is None:
        return False, "Deployment not created yet", {}
    st = dep.get("status") or {}
    generation = dep["metadata"].get("generation", 0)
    want = desired if desired is not None else (dep.get("spec") or {}).get("replicas", 1)
    observed = {"replicas": st.get("replicas", 0), "readyReplicas": st.get("readyReplicas", 0)}
    if st.get("observedGeneration", 0) < generation:
        return False, "Deployment rollout not observed yet", observed
    if st.get("updatedReplicas", 0) < want:
        return False, f"{st.get('updatedReplicas', 0)}/{want} pods updated", observed
    if st.get("availableReplicas", 0) < want:
        return False, f"{st.get('availableReplicas', 0)}/{want} pods available", observed
    if st.get("replicas", 0) > want:
        return False, "old pods are terminating", observed
    return True, f"{want} pods available", observed


TOOLS_REACHABLE = "ToolsReachable"
REASON_PATTERN = re.compile(r"^[a-z0-9_]{1,40}$")


def mcp_servers(bundle: AgentBundle) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(shown URL, transport) of each MCP server the bundle's agents use -> (agent, tool)."""
    used: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for agent in (*bundle.agents, *bundle.pinned_agents):
        for tool in agent.spec.tools or []:
            if tool.type == ToolType.MCP and tool.mcp is not None:
                key = (display_url(tool.mcp.url), MCPTransport(tool.mcp.transport).value)
                used.setdefault(key, []).append((agent.name, tool.name))
    return used


def merge_tool_servers(
    pages: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, Any], ...] | None:
    """The MCP servers of several pods' /readyz pages, one entry per server: unreachable
    when any pod finds it so (with that pod's reason), reachable when all that probed it
    do; None without any page."""
    pages = list(pages)
    if not pages:
        return None
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for page in pages:
        servers = page.get("mcpServers")
        for server in servers if isinstance(servers, list) else []:
            if not isinstance(server, dict):
                continue
            key = (str(server.get("url")), str(server.get("transport")))
            entry = merged.setdefault(key, {"url": key[0], "transport": key[1], "reachable": None})
            reachable = server.get("reachable")
            if reachable is False and entry["reachable"] is not False:
                entry.update(reachable=False, reason=server.get("reason"))
            elif reachable is True and entry["reachable"] is None:
                entry["reachable"] = True
    return tuple(merged.values())


def tools_condition(
    bundle: AgentBundle, reported: tuple[Mapping[str, Any], ...] | None
) -> tuple[str, str, str] | None:
    """ToolsReachable (status, reason, message), or None when no agent uses MCP tools.

    The message is written here from the bundle (URLs without credentials or query) and
    a reason code checked against a pattern: nothing a pod or a tool server says is
    copied into the status."""
    used = mcp_servers(bundle)
    if not used:
        return None
    if reported is None:
        return "Unknown", "ToolServersNotProbed", "no gateway pod has reported its MCP servers"
    states = {(str(r.get("url")), str(r.get("transport"))): r for r in reported}
    down, unknown = [], []
    for key, users in sorted(used.items()):
        state = states.get(key)
        reachable = state.get("reachable") if state else None
        who = ", ".join(f"agent {a} tool {t}" for a, t in users)
        if reachable is False:
            reason = str(state.get("reason") if state else "") or "unreachable"
            reason = reason if REASON_PATTERN.match(reason) else "unreachable"
            down.append(f"{who}: MCP server {key[0]} ({key[1]}) {reason}")
        elif reachable is not True:
            unknown.append(f"{who}: MCP server {key[0]} ({key[1]}) not probed yet")
    if down:
        return "False", "MCPServerUnreachable", "; ".join(down + unknown)
    if unknown:
        return "Unknown", "ToolServersNotProbed", "; ".join(unknown)
    return "True", "AllReachable", f"{len(used)} MCP server(s) reachable"


def pipeline_status(
    gateway: Mapping[str, Any], spec: GatewaySpec, pipelines: ServedPipelines
) -> dict[str, Any]:
    """servedPipelineRevisions and pinnedRevisions: set while the Gateway selects
    pipelines, emptied once it stops (a status patch merges: a missing key stays)."""
    old = gateway.get("status") or {}
    if spec.pipelines is None and not (
        old.get("servedPipelineRevisions") or old.get("pinnedRevisions")
    ):
        return {}
    return {
        "servedPipelineRevisions": [
            {"pipeline": p.name, "revision": p.revision} for p in pipelines.pipelines
        ],
        "pinnedRevisions": [
            {"agent": a, "revision": r, "pipeline": p} for a, r, p in sorted(pipelines.pinned_by)
        ],
    }


def render_gateway(inputs: GatewayInputs) -> GatewayPlan:
    """Desired children, children to prune, and the status of a Gateway."""
    gateway = inputs.gateway
    meta = gateway["metadata"]
    spec = GatewaySpec.model_validate(gateway["spec"])
    refused = violations(spec, meta["namespace"], inputs.policy, inputs.image)
    if refused:
        return render_not_allowed(inputs, spec, refused)
    served, problems = served_agents(inputs, spec)
    pipelines = served_pipelines(inputs, spec, served)
    problems += pipelines.problems
    bundle = render_bundle(inputs, spec, served, pipelines)
    text = bundle_text(bundle)
    bundle_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
    children: list[dict[str, Any]] = [
        render_service_account(inputs),
        render_bundle_config_map(inputs, text),
        render_deployment(inputs, spec, bundle, bundle_hash),
        render_service(inputs, spec),
        render_network_policy(inputs, spec),
    ]
    prune: list[tuple[str, str, str]] = []
    workload = names.gateway_workload(meta["name"])
    effective = inputs.min_replicas if inputs.autoscaled and inputs.min_replicas else spec.replicas
    if effective > 1:
        children.append(render_pdb(inputs))
    else:
        prune.append(("policy/v1", "PodDisruptionBudget", workload))
    ingress = render_ingress(inputs, spec)
    if ingress:
        children.append(ingress)
    else:
        prune.append(("networking.k8s.io/v1", "Ingress", workload))
    route = render_http_route(inputs, spec)
    if route and inputs.http_route_api:
        children.append(route)
    elif inputs.http_route_api:
        prune.append((*HTTP_ROUTE, workload))

    ready, message, observed = _rollout(inputs, None if inputs.autoscaled else spec.replicas)
    if problems:
        message += "; " + "; ".join(problems)
    port = spec.exposure.port if spec.exposure else 80
    status: dict[str, Any] = {
        "observedGeneration": meta.get("generation"),
        **observed,
        "selector": ",".join(
            f"{k}={v}" for k, v in names.gateway_selector_labels(meta["name"]).items()
        ),
        "servedRevisions": [{"agent": a.name, "revision": a.revision} for a in served],
        **pipeline_status(gateway, spec, pipelines),
        "endpoint": f"http://{workload}.{meta['namespace']}.svc.cluster.local:{port}",
        "conditions": ready_conditions(
            (gateway.get("status") or {}).get("conditions") or [],
            ready=ready,
            reason="Available" if ready else "RollingOut",
            message=message,
            generation=meta.get("generation"),
            now=inputs.now,
            reconciling=not ready,
        ),
    }
    if route is None:
        status["conditions"] = [c for c in status["conditions"] if c["type"] != ROUTE_APPLIED]
    else:
        status["conditions"] = set_condition(
            status["conditions"],
            ROUTE_APPLIED,
            inputs.http_route_api,
            "Applied" if inputs.http_route_api else "GatewayAPINotInstalled",
            f"HTTPRoute {workload} routes to the gateway's Service"
            if inputs.http_route_api
            else "spec.exposure.httpRoute is set, but this cluster does not serve "
            "gateway.networking.k8s.io/v1 HTTPRoute: install the Gateway API CRDs "
            "(and an implementation), or remove spec.exposure.httpRoute",
            generation=meta.get("generation"),
            now=inputs.now,
        )
    tools = tools_condition(bundle, inputs.tool_servers)
    if tools is None:
        status["conditions"] = [c for c in status["conditions"] if c["type"] != TOOLS_REACHABLE]
    else:
        status["conditions"] = set_condition(
            status["conditions"], TOOLS_REACHABLE, *tools, meta.get("generation"), inputs.now
        )
    denied = [p for p in problems if any(r in p for r in inputs.secret_refusals.values())]
    unpaired = denied + [p for p in problems if ALLOWED_DESTINATIONS in p]
    if unpaired:
        status["conditions"] = set_condition(
            status["conditions"],
            SECRETS_PAIRED,
            False,
            SECRET_ACCESS_DENIED if denied else "SecretNotPaired",
            "; ".join(unpaired)[:2000],
            generation=meta.get("generation"),
            now=inputs.now,
        )
    else:
        status["conditions"] = [c for c in status["conditions"] if c["type"] != SECRETS_PAIRED]
    return GatewayPlan(
        children=tuple(children),
        replicas=render_replicas(inputs, spec),
        prune=tuple(prune),
        status=status,
        bundle=bundle,
    )


def render_not_allowed(inputs: GatewayInputs, spec: GatewaySpec, refused: list[str]) -> GatewayPlan:
    """A Gateway that asks for more than the platform allows: nothing is applied or
    pruned (its pods, if any, keep running as they were), and Ready is False with
    reason NotAllowed naming each rule broken."""
    meta = inputs.gateway["metadata"]
    old = inputs.gateway.get("status") or {}
    status: dict[str, Any] = {
        "observedGeneration": meta.get("generation"),
        "conditions": ready_conditions(
            old.get("conditions") or [],
            ready=False,
            reason=NOT_ALLOWED,
            message="not allowed by the platform's gateway policy: " + "; ".join(refused),
            generation=meta.get("generation"),
            now=inputs.now,
            stalled=True,
        ),
        "servedRevisions": old.get("servedRevisions") or [],
    }
    for key in (
        "replicas",
        "readyReplicas",
        "selector",
        "endpoint",
        "servedPipelineRevisions",
        "pinnedRevisions",
    ):
        if key in old:
            status[key] = old[key]
    return GatewayPlan(
        children=(),
        replicas=None,
        prune=(),
        status=status,
        bundle=render_bundle(inputs, spec, []),
    )
