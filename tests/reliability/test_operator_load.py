"""Load on the operator: thousands of Agents and hundreds of Gateways in one namespace
(full form: 5,000 and 500). Measured: time to converge from empty, then — after a
SIGKILL and 10% of the Agents changed while it was down — time to converge after the
restart, and the operator's peak resident memory through both."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.reliability.convergence import GROUP, VERSION, wait_converged
from tests.reliability.figures import Figures, full, pick
from tests.support.processes import LocalProcess, start_operator

AGENTS_PER_GATEWAY = 10
WRITERS = 8


class PeakRss(threading.Thread):
    """Samples a process's resident memory twice a second; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopping = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            kib = next(int(x.split()[1]) for x in text.splitlines() if x.startswith("VmRSS:"))
            self.peak = max(self.peak, kib / 1024)

    def stop(self) -> float:
        self.stopping.set()
        self.join(5)
        return self.peak


def agent(i: int, prompt: str = "") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Agent",
        "metadata": {"name": f"a{i}"},
        "spec": {
            "model": {"provider": "mock", "name": "echo"},
            "systemPrompt": prompt or f"agent {i}",
        },
    }


def gateway(g: int) -> dict[str, Any]:
    names = [f"a{i}" for i in range(g * AGENTS_PER_GATEWAY, (g + 1) * AGENTS_PER_GATEWAY)]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Gateway",
        "metadata": {"name": f"g{g}"},
        "spec": {"environment": "dev", "agents": {"names": names}},
    }


def test_thousands_of_agents_converge_from_empty_and_after_a_restart(
    crds: Path, api_client: client.ApiClient, own_namespace: str, tmp_path: Path, figures: Figures
) -> None:
    ns, custom = own_namespace, client.CustomObjectsApi(api_client)
    gateways = pick(30, 500)
    agents = gateways * AGENTS_PER_GATEWAY
    timeout = 3600 if full() else 600

    def create(body: dict[str, Any]) -> None:
        plural = "agents" if body["kind"] == "Agent" else "gateways"
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)

    def operator(run: int) -> tuple[LocalProcess, PeakRss]:
        proc, _ = start_operator(crds, ns, tmp_path / f"operator-{run}.log")
        sampler = PeakRss(proc.proc.pid)
        sampler.start()
        return proc, sampler

    proc, sampler = operator(1)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(WRITERS) as pool:
            list(pool.map(create, [*map(agent, range(agents)), *map(gateway, range(gateways))]))
        created = time.monotonic() - started
        wait_converged(api_client, ns, timeout=timeout)
        cold = time.monotonic() - started
        peak_cold = sampler.stop()

        proc.kill()  # SIGKILL, then change 10% of the Agents while nobody watches
        changed = range(0, agents, 10)
        with ThreadPoolExecutor(WRITERS) as pool:
            list(
                pool.map(
                    lambda i: custom.patch_namespaced_custom_object(
                        GROUP, VERSION, ns, "agents", f"a{i}", {"spec": {"systemPrompt": "v2"}}
                    ),
                    changed,
                )
            )
        proc, sampler = operator(2)
        restarted = time.monotonic()
        wait_converged(api_client, ns, timeout=timeout)
        warm = time.monotonic() - restarted
        peak_restart = sampler.stop()
        assert proc.proc.poll() is None, f"the operator died:\n{proc.tail(60)}"
    finally:
        sampler.stop()
        proc.stop()
    figures.record("agents / gateways", f"{agents} / {gateways}")
    figures.record("creates written in", round(created, 1), "s")
    figures.record("converged from empty in", round(cold, 1), "s")
    figures.record("operator peak RSS (from empty)", round(peak_cold), "MiB")
    figures.record("agents changed while the operator was down", len(changed))
    figures.record("converged after SIGKILL + restart in", round(warm, 1), "s")
    figures.record("operator peak RSS (after restart)", round(peak_restart), "MiB")
