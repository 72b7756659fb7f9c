"""Pieces shared by every kind: the base model, conditions, references, selectors,
durations and quantities.

Wire names are Kubernetes camelCase; Python attributes are snake_case. Everything
here is pure (no I/O) and is also the source of the CRD schemas
(:mod:`kaizen_api.v1alpha1.crd`), so descriptions double as `kubectl explain` text.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

# Go's time.Duration syntax restricted to what people write: "30s", "5m", "1h30m", "250ms".
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# Kubernetes resource.Quantity (the same pattern the core API's OpenAPI uses).
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
HTTP_URL_PATTERN = r"^https?://[^\s/$.?#][^\s]*$"

Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        max_length=32,
        examples=["30s", "5m", "1h30m"],
    ),
]
"""A duration such as ``30s``, ``5m`` or ``1h30m`` (units ms, s, m, h)."""


def quantity_is_valid(value: int | str) -> bool:
    """True when ``value`` is a Kubernetes quantity."""
    return isinstance(value, int) or re.fullmatch(QUANTITY_PATTERN, value) is not None


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, bool) or not quantity_is_valid(value):
        raise ValueError(f"{value!r} is not a quantity: use e.g. 100m, 0.5, 2Gi")
    return value


_SUFFIXES = {
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def quantity_value(value: int | str) -> float:
    """The number a quantity stands for: ``500m`` -> 0.5, ``2Ki`` -> 2048, ``1e3`` -> 1000."""
    if isinstance(value, int):
        return float(value)
    match = re.fullmatch(
        r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9.]+|[KMGTPE]i|[numkMGTPE])?", value
    )
    if match is None:
        raise ValueError(f"{value!r} is not a quantity: use e.g. 100m, 0.5, 2Gi")
    number, suffix = float(match.group(1)), match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * 10 ** float(suffix[1:])
    return number * _SUFFIXES[suffix]


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes quantity: an integer or a string such as ``500m``, ``1.5``, ``2Gi``."""

ResourceName = Annotated[str, Field(min_length=1, max_length=253, pattern=NAME_PATTERN)]
"""The name of a Kubernetes object in the same namespace."""


def parse_duration(value: str) -> float:
    """Seconds in a duration string such as ``1h30m`` (raises ValueError when malformed)."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 5m, 1h30m")
    return sum(int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(value))


class KaizenModel(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )

    @model_validator(mode="after")
    def _keyed_lists_are_unique(self) -> Any:
        """Mirror of x-kubernetes-list-type map/set: the apiserver refuses duplicate keys."""
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra
            items = getattr(self, name)
            if not isinstance(extra, dict) or not items:
                continue
            list_type = extra.get("x-kubernetes-list-type")
            if list_type == "set":
                keys = list(items)
            elif list_type == "map":
                map_keys = extra.get("x-kubernetes-list-map-keys")
                fields = [str(k) for k in map_keys] if isinstance(map_keys, list) else []
                keys = [
                    tuple(getattr(item, _attr(type(item), f)) for f in fields) for item in items
                ]
            else:
                continue
            seen = set()
            for key in keys:
                if key in seen:
                    raise ValueError(f"{info.alias or name}: duplicate entry {key!r}")
                seen.add(key)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as the apiserver stores it (camelCase, unset fields omitted)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _attr(model: type[BaseModel], wire_name: str) -> str:
    """The Python attribute behind a wire (alias) name."""
    for name, info in model.model_fields.items():
        if (info.alias or name) == wire_name:
            return name
    return wire_name


def cel(rule: str, message: str, **extra: str) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry (a CEL rule and its human message)."""
    return {"rule": rule, "message": message, **extra}


def k8s_extra(
    *,
    validations: list[dict[str, str]] | None = None,
    list_type: str | None = None,
    list_map_keys: list[str] | None = None,
    preserve_unknown: bool = False,
) -> dict[str, Any]:
    """Kubernetes OpenAPI extensions for a field or model's JSON schema."""
    extra: dict[str, Any] = {}
    if validations:
        extra["x-kubernetes-validations"] = validations
    if list_type:
        extra["x-kubernetes-list-type"] = list_type
    if list_map_keys:
        extra["x-kubernetes-list-map-keys"] = list_map_keys
    if preserve_unknown:
        extra["x-kubernetes-preserve-unknown-fields"] = True
    return extra


class ConditionStatus(StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(KaizenModel):
    """One observation of the object's state, following the Kubernetes API conventions."""

    type: str = Field(
        description="Condition type, e.g. Ready, Reconciling, Stalled.",
        min_length=1,
        max_length=316,
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="Machine-readable CamelCase reason for the last transition.",
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = Field(
        default="", description="Human-readable details of the last transition.", max_length=32768
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed status.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition reflects."
    )


CONDITIONS_FIELD_EXTRA = k8s_extra(list_type="map", list_map_keys=["type"])


class ResourceStatus(KaizenModel):
    """What every kind's status starts with (Kubernetes API conventions, kstatus)."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation last reconciled."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=16,
        description="Ready, Reconciling, Stalled, and kind-specific conditions.",
        json_schema_extra=CONDITIONS_FIELD_EXTRA,
    )


class LocalObjectReference(KaizenModel):
    """A reference to an object of a known kind in the same namespace."""

    name: ResourceName = Field(description="Name of the referenced object.")


class SecretKeySelector(KaizenModel):
    """A key of a Secret in the same namespace. Only the reference is stored, never the value."""

    name: ResourceName = Field(description="Name of the Secret.")
    key: str = Field(
        default="apiKey",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key within the Secret's data.",
    )


# Kubernetes label syntax: the apiserver refuses a list whose selector breaks it, so a
# selector is checked here, at apply time, not when the operator first uses it.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]


class SelectorOperator(StrEnum):
    """Operator of a label selector requirement."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(KaizenModel):
    """A label key, an operator and values, as in Kubernetes label selectors."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "self.operator in ['In', 'NotIn'] ? size(self.values) > 0 : size(self.values) == 0",
                    "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist",
                )
            ]
        )
    )

    key: str = Field(
        description="The label key.", min_length=1, max_length=317, pattern=LABEL_KEY_PATTERN
    )
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=64,
        description="Label values; non-empty for In/NotIn, empty for Exists/DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        """Mirror of the CEL rule, so the Python layer refuses what the apiserver refuses."""
        needs_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if needs_values != bool(self.values):
            raise ValueError(
                "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"
            )
        return self


class LabelSelector(KaizenModel):
    """Selects objects by labels; the requirements are ANDed."""

    match_labels: dict[str, LabelValue] | None = Field(
        default=None,
        description="Labels that must all match exactly.",
        max_length=64,
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=32, description="Label requirements that must all hold."
    )


class ResourceRequirements(KaizenModel):
    """Compute resources of a container, as in the core API."""

    requests: dict[str, Quantity] | None = Field(
        default=None,
        description="Minimum resources reserved, e.g. {cpu: 100m, memory: 128Mi}.",
        max_length=16,
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Maximum resources allowed, e.g. {memory: 512Mi}.", max_length=16
    )


ObjectMeta = dict[str, Any]
"""Kubernetes object metadata; validated by the apiserver, not by these models."""
