"""What "converged with nothing lost" means for a namespace the operator manages,
checked from the cluster's objects alone (used after every injected fault)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from kaizen_api.v1alpha1.agent import AgentSpec
from kaizen_operator import names
from kaizen_operator.agent.render import content_hash

GROUP, VERSION = "kaizen.studio", "v1alpha1"
MANAGED = f"app.kubernetes.io/managed-by={names.MANAGED_BY}"


def _items(custom: client.CustomObjectsApi, ns: str, plural: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural)[
        "items"
    ]
    return items


def _raw(listing: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """A typed list call's items as plain dicts (model deserialization of thousands of
    objects takes seconds)."""
    resp = listing(*args, _preload_content=False, **kwargs)
    items: list[dict[str, Any]] = json.loads(resp.data)["items"]
    return items


def _owner_uid(obj: dict[str, Any]) -> str | None:
    refs = obj["metadata"].get("ownerReferences") or []
    return str(refs[0]["uid"]) if refs else None


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].get("labels") or {}


def _selected(gateway: dict[str, Any], agents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    selection = gateway["spec"]["agents"]
    if "names" in selection:
        wanted = set(selection["names"])
        return [a for a in agents if a["metadata"]["name"] in wanted]
    labels = (selection.get("selector") or {}).get("matchLabels") or {}
    return [
        a
        for a in agents
        if all((a["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
    ]


def problems(api_client: client.ApiClient, ns: str) -> list[str]:
    """Every way ``ns`` differs from what its Agents and Gateways ask for: missing,
    duplicate or orphaned children, stale bundles, unobserved generations."""
    custom = client.CustomObjectsApi(api_client)
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    policy = client.PolicyV1Api(api_client)
    agents, gateways = _items(custom, ns, "agents"), _items(custom, ns, "gateways")
    found: list[str] = []

    agent_uids = {a["metadata"]["uid"] for a in agents}
    revisions = _raw(apps.list_namespaced_controller_revision, ns, label_selector=MANAGED)
    for rev in revisions:
        if _owner_uid(rev) not in agent_uids:
            found.append(f"orphaned revision {rev['metadata']['name']}")
    by_agent: dict[str | None, list[dict[str, Any]]] = {}
    for rev in revisions:
        by_agent.setdefault(_owner_uid(rev), []).append(rev)
    for agent in agents:
        name, status = agent["metadata"]["name"], agent.get("status") or {}
        if status.get("observedGeneration") != agent["metadata"]["generation"]:
            found.append(f"agent {name}: generation not observed yet")
            continue
        own = by_agent.get(agent["metadata"]["uid"], [])
        hashes = [_labels(r).get(names.REVISION_HASH_LABEL) for r in own]
        if len(hashes) != len(set(hashes)):
            found.append(f"agent {name}: duplicate revisions {sorted(map(str, hashes))}")
        latest = max(own, key=lambda r: int(r["revision"]), default=None)
        want = content_hash(AgentSpec.model_validate(agent["spec"]).to_wire())
        if latest is None or _labels(latest).get(names.REVISION_HASH_LABEL) != want:
            found.append(f"agent {name}: latest revision is not its current spec")
        elif status.get("latestRevision") != latest["revision"]:
            found.append(f"agent {name}: status.latestRevision {status.get('latestRevision')}")

    gateway_uids = {g["metadata"]["uid"] for g in gateways}
    children = {
        kind: _raw(listing, ns, label_selector=MANAGED)
        for kind, listing in (
            ("Deployment", apps.list_namespaced_deployment),
            ("Service", core.list_namespaced_service),
            ("ConfigMap", core.list_namespaced_config_map),
            ("ServiceAccount", core.list_namespaced_service_account),
            ("PodDisruptionBudget", policy.list_namespaced_pod_disruption_budget),
        )
    }
    owned: dict[str | None, set[str]] = {}
    bundles: dict[str, dict[str, Any]] = {}
    for kind, objs in children.items():
        for child in objs:
            uid = _owner_uid(child)
            if uid not in gateway_uids:
                found.append(f"orphaned {kind} {child['metadata']['name']}")
            elif kind in owned.get(uid, set()):
                found.append(f"duplicate {kind} for gateway uid {uid}")
            owned.setdefault(uid, set()).add(kind)
            if kind == "ConfigMap":
                bundles[child["metadata"]["name"]] = child
    for gw in gateways:
        name, uid = gw["metadata"]["name"], gw["metadata"]["uid"]
        status = gw.get("status") or {}
        if status.get("observedGeneration") != gw["metadata"]["generation"]:
            found.append(f"gateway {name}: generation not observed yet")
            continue
        want = {"Deployment", "Service", "ConfigMap", "ServiceAccount"}
        if int(gw["spec"].get("replicas") or 1) > 1:
            want.add("PodDisruptionBudget")
        if owned.get(uid, set()) != want:
            found.append(f"gateway {name}: children {sorted(owned.get(uid, set()))}")
            continue
        if gw["spec"]["environment"] == "dev":
            found.extend(_stale_dev_bundle(bundles.get(names.gateway_bundle(name)), gw, agents))
    return found


def _stale_dev_bundle(
    cm: dict[str, Any] | None, gw: dict[str, Any], agents: list[dict[str, Any]]
) -> list[str]:
    name = gw["metadata"]["name"]
    if cm is None:
        return [f"gateway {name}: no bundle"]
    served = {(a["name"], a["revision"]) for a in json.loads(cm["data"]["bundle.json"])["agents"]}
    want = {
        (a["metadata"]["name"], (a.get("status") or {}).get("latestRevision"))
        for a in _selected(gw, agents)
    }
    return [] if served == want else [f"gateway {name}: serves {served}, want {want}"]


def wait_converged(api_client: client.ApiClient, ns: str, timeout: float = 240) -> float:
    """Poll until :func:`problems` finds nothing; return the seconds it took."""
    started = time.monotonic()
    last: list[str] = []
    while time.monotonic() - started < timeout:
        last = problems(api_client, ns)
        if not last:
            return time.monotonic() - started
        time.sleep(1)
    shown = "\n  ".join(last[:20])
    raise AssertionError(f"not converged after {timeout:.0f}s ({len(last)} problems):\n  {shown}")
