"""Where a Gateway's pods answer: EndpointSlices in a cluster, or a local override.

Promotion gates call gateways directly (smoke invocations). In a cluster the ready
addresses of the gateway Service's EndpointSlices are used. Where pods run no
containers (kwok, `make dev`), `--gateway-endpoints PATH` names a JSON file, or a
folder of them, mapping "<namespace>/<gateway>" to the URL of a local process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kaizen_api.v1alpha1.bundle import GATEWAY_PORT
from kaizen_operator import names
from kaizen_operator.kube import Kube


def _overrides(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    merged: dict[str, str] = {}
    for file in files:
        try:
            merged.update(json.loads(file.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return merged


async def gateway_urls(kube: Kube, overrides: Path | None, gateway: dict[str, Any]) -> list[str]:
    """Base URLs of the gateway's ready pods (empty when none answers yet)."""
    meta = gateway["metadata"]
    local = _overrides(overrides).get(f"{meta['namespace']}/{meta['name']}")
    if local:
        return [local]
    service = names.gateway_workload(meta["name"])
    urls = []
    for eps in await kube.list(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        meta["namespace"],
        f"kubernetes.io/service-name={service}",
    ):
        port = next(
            (p["port"] for p in eps.get("ports") or [] if p.get("name") == "http"), GATEWAY_PORT
        )
        for endpoint in eps.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready", True):
                urls += [f"http://{address}:{port}" for address in endpoint.get("addresses") or []]
    return urls
