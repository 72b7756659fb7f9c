"""Reading gateways' own Prometheus metrics: request, error and latency counts per pod,
and rates over a window of recent scrapes; and their readiness details (/readyz).

Promotion metric gates and the external metrics API (ScalingPolicy requestsPerSecond,
latencyP95, errorRate) both read these. The gateway exports
``kaizen_gateway_requests_total{agent,revision,status}`` and the histogram
``kaizen_gateway_request_duration_seconds{agent,revision}``; an error is a response
with status 5xx (4xx are the caller's mistakes, 429 the gateway's own rate limit).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from kaizen_api.netguard_aiohttp import read_capped

REQUESTS = "kaizen_gateway_requests_total"
LATENCY_BUCKETS = "kaizen_gateway_request_duration_seconds_bucket"


@dataclass(frozen=True)
class Counts:
    """Cumulative counts of one pod (or a sum of pods): requests, 5xx errors, and the
    latency histogram as {upper bound in seconds: cumulative count}."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: Mapping[float, float] = field(default_factory=dict)

    def __add__(self, other: Counts) -> Counts:
        bounds = set(self.buckets) | set(other.buckets)
        return Counts(
            self.requests + other.requests,
            self.errors + other.errors,
            {b: self.buckets.get(b, 0.0) + other.buckets.get(b, 0.0) for b in bounds},
        )

    def since(self, older: Counts) -> Counts:
        """What happened between ``older`` and this scrape of the same pod. A counter
        that went down means the process restarted: everything counted is new."""
        if self.requests < older.requests:
            return self
        return Counts(
            self.requests - older.requests,
            max(0.0, self.errors - older.errors),
            {b: max(0.0, v - older.buckets.get(b, 0.0)) for b, v in self.buckets.items()},
        )

    def error_rate_percent(self) -> float | None:
        """5xx responses as a percent of requests (None without requests)."""
        return 100.0 * self.errors / self.requests if self.requests else None

    def latency_quantile_ms(self, q: float) -> float | None:
        """The q-quantile of latency in milliseconds, interpolated inside its bucket as
        Prometheus' histogram_quantile does (None without requests)."""
        bounds = sorted(self.buckets)
        if not bounds or not self.buckets[bounds[-1]]:
            return None
        rank = q * self.buckets[bounds[-1]]
        lower_bound, lower_count = 0.0, 0.0
        for bound in bounds:
            count = self.buckets[bound]
            if count >= rank:
                if math.isinf(bound):  # beyond the last finite bucket: report that bound
                    return lower_bound * 1000.0
                inside = count - lower_count
                fraction = (rank - lower_count) / inside if inside else 1.0
                return (lower_bound + (bound - lower_bound) * fraction) * 1000.0
            lower_bound, lower_count = bound, count
        return lower_bound * 1000.0


def parse_counts(text: str, agent: str | None = None, revision: str | None = None) -> Counts:
    """The counts in one /metrics page, optionally only for one agent (and revision)."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if agent is not None and labels.get("agent") != agent:
                continue
            if revision is not None and labels.get("revision") != revision:
                continue
            if sample.name == REQUESTS:
                requests += sample.value
                if labels.get("status", "").startswith("5"):
                    errors += sample.value
            elif sample.name == LATENCY_BUCKETS:
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Counts(requests, errors, buckets)


METRICS_MAX_BYTES = 8 * 1024 * 1024


async def scrape(urls: list[str], timeout: float = 5.0) -> dict[str, str]:
    """GET /metrics from each base URL at once; pods that do not answer are left out,
    and so are pods that answer a redirect (not followed: a tenant's pod is not trusted
    to point the operator elsewhere) or a page over METRICS_MAX_BYTES."""

    async def one(session: aiohttp.ClientSession, url: str) -> tuple[str, str | None]:
        try:
            async with session.get(f"{url}/metrics", allow_redirects=False) as resp:
                if resp.status != 200:
                    return url, None
                body = await read_capped(resp, METRICS_MAX_BYTES)
                return url, body.decode("utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError):
            return url, None

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        pages = await asyncio.gather(*(one(session, url) for url in urls))
    return {url: text for url, text in pages if text is not None}


@dataclass(frozen=True)
class Window:
    """Counts accumulated between two scrapes ``seconds`` apart (summed over pods)."""

    seconds: float
    counts: Counts

    def per_second(self) -> float:
        return self.counts.requests / self.seconds if self.seconds > 0 else 0.0


class ScrapeHistory:
    """Recent scrapes per key (a gateway, or a promotion's gateway+revision), so that
    rates can be computed from two scrapes; kept in memory for ``keep`` seconds."""

    def __init__(self, keep: float = 600.0) -> None:
        self.keep = keep
        self._scrapes: dict[Hashable, deque[tuple[float, dict[str, Counts]]]] = {}

    def record(self, key: Hashable, at: float, per_pod: dict[str, Counts]) -> None:
        """Remember one scrape (pod URL -> cumulative counts) taken at monotonic ``at``."""
        scrapes = self._scrapes.setdefault(key, deque())
        scrapes.append((at, per_pod))
        while scrapes and scrapes[0][0] < at - self.keep:
            scrapes.popleft()

    def forget(self, key: Hashable) -> None:
        self._scrapes.pop(key, None)

    def window(self, key: Hashable, seconds: float, min_seconds: float = 1.0) -> Window | None:
        """Counts between the oldest scrape of the last ``seconds`` and the newest one
        (None until two scrapes at least ``min_seconds`` apart exist). Pods missing from
        the older scrape are left out rather than counted from zero, so a pod that was
        briefly unreachable does not look like a burst."""
        scrapes = self._scrapes.get(key)
        if not scrapes:
            return None
        newest_at, newest = scrapes[-1]
        older = next(((t, s) for t, s in scrapes if t >= newest_at - seconds), None)
        if older is None or newest_at - older[0] < min_seconds:
            return None
        total = Counts()
        for url, counts in newest.items():
            if url in older[1]:
                total = total + counts.since(older[1][url])
        return Window(newest_at - older[0], total)

    def latest(self, key: Hashable) -> Counts | None:
        """Cumulative counts of the newest scrape, summed over pods."""
        scrapes = self._scrapes.get(key)
        if not scrapes:
            return None
        total = Counts()
        for counts in scrapes[-1][1].values():
            total = total + counts
        return total


READINESS_MAX_BYTES = 256 * 1024


async def read_readiness(urls: list[str], timeout: float = 3.0) -> dict[str, dict[str, Any]]:
    """GET /readyz (the gateway's JSON readiness details) from each base URL at once;
    pods that do not answer with a JSON object are left out. No redirect is followed
    and the body is capped: a pod is not trusted to point the operator elsewhere or
    to exhaust its memory."""

    async def one(session: aiohttp.ClientSession, url: str) -> tuple[str, Any]:
        try:
            async with session.get(f"{url}/readyz", allow_redirects=False) as resp:
                return url, json.loads(await read_capped(resp, READINESS_MAX_BYTES))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return url, None

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        pages = await asyncio.gather(*(one(session, url) for url in urls))
    return {url: page for url, page in pages if isinstance(page, dict)}
