"""Faults under the operator: SIGKILL at random points of a burst of creates, updates
and deletes (with Promotions in flight), and a kube-apiserver + etcd restart under it.
Afterwards the namespace converges with no duplicate, orphaned or missing child, and
every Promotion ended in exactly one terminal phase."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from kaizen_api.v1alpha1.promotion import TERMINAL_PHASES
from localcluster import cluster
from tests.reliability.convergence import GROUP, VERSION, wait_converged
from tests.reliability.figures import Figures, pick
from tests.support.kube import (
    CRD_DIR,
    eventually,
    local_control_plane_only,
    private_cluster,
    private_control_plane,
)
from tests.support.processes import LocalProcess, start_operator

TERMINAL = {str(p) for p in TERMINAL_PHASES}


def agent(name: str, prompt: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Agent",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": prompt},
    }


def gateway(
    name: str, environment: str, agents: dict[str, Any], replicas: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Gateway",
        "metadata": {"name": name},
        "spec": {"environment": environment, "agents": agents, "replicas": replicas},
    }


def promotion(name: str, agent_name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Promotion",
        "metadata": {"name": name},
        "spec": {
            "agentRef": {"name": agent_name},
            "revision": 1,
            "from": "promo-dev",
            "to": "promo-staging",
        },
    }


class Burst:
    """A seeded random mix of creates, updates and deletes of Agents and Gateways, with
    one Promotion per promotable agent spread through it."""

    def __init__(self, custom: client.CustomObjectsApi, ns: str, seed: int, promos: int) -> None:
        self.custom, self.ns, self.rng = custom, ns, random.Random(seed)  # noqa: S311 - a replayable test seed
        self.agents: list[str] = []
        self.gateways: list[str] = []
        self.promotions = [f"promote-p{i}" for i in range(promos)]
        self.serial = 0
        self.done: dict[str, int] = {}

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        last: Exception | None = None
        for attempt in range(30):  # the apiserver may be restarting under us
            try:
                fn(GROUP, VERSION, self.ns, *args)
                return
            except ApiException as exc:
                if exc.status in (404, 409):
                    return  # raced with our own delete/create: fine for a burst
                if exc.status < 500 and exc.status != 429:
                    raise
            except Exception as exc:  # connection refused/reset while restarting
                last = exc
            time.sleep(min(0.2 * (attempt + 1), 2))
        raise AssertionError(f"the apiserver did not come back for {fn.__name__}: {last!r}")

    def step(self, position: float) -> None:
        self.serial += 1
        n, rng, c = self.serial, self.rng, self.custom
        promoted = self.done.get("promotion", 0)
        if promoted < len(self.promotions) and position >= promoted / len(self.promotions):
            name = self.promotions[promoted]
            self.done["promotion"] = promoted + 1
            body = promotion(name, name.removeprefix("promote-"))
            self._call(c.create_namespaced_custom_object, "promotions", body)
            return
        choices = ["create agent"] * 3 + ["create gateway"] * 2
        if self.agents:
            choices += ["update agent"] * 3 + ["delete agent"]
        if self.gateways:
            choices += ["update gateway"] * 2 + ["delete gateway"]
        action = rng.choice(choices)
        self.done[action] = self.done.get(action, 0) + 1
        if action == "create agent":
            self.agents.append(f"a{n}")
            self._call(c.create_namespaced_custom_object, "agents", agent(f"a{n}", f"prompt {n}"))
        elif action == "update agent":
            name = rng.choice(self.agents)
            patch = {"spec": {"systemPrompt": f"prompt {n}"}}
            self._call(c.patch_namespaced_custom_object, "agents", name, patch)
        elif action == "delete agent":
            name = self.agents.pop(rng.randrange(len(self.agents)))
            self._call(c.delete_namespaced_custom_object, "agents", name)
        elif action == "create gateway":
            picked = rng.sample(self.agents, min(len(self.agents), rng.randint(1, 3)))
            body = gateway(f"g{n}", "dev", {"names": picked or ["nobody"]}, rng.randint(1, 2))
            self.gateways.append(f"g{n}")
            self._call(c.create_namespaced_custom_object, "gateways", body)
        elif action == "update gateway":
            name = rng.choice(self.gateways)
            picked = rng.sample(self.agents, min(len(self.agents), rng.randint(1, 3)))
            patch = {
                "spec": {"replicas": rng.randint(1, 2), "agents": {"names": picked or ["nobody"]}}
            }
            self._call(c.patch_namespaced_custom_object, "gateways", name, patch)
        else:
            name = self.gateways.pop(rng.randrange(len(self.gateways)))
            self._call(c.delete_namespaced_custom_object, "gateways", name)


class PhaseWatch(threading.Thread):
    """Records every phase each Promotion shows, from a watch that survives restarts."""

    def __init__(self, api_client: client.ApiClient, ns: str) -> None:
        super().__init__(daemon=True)
        self.api_client, self.ns = api_client, ns
        self.phases: dict[str, list[str]] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        custom = client.CustomObjectsApi(self.api_client)
        while not self.stopping.is_set():
            try:
                for event in watch.Watch().stream(
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.ns,
                    "promotions",
                    timeout_seconds=5,
                ):
                    obj = event["object"]
                    phase = (obj.get("status") or {}).get("phase")
                    seen = self.phases.setdefault(obj["metadata"]["name"], [])
                    if phase and (not seen or seen[-1] != phase):
                        seen.append(phase)
            except Exception:  # the apiserver restarts; watch again
                time.sleep(0.5)


def terminal_once(phases: dict[str, list[str]]) -> dict[str, list[str]]:
    """Promotions whose observed phases do not end in exactly one terminal phase."""
    bad = {}
    for name, seen in phases.items():
        ends = [p for p in seen if p in TERMINAL]
        if len(ends) != 1 or seen[-1] not in TERMINAL:
            bad[name] = seen
    return bad


def setup_promotion_stage(
    custom: client.CustomObjectsApi, ns: str, count: int, api_client: client.ApiClient
) -> None:
    selector = {"selector": {"matchLabels": {"tier": "promo"}}}
    for i in range(count):
        custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, "agents", agent(f"p{i}", f"promotable {i}", {"tier": "promo"})
        )
    for name, env in (("promo-dev", "dev"), ("promo-staging", "staging")):
        custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, "gateways", gateway(name, env, selector)
        )

    def all_have_r1() -> bool:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "agents")["items"]
        return sum((a.get("status") or {}).get("latestRevision") == 1 for a in items) == count

    eventually(all_have_r1, timeout=120, what="revision 1 of every promotable agent")


def wait_promotions_ended(
    custom: client.CustomObjectsApi, ns: str, expected: int
) -> dict[str, str]:
    def ended() -> dict[str, str] | None:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "promotions")["items"]
        phases = {p["metadata"]["name"]: (p.get("status") or {}).get("phase") for p in items}
        return phases if len(phases) == expected and set(phases.values()) <= TERMINAL else None

    return eventually(ended, timeout=180, what=f"{expected} Promotions ended")


def test_sigkill_at_random_points_of_a_burst_loses_nothing(
    crds: Path, api_client: client.ApiClient, own_namespace: str, tmp_path: Path, figures: Figures
) -> None:
    ns, custom = own_namespace, client.CustomObjectsApi(api_client)
    operations, kills, promos = pick(150, 500), pick(3, 8), pick(6, 20)
    seed = int(os.environ.get("KAIZEN_FAULT_SEED") or random.SystemRandom().randrange(10**6))
    print(f"burst seed {seed} (KAIZEN_FAULT_SEED={seed} replays the same operations)")
    runs = [0]

    def operator() -> LocalProcess:
        runs[0] += 1
        return start_operator(crds, ns, tmp_path / f"operator-{runs[0]}.log")[0]

    current = [operator()]
    setup_promotion_stage(custom, ns, promos, api_client)
    phases = PhaseWatch(api_client, ns)
    phases.start()
    burst = Burst(custom, ns, seed, promos)
    killer_rng = random.Random(seed + 1)  # noqa: S311 - replayable
    kill_at = sorted(killer_rng.sample(range(5, operations - 5), kills))
    started = time.monotonic()
    try:
        for i in range(operations):
            if kill_at and i == kill_at[0]:
                kill_at.pop(0)
                current[0].kill()  # SIGKILL: no clean-up, leases and half-done work stay
                current[0] = operator()
            burst.step(i / operations)
        burst_seconds = time.monotonic() - started
        converged = wait_converged(api_client, ns, timeout=300)
        ended = wait_promotions_ended(custom, ns, promos)
    finally:
        phases.stopping.set()
        current[0].stop()
    phases.join(10)
    bad = terminal_once({n: phases.phases.get(n, []) for n in ended})
    assert not bad, f"Promotions not ending in exactly one terminal phase: {bad}"
    assert set(ended.values()) == {"Succeeded"}, ended
    figures.record("operations in the burst", operations)
    figures.record("operator SIGKILLs", kills)
    figures.record("promotions ended exactly once", len(ended))
    figures.record("burst duration", round(burst_seconds, 1), "s")
    figures.record("converged after the burst in", round(converged, 1), "s")
    figures.record("operations by kind", json.dumps(burst.done, sort_keys=True))


# ---------------------------------------------------------------- apiserver + etcd restart


@local_control_plane_only
def test_kube_apiserver_and_etcd_restart_under_the_operator(
    tmp_path: Path, figures: Figures
) -> None:
    with private_control_plane(tmp_path) as kubeconfig:
        cluster.install_crds(kubeconfig, CRD_DIR)
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        custom = client.CustomObjectsApi(api_client)
        ns = "restart"
        client.CoreV1Api(api_client).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=ns))
        )
        proc, _ = start_operator(kubeconfig, ns, tmp_path / "operator.log")
        try:
            burst = Burst(custom, ns, seed=7, promos=0)
            operations = pick(60, 200)
            restarts = {}
            for i in range(operations):
                if i == operations // 3:
                    restarts["kill"] = json.loads(
                        private_cluster(tmp_path, "restart", "etcd", "kube-apiserver", "--kill")
                    )
                if i == 2 * operations // 3:
                    restarts["term"] = json.loads(
                        private_cluster(tmp_path, "restart", "etcd", "kube-apiserver")
                    )
                burst.step(i / operations)
            converged = wait_converged(api_client, ns, timeout=240)
            assert proc.proc.poll() is None, f"the operator exited:\n{proc.tail()}"
        finally:
            proc.stop()
    figures.record("apiserver+etcd restarts (SIGKILL, SIGTERM)", 2)
    figures.record("operations across the restarts", operations)
    figures.record("apiserver back after SIGKILL in", restarts["kill"]["kube-apiserver"], "s")
    figures.record("converged after the last operation in", round(converged, 1), "s")
