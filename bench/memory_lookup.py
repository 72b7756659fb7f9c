#!/usr/bin/env python3
"""Benchmark: what conversation memory adds to a request, against the same request
without memory in the same run.

    python bench/memory_lookup.py [--requests 2000] [--turns 20]

One kaizen-gateway process with a local redis-server (hack/localredis) serves an agent
on the ``mock`` provider (no upstream network, so the gateway's own work dominates)
with ``memory.type: conversation``. One client sends requests alternately with and
without ``x-kaizen-conversation-id`` (interleaved, so drift of a shared machine hits
both alike); the conversation is first filled to ``--turns`` turns, so each lookup reads
a full history. Reported per kind, p50 and p99 of:

- the gateway's own time, from its ``x-kaizen-overhead-ms`` header (excludes the
  model call): the with-memory minus without-memory p50 is the lookup's added p50
  (one Redis round trip to recall, one to remember, and the longer prompt);
- the client's round trip.

Then the same memory code in this process, without HTTP, against the same Redis: p50 of
one recall (the lookup: one LRANGE of the history), one remember (one pipelined write),
and a bare Redis PING as the floor of any round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "hack"), str(ROOT)]

from kaizen_api.v1alpha1.bundle import BundledAgent  # noqa: E402
from kaizen_gateway.memory import ConversationMemory  # noqa: E402
from kaizen_gateway.redislink import RedisLink  # noqa: E402
from localredis import server as localredis  # noqa: E402
from tests.support.processes import free_port, start, wait_http_ok  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, requests: int, turns: int) -> dict[str, dict[str, list[float]]]:
    conversation = uuid.uuid4().hex
    body = {"model": "mem", "messages": [{"role": "user", "content": "how are we doing?"}]}
    found: dict[str, dict[str, list[float]]] = {
        kind: {"overhead": [], "round trip": []} for kind in ("without memory", "with memory")
    }
    async with aiohttp.ClientSession() as http:

        async def one(with_memory: bool) -> tuple[float, float]:
            headers = {"x-kaizen-conversation-id": conversation} if with_memory else {}
            t0 = time.perf_counter()
            async with http.post(url, json=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"gateway answered {resp.status}: {await resp.text()}")
                if with_memory and resp.headers.get("x-kaizen-memory") != "used":
                    raise RuntimeError("memory was not used: is Redis up?")
                overhead = float(resp.headers["x-kaizen-overhead-ms"])
            return overhead, (time.perf_counter() - t0) * 1000

        for _ in range(turns + 50):  # fill the history, warm up both paths
            await one(True)
            await one(False)
        for i in range(requests):
            with_memory = i % 2 == 1
            overhead, round_trip = await one(with_memory)
            kind = found["with memory" if with_memory else "without memory"]
            kind["overhead"].append(overhead)
            kind["round trip"].append(round_trip)
    return found


async def in_process(redis_url: str, bundle: dict[str, Any], samples: int) -> dict[str, float]:
    """p50 (ms) of recall, remember and PING, called directly."""
    link = RedisLink(redis_url)
    memory = ConversationMemory(link)
    agent = BundledAgent.model_validate(bundle["agents"][0])
    conversation = uuid.uuid4().hex
    turn = [{"role": "user", "content": "how are we doing?"}]
    answer = {"role": "assistant", "content": "[mock:echo] how are we doing?"}

    async def no_summary(_: list[dict[str, Any]]) -> str:
        return ""

    async def remember() -> None:
        recall = await memory.recall("bench/bench", agent, "anonymous", conversation)
        await memory.remember(recall, turn, answer, no_summary)

    for _ in range(100):  # fill the history and warm up
        await remember()
    results: dict[str, list[float]] = {"recall (lookup)": [], "remember": [], "redis PING": []}
    for _ in range(samples):
        t0 = time.perf_counter()
        recall = await memory.recall("bench/bench", agent, "anonymous", conversation)
        t1 = time.perf_counter()
        await memory.remember(recall, turn, answer, no_summary)
        t2 = time.perf_counter()
        await link.call(lambda client: client.ping())
        t3 = time.perf_counter()
        results["recall (lookup)"].append((t1 - t0) * 1000)
        results["remember"].append((t2 - t1) * 1000)
        results["redis PING"].append((t3 - t2) * 1000)
    await link.close()
    return {name: statistics.median(values) for name, values in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kaizen-bench-memory-"))
    redis_root = localredis.private_root(f"bench-{uuid.uuid4().hex[:6]}")
    redis_url = localredis.up(redis_root)
    bundle = {
        "gateway": "bench",
        "namespace": "bench",
        "environment": "dev",
        "agents": [
            {
                "name": "mem",
                "revision": 1,
                "hash": "bench",
                "spec": {
                    "model": {"provider": "mock", "name": "echo"},
                    "systemPrompt": "You help.",
                    "context": {"memory": {"type": "conversation", "maxTurns": args.turns}},
                },
            }
        ],
    }
    (tmp / "bundle.json").write_text(json.dumps(bundle))
    port = free_port()
    gateway = start(
        ["kaizen-gateway", "--bundle", str(tmp / "bundle.json"), "--port", str(port)],
        tmp / "gateway.log",
        env={"KAIZEN_REDIS_URL": redis_url},
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", gateway)
        found = asyncio.run(
            measure(f"http://127.0.0.1:{port}/v1/chat/completions", args.requests, args.turns)
        )
        direct = asyncio.run(in_process(redis_url, bundle, args.requests))
    finally:
        gateway.stop()
        localredis.down(redis_root)
    print(
        f"memory lookup, {args.requests} requests (half each), history of {args.turns} turns, "
        "1 client, mock provider"
    )
    print(f"{'':16} {'gateway p50':>12} {'gateway p99':>12} {'round trip p50':>15}")
    for kind, series in found.items():
        print(
            f"{kind:16} {statistics.median(series['overhead']):10.3f}ms "
            f"{percentile(series['overhead'], 0.99):10.3f}ms "
            f"{statistics.median(series['round trip']):13.3f}ms"
        )
    added = statistics.median(found["with memory"]["overhead"]) - statistics.median(
        found["without memory"]["overhead"]
    )
    added_rt = statistics.median(found["with memory"]["round trip"]) - statistics.median(
        found["without memory"]["round trip"]
    )
    print(f"added by memory: {added:.3f} ms p50 in the gateway, {added_rt:.3f} ms p50 round trip")
    print("in process, same Redis, p50: " + ", ".join(f"{k} {v:.3f}ms" for k, v in direct.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
