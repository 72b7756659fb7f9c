"""Gateway soak: a real `kaizen-gateway` process (the operator's rendered command and
bundle) under steady concurrent load for a bounded time, streaming and not, through
the mock provider and the local OpenAI-protocol stub: no failed request and no memory
growth once warm."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.e2e.test_gateway import run_gateway
from tests.reliability.figures import Figures, pick

CLIENTS = 16
# Once warm, resident memory may move by allocator noise, not grow with requests.
GROWTH_LIMIT_MIB = 8.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def soak(url: str, pid: int, seconds: float) -> tuple[int, list[str], list[float]]:
    bodies = [
        {"model": "echo", "messages": [{"role": "user", "content": "soak"}]},
        {"model": "helper", "messages": [{"role": "user", "content": "soak"}]},
        {"model": "helper", "stream": True, "messages": [{"role": "user", "content": "soak"}]},
    ]
    done, failures, samples = 0, [], []
    deadline = time.monotonic() + seconds

    async def one_client(http: httpx.AsyncClient, offset: int) -> None:
        nonlocal done
        i = offset
        while time.monotonic() < deadline:
            body = bodies[i % len(bodies)]
            i += 1
            resp = await http.post("/v1/chat/completions", json=body)
            text = resp.text
            if resp.status_code != 200 or (body.get("stream") and "[DONE]" not in text):
                failures.append(f"{resp.status_code} {text[:200]}")
            done += 1

    async def sampler() -> None:
        while time.monotonic() < deadline:
            samples.append(rss_mib(pid))
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        await asyncio.gather(sampler(), *(one_client(http, i) for i in range(CLIENTS)))
    return done, failures, samples


def test_gateway_soak_fails_nothing_and_does_not_grow(tmp_path: Path, figures: Figures) -> None:
    runs = run_gateway(tmp_path)
    gw = next(runs)
    try:
        pid = gw.process.proc.pid
        asyncio.run(soak(gw.url, pid, 3))  # warm-up: imports, pools, first allocations
        seconds = pick(15, 300)
        done, failures, samples = asyncio.run(soak(gw.url, pid, seconds))
    finally:
        runs.close()
    assert not failures, f"{len(failures)} of {done} requests failed, e.g. {failures[:3]}"
    warm = samples[len(samples) // 4]  # a quarter in: caches and pools are full
    growth = max(samples[len(samples) // 4 :]) - warm
    assert growth <= GROWTH_LIMIT_MIB, (
        f"resident memory grew {growth:.1f} MiB under steady load "
        f"({warm:.1f} -> max {max(samples):.1f} MiB over {done} requests)"
    )
    figures.record("soak duration", seconds, "s")
    figures.record("requests (16 clients, mixed stream/non-stream)", done)
    figures.record("failed requests", len(failures))
    figures.record("throughput", round(done / seconds, 1), "req/s")
    figures.record("RSS when warm", round(warm, 1), "MiB")
    figures.record("RSS growth after warm-up", round(growth, 2), "MiB")
