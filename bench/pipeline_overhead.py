#!/usr/bin/env python3
"""Benchmark: the time kaizen-gateway's pipeline engine adds per step beyond the agents'
own model calls, next to the same pipelines written with LangGraph, both against the
same model stub, with a bare model call (aiohttp to the stub, nothing else) as the floor.

    python bench/pipeline_overhead.py [--seconds 2] [--clients 1 16] [--rounds 1] [--quick]

Sequential: pipelines of 1 and 5 steps (each step one agent, one model call); the time
per step is the slope (median at 5 - median at 1) / 4, which cancels what is paid once
per request (the client's call to the gateway); the added time per step is that minus
the floor (a bare model call). Parallel: fan-outs of 1 and 8 steps; the slope
(median at 8 - median at 1) / 7 is what each extra concurrent step costs. LangGraph's
pipelines are a StateGraph of nodes that each make the same bare model call (the
cheapest agent LangGraph could have), run in the client's process.

Fan-out: a Parallel pipeline of 8 agents whose model answers after a fixed delay must
finish within 1.2x its slowest step (the step latency the gateway reports).

Every cell is a closed loop of C concurrent clients in a process of its own, for a fixed
duration; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "hack"), str(ROOT)]

from tests.support.processes import LocalProcess, free_port, start, wait_http_ok  # noqa: E402

SEQ = (1, 5)
PAR = (1, 8)
FAN_OUT = 8
FAN_OUT_DELAY = 0.5  # seconds each fan-out agent's model takes
CASES = [("seq", n) for n in SEQ] + [("par", n) for n in PAR]
QUESTION = "Summarise the report."


def pipeline_name(shape: str, steps: int) -> str:
    return f"{shape}-{steps}"


# ---------------------------------------------------------------- one request, three ways


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


async def model_call(session: aiohttp.ClientSession, stub: str, model: str, text: str) -> str:
    """The bare model call: what every step costs at least."""
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    async with session.post(
        f"{stub}/v1/chat/completions",
        data=orjson.dumps(body),
        headers={"content-type": "application/json"},
    ) as resp:
        answer = orjson.loads(await resp.read())
    return str(answer["choices"][0]["message"]["content"])


def agents_time(shape: str, times: list[float]) -> float:
    """The agents' own time in a run (ms): the sum of the steps (Sequential), or the
    slowest (Parallel: the steps overlap)."""
    return sum(times) if shape == "seq" else max(times)


async def gateway_request(
    session: aiohttp.ClientSession, cfg: dict[str, Any], shape: str, steps: int
) -> float:
    """One run; the agents' own time, from the step latencies the gateway reports."""
    async with session.post(
        f"{cfg['gateway']}/pipelines/{pipeline_name(shape, steps)}/invoke",
        json={"input": QUESTION},
    ) as resp:
        body = await resp.read()
        if resp.status != 200 or len(orjson.loads(body)["steps"]) != steps:
            raise RuntimeError(f"unexpected answer {resp.status}: {body[:300]!r}")
    return agents_time(shape, [s["latencyMs"] for s in orjson.loads(body)["steps"]])


class State(TypedDict):
    text: str
    outputs: Annotated[list[str], operator.add]
    times: Annotated[list[float], operator.add]  # each node's own time (ms)


def langgraph_pipelines(session: aiohttp.ClientSession, stub: str) -> dict[tuple[str, int], Any]:
    """The same pipelines in LangGraph: a chain of nodes, and a fan-out to nodes whose
    outputs a reducer gathers; each node makes the bare model call."""
    from langgraph.graph import END, START, StateGraph

    def node(i: int) -> Any:
        async def call(state: State) -> dict[str, Any]:
            t0 = time.perf_counter()
            text = await model_call(session, stub, f"agent-{i}-model", state["text"])
            return {"text": text, "outputs": [text], "times": [ms_since(t0)]}

        return call

    def fan_node(i: int) -> Any:
        async def call(state: State) -> dict[str, Any]:
            t0 = time.perf_counter()
            text = await model_call(session, stub, f"agent-{i}-model", QUESTION)
            return {"outputs": [text], "times": [ms_since(t0)]}

        return call

    graphs: dict[tuple[str, int], Any] = {}
    for steps in SEQ:
        graph = StateGraph(State)
        for i in range(steps):
            graph.add_node(f"s{i}", node(i))
            graph.add_edge(START if i == 0 else f"s{i - 1}", f"s{i}")
        graph.add_edge(f"s{steps - 1}", END)
        graphs[("seq", steps)] = graph.compile()
    for steps in PAR:
        graph = StateGraph(State)
        for i in range(steps):
            graph.add_node(f"p{i}", fan_node(i))
            graph.add_edge(START, f"p{i}")
            graph.add_edge(f"p{i}", END)
        graphs[("par", steps)] = graph.compile()
    return graphs


# ---------------------------------------------------------------- a cell: one process


async def worker(
    kind: str, case: list[Any], clients: int, seconds: float, cfg: dict[str, Any]
) -> None:
    shape, steps = case
    connector = aiohttp.TCPConnector(limit=clients * 16)
    async with aiohttp.ClientSession(connector=connector) as session:
        graphs = langgraph_pipelines(session, cfg["stub"]) if kind == "langgraph" else {}

        async def one() -> float:
            """One request; the agents' own time in it (ms)."""
            if kind == "floor":
                t0 = time.perf_counter()
                await model_call(session, cfg["stub"], "agent-0-model", QUESTION)
                return ms_since(t0)
            if kind == "kaizen-gateway":
                return await gateway_request(session, cfg, shape, steps)
            state = await graphs[(shape, steps)].ainvoke(
                {"text": QUESTION, "outputs": [], "times": []}
            )
            if len(state["outputs"]) != steps:
                raise RuntimeError(f"unexpected state {state!r}")
            return agents_time(shape, state["times"])

        for _ in range(3):  # warm-up: connections, imports, caches
            await one()
        latencies: list[float] = []
        orchestration: list[float] = []  # each request's time beyond its agents' own
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                own = await one()
                latencies.append(ms_since(t0))
                orchestration.append(latencies[-1] - own)

        await asyncio.gather(*(client() for _ in range(clients)))
    print(json.dumps({"latencies": latencies, "orchestration": orchestration}))


def run_cell(
    kind: str, case: tuple[str, int], clients: int, seconds: float, cfg: dict[str, Any]
) -> dict[str, list[float]]:
    spec = {"kind": kind, "case": case, "clients": clients, "seconds": seconds, **cfg}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
    )
    cell: dict[str, list[float]] = json.loads(out.stdout.strip().splitlines()[-1])
    return cell


async def fan_out(cfg: dict[str, Any], runs: int) -> tuple[float, float, float]:
    """(median wall ms of the fan-out pipeline, median of its slowest step's latency, the
    same fan-out's median wall ms in LangGraph)."""
    walls, slowest, lg = [], [], []
    async with aiohttp.ClientSession() as session:
        from langgraph.graph import END, START, StateGraph

        graph = StateGraph(State)
        for i in range(FAN_OUT):

            async def call(state: State, i: int = i) -> dict[str, Any]:
                text = await model_call(session, cfg["stub"], f"slow-{i}-model", QUESTION)
                return {"outputs": [text]}

            graph.add_node(f"p{i}", call)
            graph.add_edge(START, f"p{i}")
            graph.add_edge(f"p{i}", END)
        compiled = graph.compile()
        for _ in range(runs):
            t0 = time.perf_counter()
            async with session.post(
                f"{cfg['gateway']}/pipelines/fan-out/invoke", json={"input": QUESTION}
            ) as resp:
                body = orjson.loads(await resp.read())
            walls.append((time.perf_counter() - t0) * 1000)
            slowest.append(max(s["latencyMs"] for s in body["steps"]))
            t0 = time.perf_counter()
            await compiled.ainvoke({"text": QUESTION, "outputs": [], "times": []})
            lg.append((time.perf_counter() - t0) * 1000)
    return statistics.median(walls), statistics.median(slowest), statistics.median(lg)


# ---------------------------------------------------------------- set-up and report


def agent(name: str, model: str, stub: str) -> dict[str, Any]:
    return {
        "name": name,
        "revision": 1,
        "hash": name,
        "spec": {
            "model": {"provider": "openai-compatible", "name": model, "endpoint": f"{stub}/v1"}
        },
    }


def pipeline(name: str, pattern: str, agents: list[str]) -> dict[str, Any]:
    steps = [{"name": a, "agentRef": {"name": a}} for a in agents]
    return {"name": name, "revision": 1, "hash": name, "spec": {"pattern": pattern, "steps": steps}}


def start_servers(tmp: Path, procs: list[LocalProcess]) -> dict[str, str]:
    ports = {name: free_port() for name in ("stub", "gateway")}
    procs.append(
        start(
            [sys.executable, "-m", "upstream_stub.server", "--port", str(ports["stub"])],
            tmp / "stub.log",
            env={"PYTHONPATH": str(ROOT / "hack")},
        )
    )
    cfg = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    wait_http_ok(f"{cfg['stub']}/_control", procs[-1])
    scripts: dict[str, Any] = {f"agent-{i}-model": {"always": "done"} for i in range(FAN_OUT)}
    scripts.update(
        {
            f"slow-{i}-model": {"always": {"content": "done", "delay": FAN_OUT_DELAY}}
            for i in range(FAN_OUT)
        }
    )
    asyncio.run(post(f"{cfg['stub']}/_control", {"scripts": scripts}))
    fast = [f"agent-{i}" for i in range(FAN_OUT)]
    slow = [f"slow-{i}" for i in range(FAN_OUT)]
    bundle = {
        "gateway": "bench",
        "namespace": "bench",
        "environment": "dev",
        "agents": [agent(a, f"{a}-model", cfg["stub"]) for a in fast + slow],
        "pipelines": [
            *(pipeline(pipeline_name("seq", n), "Sequential", fast[:n]) for n in SEQ),
            *(pipeline(pipeline_name("par", n), "Parallel", fast[:n]) for n in PAR),
            pipeline("fan-out", "Parallel", slow),
        ],
    }
    (tmp / "bundle.json").write_text(json.dumps(bundle))
    gw = start(
        [
            "kaizen-gateway",
            "--bundle",
            str(tmp / "bundle.json"),
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


async def post(url: str, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as resp:
        resp.raise_for_status()


def slope(cells: dict[int, list[float]], low: int, high: int) -> float:
    return (statistics.median(cells[high]) - statistics.median(cells[low])) / (high - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1s cells, 3 fan-out runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        w = json.loads(args.worker)
        asyncio.run(worker(w.pop("kind"), w.pop("case"), w.pop("clients"), w.pop("seconds"), w))
        return
    seconds = 1.0 if args.quick else args.seconds

    procs: list[LocalProcess] = []
    lat: dict[tuple[str, int], dict[tuple[str, int], list[float]]] = {}
    orch: dict[tuple[str, int], dict[tuple[str, int], list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cfg = start_servers(Path(tmp), procs)
            for r in range(args.rounds):
                for clients in args.clients:
                    cells = [("floor", ("seq", 1))] + [
                        (kind, case) for case in CASES for kind in ("kaizen-gateway", "langgraph")
                    ]
                    for kind, case in cells:
                        found = run_cell(kind, case, clients, seconds, cfg)
                        lat.setdefault((kind, clients), {}).setdefault(case, []).extend(
                            found["latencies"]
                        )
                        orch.setdefault((kind, clients), {}).setdefault(case, []).extend(
                            found["orchestration"]
                        )
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
            wall, slowest, lg_wall = asyncio.run(fan_out(cfg, 3 if args.quick else 7))
        finally:
            for proc in procs:
                proc.stop()

    print(
        f"\nPipeline orchestration, ms per step beyond the agents' own time (medians; "
        f"{args.rounds} round(s) x {seconds:g}s per cell)\n"
    )
    header = f"{'clients':>7}  {'pattern':>10}  {'gateway':>8}  {'langgraph':>9}  {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for clients in args.clients:
        for shape, label, sizes in (("seq", "Sequential", SEQ), ("par", "Parallel", PAR)):
            gw = slope({n: orch[("kaizen-gateway", clients)][(shape, n)] for n in sizes}, *sizes)
            lg = slope({n: orch[("langgraph", clients)][(shape, n)] for n in sizes}, *sizes)
            ratio = gw / lg if lg > 0 else float("nan")
            print(f"{clients:>7}  {label:>10}  {gw:>8.3f}  {lg:>9.3f}  {ratio:>6.2f}")
    print(
        "\nA run's orchestration time = its latency minus its agents' own time (the step "
        "latencies the gateway reports, or each LangGraph node's own time; summed for "
        "Sequential, the slowest for Parallel); per step = the slope over 1..5 (Sequential) "
        "or 1..8 (Parallel) steps, which cancels the client's one call to the gateway. "
        "ratio = gateway / LangGraph (target <= 0.5)."
    )
    print(
        f"\nWhole cost of a step beyond a bare model call, ms (our steps run the full agent "
        f"loop; LangGraph's nodes are a bare call; medians; "
        f"{args.rounds} round(s) x {seconds:g}s per cell)\n"
    )
    header = (
        f"{'clients':>7}  {'pattern':>10}  {'floor':>7}  {'gateway':>8}  {'langgraph':>9}  "
        f"{'gw added':>8}  {'lg added':>8}  {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for clients in args.clients:
        floor = statistics.median(lat[("floor", clients)][("seq", 1)])
        gw_cells = {n: lat[("kaizen-gateway", clients)][("seq", n)] for n in SEQ}
        lg_cells = {n: lat[("langgraph", clients)][("seq", n)] for n in SEQ}
        gw, lg = slope(gw_cells, *SEQ), slope(lg_cells, *SEQ)
        gw_added, lg_added = gw - floor, lg - floor
        ratio = gw_added / lg_added if lg_added > 0 else float("nan")
        print(
            f"{clients:>7}  {'Sequential':>10}  {floor:>7.3f}  {gw:>8.3f}  {lg:>9.3f}  "
            f"{gw_added:>8.3f}  {lg_added:>8.3f}  {ratio:>6.2f}"
        )
        gw_cells = {n: lat[("kaizen-gateway", clients)][("par", n)] for n in PAR}
        lg_cells = {n: lat[("langgraph", clients)][("par", n)] for n in PAR}
        gw, lg = slope(gw_cells, *PAR), slope(lg_cells, *PAR)
        ratio = gw / lg if lg > 0 else float("nan")
        print(
            f"{clients:>7}  {'Parallel':>10}  {'-':>7}  {gw:>8.3f}  {lg:>9.3f}  "
            f"{gw:>8.3f}  {lg:>8.3f}  {ratio:>6.2f}"
        )
    print(
        "\nSequential: slope over 1..5 steps minus the floor (a bare model call); Parallel: "
        "slope over 1..8 concurrent steps (each extra step's cost). ratio = gateway / "
        "LangGraph (target <= 0.5)."
    )
    print(
        f"\nFan-out of {FAN_OUT} agents, model delay {FAN_OUT_DELAY * 1000:.0f} ms: pipeline "
        f"{wall:.1f} ms, slowest step {slowest:.1f} ms, ratio {wall / slowest:.3f} "
        f"(target <= 1.2); LangGraph's same fan-out {lg_wall:.1f} ms"
    )
    print(f"\nload average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    counts = {f"{k}@{c}": sum(len(v) for v in s.values()) for (k, c), s in lat.items()}
    print(f"requests measured: {counts}")


if __name__ == "__main__":
    main()
