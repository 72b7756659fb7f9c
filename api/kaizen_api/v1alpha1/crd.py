"""CustomResourceDefinitions generated from the pydantic models (pure).

The models are the schema's single source of truth: this module turns their JSON
Schema into Kubernetes *structural* OpenAPI v3 (``$ref`` inlined, optional unions
flattened, titles dropped), then wraps it with names, subresources and printer
columns. ``kaizen crds`` writes the result to ``crds/`` and the Helm chart.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml

from kaizen_api.v1alpha1 import GROUP, VERSION
from kaizen_api.v1alpha1.agent import Agent, AgentSpec, AgentStatus
from kaizen_api.v1alpha1.common import KaizenModel
from kaizen_api.v1alpha1.gateway import Gateway, GatewaySpec, GatewayStatus
from kaizen_api.v1alpha1.pipeline import Pipeline, PipelineSpec, PipelineStatus
from kaizen_api.v1alpha1.promotion import Promotion, PromotionSpec, PromotionStatus
from kaizen_api.v1alpha1.scaling import ScalingPolicy, ScalingPolicySpec, ScalingPolicyStatus

READY = '.status.conditions[?(@.type=="Ready")].status'
PART_OF_LABEL = {"app.kubernetes.io/part-of": "kaizen-studio"}
_DROPPED_KEYS = {"title", "examples", "$defs", "discriminator"}


class SchemaError(ValueError):
    """A model uses a construct that a structural schema cannot express."""


@dataclass(frozen=True)
class Column:
    """One printer column of ``kubectl get``."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Kind:
    """Everything the CRD of one kind needs besides its schema."""

    model: type[KaizenModel]
    spec: type[KaizenModel]
    status: type[KaizenModel]
    plural: str
    short_names: tuple[str, ...]
    columns: tuple[Column, ...]
    scale: bool = False
    extra_root_validations: tuple[dict[str, str], ...] = field(default=())

    @property
    def name(self) -> str:
        return self.model.__name__

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


AGE = Column("Age", ".metadata.creationTimestamp", "date")

KINDS: tuple[Kind, ...] = (
    Kind(
        Agent,
        AgentSpec,
        AgentStatus,
        plural="agents",
        short_names=("ag",),
        columns=(
            Column("Model", ".spec.model.name", description="Model name at the provider."),
            Column("Provider", ".spec.model.provider", priority=1),
            Column("Lifecycle", ".spec.lifecycle"),
            Column("Revision", ".status.latestRevision", "integer", "Newest revision."),
            Column("Ready", READY),
            AGE,
        ),
    ),
    Kind(
        Pipeline,
        PipelineSpec,
        PipelineStatus,
        plural="pipelines",
        short_names=("pl",),
        columns=(
            Column("Pattern", ".spec.pattern"),
            Column("Lifecycle", ".spec.lifecycle"),
            Column("Revision", ".status.latestRevision", "integer", "Newest revision."),
            Column("Ready", READY),
            AGE,
        ),
    ),
    Kind(
        Gateway,
        GatewaySpec,
        GatewayStatus,
        plural="gateways",
        short_names=("gw",),
        columns=(
            Column("Environment", ".spec.environment"),
            Column("Replicas", ".spec.replicas", "integer", "Desired pods."),
            Column("Available", ".status.readyReplicas", "integer", "Ready pods."),
            Column("Ready", READY),
            Column("Endpoint", ".status.endpoint", priority=1),
            AGE,
        ),
        scale=True,
    ),
    Kind(
        ScalingPolicy,
        ScalingPolicySpec,
        ScalingPolicyStatus,
        plural="scalingpolicies",
        short_names=("sp",),
        columns=(
            Column("Target", ".spec.targetRef.name", description="Gateway scaled."),
            Column("Min", ".spec.minReplicas", "integer"),
            Column("Max", ".spec.maxReplicas", "integer"),
            Column("Current", ".status.currentReplicas", "integer"),
            Column("Desired", ".status.desiredReplicas", "integer", priority=1),
            Column("Override", ".status.activeOverride.mode"),
            Column("Ready", READY),
            AGE,
        ),
    ),
    Kind(
        Promotion,
        PromotionSpec,
        PromotionStatus,
        plural="promotions",
        short_names=("promo",),
        columns=(
            Column("Agent", ".spec.agentRef.name", description="Agent promoted (agentRef)."),
            Column("Kind", ".spec.targetRef.kind", description="Kind promoted (targetRef)."),
            Column("Target", ".spec.targetRef.name", description="Name promoted (targetRef)."),
            Column("Revision", ".spec.revision", "integer"),
            Column("From", ".spec.from"),
            Column("To", ".spec.to"),
            Column("Phase", ".status.phase"),
            AGE,
        ),
    ),
)


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline one ``$ref`` / single ``allOf``, letting the referring node's keys win."""
    while True:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
        else:
            return node


def _flatten_optional(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` arrives as ``anyOf: [X, null]``; a structural schema just omits it."""
    if "anyOf" not in node or node.get("x-kubernetes-int-or-string"):
        return node
    options = [o for o in node["anyOf"] if o.get("type") != "null"]
    if len(options) == 1:
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return {**_resolve(options[0], defs), **rest}
    raise SchemaError(f"unions other than X | None are not structural: {node['anyOf']}")


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON-Schema node into a structural OpenAPI v3 schema."""
    node = _flatten_optional(_resolve(node, defs), defs)
    node = _flatten_optional(_resolve(node, defs), defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = structural(value, defs)
            continue  # `false` (extra="forbid"): the apiserver prunes unknown fields instead
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key == "description":
            out[key] = " ".join(value.replace("``", "").split())
        else:
            out[key] = copy.deepcopy(value)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if (
        "type" not in out
        and not out.get("x-kubernetes-int-or-string")
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise SchemaError(f"schema node without a type: {node}")
    return out


def model_schema(model: type[KaizenModel]) -> dict[str, Any]:
    """The structural schema of one model (by wire names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def _column(col: Column) -> dict[str, Any]:
    out: dict[str, Any] = {"name": col.name, "type": col.type, "jsonPath": col.json_path}
    if col.description:
        out["description"] = col.description
    if col.priority:
        out["priority"] = col.priority
    return out


def build_crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    root: dict[str, Any] = {
        "type": "object",
        "description": (kind.model.__doc__ or "").strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion of this object: kaizen.studio/v1alpha1.",
            },
            "kind": {"type": "string", "description": f"Kind of this object: {kind.name}."},
            "metadata": {"type": "object"},
            "spec": model_schema(kind.spec),
            "status": model_schema(kind.status),
        },
    }
    if kind.extra_root_validations:
        root["x-kubernetes-validations"] = list(kind.extra_root_validations)
    subresources: dict[str, Any] = {"status": {}}
    if kind.scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": dict(PART_OF_LABEL)},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.name,
                "listKind": f"{kind.name}List",
                "plural": kind.plural,
                "singular": kind.name.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["kaizen"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": subresources,
                    "additionalPrinterColumns": [_column(c) for c in kind.columns],
                }
            ],
        },
    }


HEADER = "# GENERATED by `kaizen crds generate` from api/kaizen_api/v1alpha1 — do not edit.\n"


def render_crd_files() -> dict[str, str]:
    """File name -> YAML text of every CRD, exactly as committed under ``crds/``."""
    return {
        f"{kind.crd_name}.yaml": HEADER
        + yaml.safe_dump(build_crd(kind), sort_keys=False, width=100, allow_unicode=True)
        for kind in KINDS
    }
