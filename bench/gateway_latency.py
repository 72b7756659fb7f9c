#!/usr/bin/env python3
"""Benchmark: throughput and added latency of kaizen-gateway next to LiteLLM's proxy,
both in front of the same local OpenAI-protocol stub, with the stub alone as the floor.

    python bench/gateway_latency.py [--seconds 5] [--concurrency 1 16 64] [--no-litellm]
                                    [--reference]

--reference adds two logic-free proxies in front of the same stub (bench/reference_proxy.py):
the gateway's libraries alone (bare ASGI on uvicorn + aiohttp), and a hand-written
httptools proxy, roughly Python's ceiling here; their share of the floor is what any
Python gateway could reach on this machine.

LiteLLM (PyPI `litellm[proxy]`) is installed into its own virtualenv under the cache
folder on first use, so its dependencies never touch the project's. Everything runs
on 127.0.0.1; each cell is a fixed duration of closed-loop clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "hack"), str(ROOT)]

from localcluster.versions import cache_root  # noqa: E402
from tests.support.processes import (  # noqa: E402
    LocalProcess,
    free_port,
    start,
    wait_http_ok,
    wait_port,
)

BODY = {"model": "helper", "messages": [{"role": "user", "content": "benchmark me"}]}
CORES = os.cpu_count() or 1


class Target(NamedTuple):
    url: str
    pid: int  # the process serving it (the stub for the floor)


class Cell(NamedTuple):
    """One target at one concurrency: throughput, latency, and CPU seconds per request
    of the load generator (this process), the stub and the target's own process."""

    rps: float
    p50: float
    p99: float
    errors: int
    cpu_client: float
    cpu_stub: float
    cpu_target: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def litellm_bin() -> Path:
    venv = cache_root() / "litellm-venv"
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


def start_references(tmp: Path, stub_port: int, procs: list[LocalProcess]) -> dict[str, Target]:
    """The logic-free reference proxies of bench/reference_proxy.py."""
    targets = {}
    for name, kind in (("ref asgi+aiohttp", "asgi-aiohttp"), ("ref httptools", "httptools")):
        port = free_port()
        proc = start(
            [
                sys.executable,
                str(ROOT / "bench" / "reference_proxy.py"),
                "--kind",
                kind,
                "--port",
                str(port),
                "--upstream-port",
                str(stub_port),
            ],
            tmp / f"{kind}.log",
        )
        procs.append(proc)
        wait_port(port, proc)
        targets[name] = Target(f"http://127.0.0.1:{port}/v1/chat/completions", proc.proc.pid)
    return targets


def start_targets(
    tmp: Path, with_litellm: bool, procs: list[LocalProcess], with_references: bool = False
) -> dict[str, Target]:
    """Start the stub, the gateway and LiteLLM; ``procs`` collects them for cleanup."""
    stub_port = free_port()
    env = {"PYTHONPATH": str(ROOT / "hack")}
    stub = start(
        [sys.executable, "-m", "upstream_stub.server", "--port", str(stub_port)],
        tmp / "stub.log",
        env=env,
    )
    procs.append(stub)
    stub_url = f"http://127.0.0.1:{stub_port}"
    wait_http_ok(f"{stub_url}/_control", stub)
    targets = {"stub (floor)": Target(f"{stub_url}/v1/chat/completions", stub.proc.pid)}

    bundle = {
        "gateway": "bench",
        "namespace": "bench",
        "environment": "dev",
        "agents": [
            {
                "name": "helper",
                "revision": 1,
                "hash": "bench",
                "spec": {
                    "model": {
                        "provider": "openai-compatible",
                        "name": "gpt-4o-mini",
                        "endpoint": f"{stub_url}/v1",
                        # as in production: the key comes from a mounted Secret
                        "credentialsSecretRef": {"name": "bench-openai", "key": "apiKey"},
                    }
                },
            }
        ],
    }
    (tmp / "bundle.json").write_text(json.dumps(bundle))
    (tmp / "secrets" / "bench-openai").mkdir(parents=True)
    (tmp / "secrets" / "bench-openai" / "apiKey").write_text("sk-bench")
    gw_port = free_port()
    gw = start(
        [
            "kaizen-gateway",
            "--bundle",
            str(tmp / "bundle.json"),
            "--secrets-dir",
            str(tmp / "secrets"),
            "--port",
            str(gw_port),
            "--log-level",
            "warning",
        ],
        tmp / "gateway.log",
    )
    procs.append(gw)
    wait_http_ok(f"http://127.0.0.1:{gw_port}/readyz", gw)
    targets["kaizen-gateway"] = Target(
        f"http://127.0.0.1:{gw_port}/v1/chat/completions", gw.proc.pid
    )
    if with_references:
        targets.update(start_references(tmp, stub_port, procs))

    if with_litellm:
        config = tmp / "litellm.yaml"
        config.write_text(
            "model_list:\n  - model_name: helper\n    litellm_params:\n"
            "      model: openai/gpt-4o-mini\n"
            f"      api_base: {stub_url}/v1\n      api_key: sk-bench\n"
            "litellm_settings:\n  telemetry: false\n  set_verbose: false\n"
        )
        ll_port = free_port()
        ll = start(
            [
                str(litellm_bin()),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(ll_port),
                "--num_workers",
                "1",
            ],
            tmp / "litellm.log",
            env={"LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": "sk-bench"},
        )
        procs.append(ll)
        wait_http_ok(f"http://127.0.0.1:{ll_port}/health/liveliness", ll, timeout=180)
        targets["litellm proxy"] = Target(
            f"http://127.0.0.1:{ll_port}/v1/chat/completions", ll.proc.pid
        )
    return targets


async def run_cell(target: Target, stub_pid: int, clients: int, seconds: float) -> Cell:
    """Closed-loop load on ``target``, with the CPU each process spent meanwhile."""
    url = target.url
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
    payload = json.dumps(BODY)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with session.post(url, data=payload, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
                    continue
            latencies.append((time.perf_counter() - t0) * 1000)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):  # warm-up
            async with session.post(url, data=payload, headers=headers) as resp:
                await resp.read()
        cpu = (time.process_time(), cpu_seconds(stub_pid), cpu_seconds(target.pid))
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
        used = (time.process_time(), cpu_seconds(stub_pid), cpu_seconds(target.pid))
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    n = max(1, len(latencies) + errors)
    client_cpu, stub_cpu, target_cpu = ((b - a) / n for a, b in zip(cpu, used, strict=True))
    if target.pid == stub_pid:  # the floor: the stub is the target
        target_cpu = 0.0
    return Cell(len(latencies) / elapsed, q[49], q[98], errors, client_cpu, stub_cpu, target_cpu)


def print_cpu_budget(
    results: dict[tuple[str, int], Cell], names: list[str], concurrency: list[int]
) -> None:
    """CPU per request of each process, against what two thirds of the floor leaves a
    proxy: every request passes through the load generator, the proxy and the stub on
    the same cores, so a proxy reaches 2/3 of the floor only if its CPU per request is
    at most cores / (2/3 x floor req/s) - client - stub."""
    print(
        f"\nCPU per request (us) on {CORES} cores; budget = what a proxy may spend for "
        "2/3 of the floor"
    )
    print(f"{'target':<16}{'clients':>8}{'client':>8}{'stub':>8}{'proxy':>8}{'budget':>8}")
    for clients in concurrency:
        floor = results[("stub (floor)", clients)]
        for name in names:
            cell = results[(name, clients)]
            budget = CORES / (2 / 3 * floor.rps) - cell.cpu_client - cell.cpu_stub
            print(
                f"{name:<16}{clients:>8}{cell.cpu_client * 1e6:>8.0f}{cell.cpu_stub * 1e6:>8.0f}"
                f"{cell.cpu_target * 1e6:>8.0f}{budget * 1e6:>8.0f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--reference", action="store_true", help="add the reference proxies")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kaizen-bench-"))
    procs: list[LocalProcess] = []
    try:
        targets = start_targets(tmp, not args.no_litellm, procs, args.reference)
        results: dict[tuple[str, int], Cell] = {}
        stub_pid = targets["stub (floor)"].pid
        for clients in args.concurrency:
            for name, target in targets.items():
                results[(name, clients)] = asyncio.run(
                    run_cell(target, stub_pid, clients, args.seconds)
                )
        print(
            f"{'target':<16}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'+p50 ms':>9}{'+p99 ms':>9}{'errors':>8}"
        )
        for clients in args.concurrency:
            floor = results[("stub (floor)", clients)]
            for name in targets:
                rps, p50, p99, errs = results[(name, clients)][:4]
                print(
                    f"{name:<16}{clients:>8}{rps:>10.0f}{p50:>9.2f}{p99:>9.2f}"
                    f"{p50 - floor[1]:>9.2f}{p99 - floor[2]:>9.2f}{errs:>8}"
                )
        for clients in args.concurrency:
            gw = results[("kaizen-gateway", clients)]
            floor = results[("stub (floor)", clients)]
            line = f"clients={clients}: kaizen-gateway throughput {gw[0] / floor[0]:.2f}x floor"
            if ("litellm proxy", clients) in results:
                ll = results[("litellm proxy", clients)]
                added_gw, added_ll = gw[1] - floor[1], ll[1] - floor[1]
                line += (
                    f", {gw[0] / ll[0]:.2f}x LiteLLM; added p50 {added_gw:.2f} ms"
                    f" vs LiteLLM {added_ll:.2f} ms"
                    f" (ratio {added_gw / added_ll:.2f})"
                    if added_ll > 0
                    else ""
                )
            print(line)
        for name in targets:
            if name.startswith("ref "):
                shares = ", ".join(
                    f"{results[(name, c)][0] / results[('stub (floor)', c)][0]:.2f}x"
                    for c in args.concurrency
                )
                print(f"{name} (no gateway logic): {shares} floor at clients={args.concurrency}")
        print_cpu_budget(results, list(targets), args.concurrency)
    finally:
        for proc in procs:
            proc.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
