"""Builders of API objects as the apiserver returns them, for pure render tests."""

from __future__ import annotations

from typing import Any

NS = "team-a"


def obj(
    kind: str,
    name: str,
    spec: dict[str, Any],
    *,
    uid: str | None = None,
    status: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    generation: int = 1,
    api_version: str = "kaizen.studio/v1alpha1",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": uid or f"uid-{kind.lower()}-{name}",
            "generation": generation,
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": labels or {},
        },
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


def agent(name: str = "hello", prompt: str = "Be kind.", **spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", None)
    status = spec.pop("status", None)
    return obj(
        "Agent",
        name,
        {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": prompt, **spec},
        labels=labels,
        status=status,
    )


def gateway(name: str = "dev", environment: str = "dev", **spec: Any) -> dict[str, Any]:
    status = spec.pop("status", None)
    spec.setdefault("agents", {"names": ["hello"]})
    return obj("Gateway", name, {"environment": environment, **spec}, status=status)


def pipeline(name: str = "flow", *steps: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A Sequential Pipeline; each step is {"name": ..., "agentRef"|"pipelineRef": ...}
    (default: one step calling Agent hello)."""
    labels = spec.pop("labels", None)
    status = spec.pop("status", None)
    spec.setdefault("pattern", "Sequential")
    spec.setdefault("steps", list(steps) or [{"name": "one", "agentRef": {"name": "hello"}}])
    return obj("Pipeline", name, spec, labels=labels, status=status)
