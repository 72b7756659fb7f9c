#!/usr/bin/env python3
"""Benchmark: the time kaizen-gateway's agent loop adds per tool step, next to the same
loop written with pydantic-ai, both against the same model stub and tool server, with a
bare loop (aiohttp calling the stub and the tool, nothing else) as the floor.

    python bench/agent_loop.py [--seconds 4] [--clients 1 16] [--rounds 3]

Each request asks a question the scripted model answers after K tool steps (one model
call and one http tool call each, then a last model call). The time per step is the
slope between K=1 and K=5: (median latency at 5 - median at 1) / 4, which cancels
what is paid once per request (the client's own call to the gateway, the final model
call). The added time per step is that minus the floor's. The gateway also reports
its own time (x-kaizen-overhead-ms: the request's time not spent waiting for the model
or tools); its per-step figure is the same slope over that header.

Every cell is a closed loop of C concurrent clients in a process of its own (so the
load generator never shares a core's event loop with what it measures), for a fixed
duration; the rounds interleave the cells so that a noisy neighbour hurts all alike.
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
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "hack"), str(ROOT)]

from tests.support.processes import LocalProcess, free_port, start, wait_http_ok  # noqa: E402

STEPS = (1, 5)
KINDS = ("floor", "kaizen-gateway", "pydantic-ai")
QUESTION = "What is the weather in Paris?"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The forecast of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def model_name(steps: int) -> str:
    return f"bench-{steps}"


# ---------------------------------------------------------------- one request, three ways


async def floor_request(session: aiohttp.ClientSession, cfg: dict[str, Any], steps: int) -> float:
    """The loop with nothing in it: call the model, call the tool, until it answers
    (orjson, as the gateway uses: the floor must not pay what the gateway does not)."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    while True:
        body = {"model": model_name(steps), "messages": messages, "tools": [WEATHER_TOOL]}
        async with session.post(
            f"{cfg['stub']}/v1/chat/completions",
            data=orjson.dumps(body),
            headers={"content-type": "application/json"},
        ) as resp:
            answer = orjson.loads(await resp.read())
        message = answer["choices"][0]["message"]
        if not message.get("tool_calls"):
            return 0.0
        messages.append(message)
        for call in message["tool_calls"]:
            args = json.loads(call["function"]["arguments"])
            async with session.get(f"{cfg['tools']}/weather", params=args) as resp:
                text = await resp.text()
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": text})


async def gateway_request(session: aiohttp.ClientSession, cfg: dict[str, Any], steps: int) -> float:
    async with session.post(
        f"{cfg['gateway']}/v1/chat/completions",
        json={"model": model_name(steps), "messages": [{"role": "user", "content": QUESTION}]},
    ) as resp:
        body = await resp.read()
        if resp.status != 200 or resp.headers.get("x-kaizen-steps") != str(steps + 1):
            raise RuntimeError(f"unexpected answer {resp.status}: {body[:300]!r}")
        return float(resp.headers["x-kaizen-overhead-ms"])


def pydantic_agents(cfg: dict[str, Any], session: aiohttp.ClientSession) -> dict[int, Any]:
    """The same agent in pydantic-ai: an OpenAI-protocol model and one tool that calls
    the tool server (with aiohttp, as the gateway does)."""
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=f"{cfg['stub']}/v1", api_key="sk-bench")
    agents = {}
    for steps in STEPS:
        agent: Any = Agent(OpenAIChatModel(model_name(steps), provider=provider))

        @agent.tool_plain
        async def weather(city: str) -> str:
            """The forecast of a city."""
            async with session.get(f"{cfg['tools']}/weather", params={"city": city}) as resp:
                return await resp.text()

        agents[steps] = agent
    return agents


# ---------------------------------------------------------------- a cell: one process


async def worker(kind: str, steps: int, clients: int, seconds: float, cfg: dict[str, Any]) -> None:
    connector = aiohttp.TCPConnector(limit=clients * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        agents = pydantic_agents(cfg, session) if kind == "pydantic-ai" else {}

        async def one() -> float:
            if kind == "floor":
                return await floor_request(session, cfg, steps)
            if kind == "kaizen-gateway":
                return await gateway_request(session, cfg, steps)
            result = await agents[steps].run(QUESTION)
            if "sunny" not in str(result.output):
                raise RuntimeError(f"unexpected answer {result.output!r}")
            return 0.0

        for _ in range(3):  # warm-up: connections, imports, caches
            await one()
        latencies: list[float] = []
        overheads: list[float] = []
        deadline = time.perf_counter() + seconds
        cpu = time.process_time()

        async def client() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                overhead = await one()
                latencies.append((time.perf_counter() - t0) * 1000)
                overheads.append(overhead)

        await asyncio.gather(*(client() for _ in range(clients)))
        cpu_ms = (time.process_time() - cpu) * 1000 / max(len(latencies), 1)
    print(json.dumps({"latencies": latencies, "overheads": overheads, "cpu_ms": cpu_ms}))


def run_cell(kind: str, steps: int, clients: int, seconds: float, cfg: dict[str, Any]) -> Any:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            json.dumps(
                {"kind": kind, "steps": steps, "clients": clients, "seconds": seconds, **cfg}
            ),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- set-up and report


def start_servers(tmp: Path, procs: list[LocalProcess]) -> dict[str, str]:
    env = {"PYTHONPATH": str(ROOT / "hack")}
    ports = {name: free_port() for name in ("stub", "tools", "gateway")}
    for name, module in (("stub", "upstream_stub.server"), ("tools", "upstream_stub.tools")):
        procs.append(
            start(
                [sys.executable, "-m", module, "--port", str(ports[name])],
                tmp / f"{name}.log",
                env=env,
            )
        )
        wait_http_ok(
            f"http://127.0.0.1:{ports[name]}/{'_control' if name == 'stub' else '_requests'}",
            procs[-1],
        )
    cfg = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    script = {
        model_name(steps): {
            "always": {
                "until": steps,
                "tool_calls": [{"name": "weather", "arguments": {"city": "Paris"}}],
                "content": "It is {tools}",
            }
        }
        for steps in STEPS
    }
    aiohttp_post(f"{cfg['stub']}/_control", {"scripts": script})
    tool = {
        "name": "weather",
        "type": "http",
        "description": "The forecast of a city",
        "parameters": WEATHER_TOOL["function"]["parameters"],
        "http": {"url": f"{cfg['tools']}/weather", "method": "GET"},
    }
    bundle = {
        "gateway": "bench",
        "namespace": "bench",
        "environment": "dev",
        "agents": [
            {
                "name": model_name(steps),
                "revision": 1,
                "hash": f"bench{steps}",
                "spec": {
                    "model": {
                        "provider": "openai-compatible",
                        "name": model_name(steps),
                        "endpoint": f"{cfg['stub']}/v1",
                        "credentialsSecretRef": {"name": "bench-openai", "key": "apiKey"},
                    },
                    "tools": [tool],
                },
            }
            for steps in STEPS
        ],
    }
    (tmp / "bundle.json").write_text(json.dumps(bundle))
    (tmp / "secrets" / "bench-openai").mkdir(parents=True)
    (tmp / "secrets" / "bench-openai" / "apiKey").write_text("sk-bench")
    gw = start(
        [
            "kaizen-gateway",
            "--bundle",
            str(tmp / "bundle.json"),
            "--secrets-dir",
            str(tmp / "secrets"),
            "--port",
            str(ports["gateway"]),
            "--log-level",
            "warning",
        ],
        tmp / "gateway.log",
    )
    procs.append(gw)
    wait_http_ok(f"{cfg['gateway']}/readyz", gw)
    return cfg


def aiohttp_post(url: str, body: dict[str, Any]) -> None:
    async def post() -> None:
        async with aiohttp.ClientSession() as s, s.post(url, json=body) as resp:
            resp.raise_for_status()

    asyncio.run(post())


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_step(cells: dict[int, list[float]]) -> float:
    """The slope between K=1 and K=5 of the medians (ms per step)."""
    return (statistics.median(cells[5]) - statistics.median(cells[1])) / (STEPS[1] - STEPS[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        w = json.loads(args.worker)
        asyncio.run(worker(w.pop("kind"), w.pop("steps"), w.pop("clients"), w.pop("seconds"), w))
        return

    procs: list[LocalProcess] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cfg = start_servers(Path(tmp), procs)
            # (kind, clients) -> steps -> latencies; gateway overheads the same way
            lat: dict[tuple[str, int], dict[int, list[float]]] = {}
            own: dict[int, dict[int, list[float]]] = {}
            # (kind, clients) -> steps -> CPU ms per request of the process running the loop
            cpu: dict[tuple[str, int], dict[int, list[float]]] = {}
            gateway_pid = procs[-1].proc.pid
            for r in range(args.rounds):
                for clients in args.clients:
                    for kind in KINDS:
                        for steps in STEPS:
                            before = cpu_seconds(gateway_pid)
                            cell = run_cell(kind, steps, clients, args.seconds, cfg)
                            used = cell["cpu_ms"]
                            if kind == "kaizen-gateway":  # the gateway's, not its client's
                                served = len(cell["latencies"]) + 3  # with the warm-up
                                used = (cpu_seconds(gateway_pid) - before) * 1000 / served
                            cpu.setdefault((kind, clients), {}).setdefault(steps, []).append(used)
                            lat.setdefault((kind, clients), {}).setdefault(steps, []).extend(
                                cell["latencies"]
                            )
                            if kind == "kaizen-gateway":
                                own.setdefault(clients, {}).setdefault(steps, []).extend(
                                    cell["overheads"]
                                )
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            for proc in procs:
                proc.stop()

    print(
        f"\nAgent loop, ms per tool step (slope K=1..5, medians; {args.rounds} rounds x "
        f"{args.seconds:g}s per cell; one model call + one http tool call per step)\n"
    )
    header = (
        f"{'clients':>7}  {'floor':>7}  {'gateway':>8}  {'pydantic-ai':>11}  "
        f"{'gw added':>8}  {'pai added':>9}  {'ratio':>6}  {'gw own p50':>10}  {'gw own p90':>10}"
    )
    print(header)
    print("-" * len(header))
    for clients in args.clients:
        floor = per_step(lat[("floor", clients)])
        gw = per_step(lat[("kaizen-gateway", clients)])
        pai = per_step(lat[("pydantic-ai", clients)])
        gw_added, pai_added = gw - floor, pai - floor
        mine = own[clients]
        own_p50 = per_step(mine)
        own_p90 = (
            statistics.quantiles(mine[5], n=10)[-1] - statistics.quantiles(mine[1], n=10)[-1]
        ) / (STEPS[1] - STEPS[0])
        ratio = gw_added / pai_added if pai_added > 0 else float("nan")
        print(
            f"{clients:>7}  {floor:>7.3f}  {gw:>8.3f}  {pai:>11.3f}  {gw_added:>8.3f}  "
            f"{pai_added:>9.3f}  {ratio:>6.2f}  {own_p50:>10.3f}  {own_p90:>10.3f}"
        )
    print(
        "\nCPU ms per tool step of the process running the loop (slope K=1..5; contention "
        "on a shared machine moves latency, much less CPU time)\n"
    )
    header = f"{'clients':>7}  {'floor':>7}  {'gateway':>8}  {'pydantic-ai':>11}  {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for clients in args.clients:
        floor, gw, pai = (per_step(cpu[(kind, clients)]) for kind in KINDS)
        ratio = (gw - floor) / (pai - floor) if pai > floor else float("nan")
        print(f"{clients:>7}  {floor:>7.3f}  {gw:>8.3f}  {pai:>11.3f}  {ratio:>6.2f}")
    print(f"\nload average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    counts = {f"{k}@{c}": sum(len(v) for v in s.values()) for (k, c), s in lat.items()}
    print(f"\nrequests measured: {counts}")
    print(
        "ratio = gateway's added time per step / pydantic-ai's (target <= 0.5); "
        "gw own = the gateway's x-kaizen-overhead-ms per step (target p50 < 1 ms at 1 client)"
    )


if __name__ == "__main__":
    main()
