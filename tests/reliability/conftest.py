"""Fixtures of the reliability suite (the figures table is printed by tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client


@pytest.fixture
def own_namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace outside the session operators' t-<worker>-* scope, for a test that
    runs (and kills) its own operator; deleted afterwards."""
    prefix = request.node.name.removeprefix("test_").split("_")[0][:12]
    ns = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    yield ns
    core.delete_namespace(ns, propagation_policy="Background")
