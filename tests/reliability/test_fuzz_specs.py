"""Hostile specs through the real apiserver: hypothesis draws Agents, Gateways,
ScalingPolicies and Promotions from the CRD schemas; the apiserver refuses the invalid
ones at apply time, and for every one it stores the operator neither crashes nor loops:
each ends with a condition or phase that has a reason."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kaizen_api.v1alpha1.crd import KINDS, Kind, model_schema
from tests.reliability.convergence import GROUP, VERSION
from tests.reliability.figures import Figures, pick
from tests.support.kube import eventually
from tests.support.processes import start_operator
from tests.support.schema_strategy import strategy

REPLICA_FIELDS = ("replicas", "minReplicas", "maxReplicas")


def bounded(spec: dict[str, Any]) -> dict[str, Any]:
    """Keep drawn replica counts small: the fuzz is about specs, not about 10k fake pods."""
    for key in REPLICA_FIELDS:
        if isinstance(spec.get(key), int) and spec[key] > 3:
            spec[key] = 3
    return spec


def documents() -> st.SearchStrategy[tuple[Kind, dict[str, Any]]]:
    return st.one_of(
        *(st.tuples(st.just(k), strategy(model_schema(k.spec)).map(bounded)) for k in KINDS)
    )


def settled(obj: dict[str, Any], kind: str) -> bool:
    """The operator has had its say: a phase (Promotion) or a Ready condition with a reason."""
    status = obj.get("status") or {}
    if kind == "Promotion":
        return bool(status.get("phase") and status.get("message"))
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return False
    ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
    return bool(ready and ready[0].get("reason"))


def reconciles(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kaizen_operator_reconciles_total{")
    )


def test_drawn_specs_are_refused_or_end_with_a_reason_and_never_loop(
    crds: Path, api_client: client.ApiClient, own_namespace: str, tmp_path: Path, figures: Figures
) -> None:
    ns, custom = own_namespace, client.CustomObjectsApi(api_client)
    proc, metrics_port = start_operator(crds, ns, tmp_path / "operator.log")
    stored: list[tuple[str, str]] = []
    refused: list[str] = []
    serial = [0]

    @settings(
        max_examples=pick(40, 400),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(doc=documents())
    def apply(doc: tuple[Kind, dict[str, Any]]) -> None:
        kind, spec = doc
        serial[0] += 1
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind.name,
            "metadata": {"name": f"{kind.name.lower()}-{serial[0]}"},
            "spec": spec,
        }
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, kind.plural, body)
        except ApiException as exc:
            assert exc.status in (400, 422), f"{exc.status} for {body}: {exc.body}"
            assert "spec" in (exc.body or ""), f"a refusal that names no field: {exc.body}"
            refused.append(kind.name)
            return
        stored.append((kind.plural, body["metadata"]["name"]))

    try:
        apply()
        assert stored, "every drawn spec was refused: the fuzz reached nothing"

        def unsettled() -> list[str]:
            out = []
            for plural, name in stored:
                obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
                if not settled(obj, obj["kind"]):
                    out.append(f"{plural}/{name}")
            return out

        try:
            eventually(lambda: not unsettled(), timeout=180, what="every stored object settled")
        except AssertionError:
            left = unsettled()[:5]
            shown = [
                custom.get_namespaced_custom_object(GROUP, VERSION, ns, *ref.split("/"))
                for ref in left
            ]
            errors = [
                x
                for x in proc.log.read_text().splitlines()
                if '"levelname": "ERROR"' in x or "Traceback" in x
            ]
            raise AssertionError(f"never settled: {left}\n{shown}\n{errors[-10:]}") from None
        assert proc.proc.poll() is None, f"the operator died:\n{proc.tail(80)}"

        # No loop: once settled, reconciles come only from the periodic resync.
        kinds = [plural for plural, _ in stored]
        allowed = 20 + 2 * 10 * (
            0.5 * kinds.count("promotions")
            + 0.2 * kinds.count("scalingpolicies")
            + 0.05 * (kinds.count("agents") + kinds.count("gateways"))
        )
        before = reconciles(metrics_port)
        time.sleep(10)
        quiet = reconciles(metrics_port) - before
        assert quiet <= allowed, f"{quiet} reconciles in 10 quiet seconds (resync allows {allowed})"
        assert proc.proc.poll() is None, f"the operator died:\n{proc.tail(80)}"
        assert "Traceback" not in proc.log.read_text(), proc.tail(80)
    finally:
        proc.stop()
    figures.record("specs drawn", len(stored) + len(refused))
    figures.record("refused at apply time", len(refused))
    figures.record("stored and settled with a reason", len(stored))
    figures.record("reconciles in 10 quiet seconds", int(quiet), f"(resync allows {allowed:.0f})")
