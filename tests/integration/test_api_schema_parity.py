"""Property: whatever the pydantic models accept, the apiserver accepts too, and the
object it would store parses back to an equal model (the two validators agree)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from kaizen_api.v1alpha1.crd import KINDS, Kind, model_schema
from tests.support.schema_strategy import strategy

EXAMPLES_PER_KIND = 100


def spec_strategy(kind: Kind) -> st.SearchStrategy[dict[str, Any]]:
    return strategy(model_schema(kind.spec))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_models_and_apiserver_agree(
    kind: Kind, api_client: client.ApiClient, crds: Path, namespace: str
) -> None:
    api = client.CustomObjectsApi(api_client)
    accepted = 0

    @settings(
        max_examples=EXAMPLES_PER_KIND,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
    )
    @given(spec=spec_strategy(kind))
    def check(spec: dict[str, Any]) -> None:
        nonlocal accepted
        body = {
            "apiVersion": "kaizen.studio/v1alpha1",
            "kind": kind.name,
            "metadata": {"name": "prop"},
            "spec": spec,
        }
        try:
            model = kind.model.model_validate(body)
        except ValidationError:
            assume(False)
            return
        wire = model.to_wire()
        try:
            stored = api.create_namespaced_custom_object(
                "kaizen.studio",
                "v1alpha1",
                namespace,
                kind.plural,
                wire,
                dry_run="All",
                field_validation="Strict",
            )
        except ApiException as exc:
            pytest.fail(f"pydantic accepted but the apiserver refused:\n{wire}\n{exc.body}")
        assert kind.model.model_validate(stored).spec == model.spec
        accepted += 1

    check()
    print(f"{kind.name}: {accepted} generated specs accepted by both layers")
    assert accepted >= EXAMPLES_PER_KIND // 4, f"no {kind.name} example passed pydantic validation"
