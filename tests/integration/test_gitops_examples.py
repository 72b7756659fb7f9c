"""The GitOps example (Kustomize base + dev/staging/prod overlays) renders with the
kubectl Kustomize, validates against the API models, and is accepted by the apiserver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.kube import kubectl
from tests.support.manifests import MODELS, ROOT

OVERLAYS = ROOT / "examples" / "gitops" / "overlays"
EXPECTED = {
    "dev": ("kaizen-dev", "dev", 1),
    "staging": ("kaizen-staging", "staging", 2),
    "prod": ("kaizen-prod", "production", 3),
}


@pytest.mark.parametrize("overlay", sorted(EXPECTED))
def test_overlay_renders_validates_and_applies(crds: Path, namespace: str, overlay: str) -> None:
    rendered = kubectl(crds, "kustomize", str(OVERLAYS / overlay)).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    ns, environment, replicas = EXPECTED[overlay]
    for doc in docs:
        assert doc["metadata"]["namespace"] == ns
        MODELS[doc["kind"]].model_validate(doc)
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    assert (gateway["spec"]["environment"], gateway["spec"]["replicas"]) == (environment, replicas)
    assert ("ScalingPolicy" in {d["kind"] for d in docs}) == (overlay == "prod")
    for doc in docs:  # into this test's namespace instead of the overlay's
        doc["metadata"].pop("namespace")
    applied = kubectl(
        crds,
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
    )
    assert applied.stdout.count("(server dry run)") == len(docs)
