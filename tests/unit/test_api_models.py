"""The typed API: generated CRDs match the commit, every field is documented,
examples validate, and the Python validators mirror the CEL rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kaizen_api.v1alpha1.common import parse_duration
from kaizen_api.v1alpha1.crd import KINDS, build_crd, render_crd_files
from kaizen_api.v1alpha1.gateway import GatewaySpec, RevisionPolicy
from kaizen_api.v1alpha1.reference import render_api_reference
from kaizen_api.v1alpha1.scaling import ScalingPolicySpec
from tests.support.manifests import MODELS, ROOT, example_documents


@pytest.mark.parametrize("folder", ["crds", "charts/kaizen-studio/crds"])
def test_committed_crds_equal_generated_output(folder: str) -> None:
    generated = render_crd_files()
    committed = {p.name: p.read_text() for p in (ROOT / folder).glob("*.yaml")}
    assert committed.keys() == generated.keys(), "run `kaizen crds generate`"
    for name, text in generated.items():
        assert committed[name] == text, f"{folder}/{name} is stale: run `kaizen crds generate`"


def test_committed_api_reference_equals_generated_output() -> None:
    assert (ROOT / "docs" / "api.md").read_text() == render_api_reference(), (
        "docs/api.md is stale: run `kaizen crds generate`"
    )


def _undocumented(schema: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, sub in schema.get("properties", {}).items():
        where = f"{path}.{name}"
        if name != "metadata" and not sub.get("description"):
            missing.append(where)
        missing += _undocumented(sub, where)
    if "items" in schema:
        missing += _undocumented(schema["items"], path + "[]")
    if isinstance(schema.get("additionalProperties"), dict):
        missing += _undocumented(schema["additionalProperties"], path + "{}")
    return missing


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_field_has_a_description(kind: Any) -> None:
    schema = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _undocumented(schema, kind.name) == []


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_crd_declares_names_subresources_and_columns(kind: Any) -> None:
    crd = build_crd(kind)
    names = crd["spec"]["names"]
    assert names["categories"] == ["kaizen"]
    assert names["shortNames"]
    version = crd["spec"]["versions"][0]
    assert "status" in version["subresources"]
    assert ("scale" in version["subresources"]) == (kind.name == "Gateway")
    assert [c["name"] for c in version["additionalPrinterColumns"]][-1] == "Age"


def test_examples_validate_against_the_models() -> None:
    kinds = set()
    for doc in example_documents():
        if doc["apiVersion"].startswith("kaizen.studio/"):
            MODELS[doc["kind"]].model_validate(doc)
            kinds.add(doc["kind"])
    assert kinds == set(MODELS)


def test_model_round_trips_through_wire_form() -> None:
    for doc in example_documents():
        if doc["kind"] in MODELS:
            model = MODELS[doc["kind"]].model_validate(doc)
            assert MODELS[doc["kind"]].model_validate(model.to_wire()) == model


def test_revision_policy_defaults_by_environment() -> None:
    names = {"names": ["a"]}
    assert (
        GatewaySpec(environment="dev", agents=names).effective_revision_policy()
        == RevisionPolicy.LATEST
    )
    assert (
        GatewaySpec(environment="production", agents=names).effective_revision_policy()
        == RevisionPolicy.PROMOTED
    )
    pinned = GatewaySpec(environment="qa", agents=names, revisionPolicy="Latest")
    assert pinned.effective_revision_policy() == RevisionPolicy.LATEST


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1d", "-5s", "1.5h"])
def test_parse_duration_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_python_layer_names_the_broken_rule() -> None:
    with pytest.raises(
        ValidationError, match="minReplicas must be less than or equal to maxReplicas"
    ):
        ScalingPolicySpec.model_validate(
            {
                "targetRef": {"name": "g"},
                "minReplicas": 5,
                "maxReplicas": 2,
                "metrics": [{"type": "cpu", "averageUtilization": 50}],
            }
        )
