"""What every reconcile shares: the client, per-object locks, applying children,
pruning, writing status once, and the operator's Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import kopf
from prometheus_client import Counter, Gauge, Histogram

from kaizen_operator.conditions import CHILD_REJECTED, rejected_status
from kaizen_operator.events import record
from kaizen_operator.gateway.index import GatewayIndex
from kaizen_operator.gateway.policy import GatewayPolicy
from kaizen_operator.gatewaymetrics import ScrapeHistory
from kaizen_operator.kube import Kube
from kaizen_operator.promotion.index import PromotionIndex

RECONCILES = Counter(
    "kaizen_operator_reconciles_total", "Reconciles run, by kind and result", ["kind", "result"]
)
RECONCILE_SECONDS = Histogram(
    "kaizen_operator_reconcile_duration_seconds",
    "Time one reconcile takes, by kind",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter(
    "kaizen_operator_reconcile_errors_total",
    "Reconciles that failed, by kind and reason",
    ["kind", "reason"],
)
QUEUE_DEPTH = Gauge(
    "kaizen_operator_queue_depth",
    "Reconciles waiting for or holding an object's lock, by kind",
    ["kind"],
)

log = logging.getLogger("kaizen_operator.runtime")

Reconcile = Callable[["Runtime", str, str], Awaitable[object]]
# Requested (background) reconciles running at once; the rest wait as bare keys.
REQUEST_WORKERS = 32


@dataclass
class OperatorConfig:
    """Settings from the command line."""

    gateway_image: str
    kubeconfig: str | None = None
    gateway_endpoints: Path | None = None
    # Promotion webhooks may call link-local and cloud-metadata addresses (SSRF guard off).
    allow_link_local_destinations: bool = False
    # Gateway pods may call link-local and cloud-metadata upstreams (their SSRF guard off).
    allow_link_local_upstreams: bool = False
    # Secret (in each Gateway's namespace) whose key "url" gives gateway pods their Redis.
    gateway_redis_secret: str | None = None
    # OTLP/HTTP endpoint gateway pods export traces to (OTEL_EXPORTER_OTLP_ENDPOINT).
    gateway_otlp_endpoint: str | None = None
    # What Gateways may ask for (images, compute, exposure, network).
    gateway_policy: GatewayPolicy = field(default_factory=GatewayPolicy)
    # The operator's own namespace ($POD_NAMESPACE; gateway pods accept it as a peer).
    namespace: str | None = None


@dataclass
class Runtime:
    """Process-wide state, kept in kopf's memo."""

    kube: Kube
    config: OperatorConfig
    locks: dict[tuple[str, str, str], asyncio.Lock] = field(default_factory=dict)
    # Objects in the operator's scope, from watch events: what the resync loop revisits.
    known: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    # Which Gateways select or serve which Agents (fed by the Gateway watch).
    gateways: GatewayIndex = field(default_factory=GatewayIndex)
    # Which unfinished Promotions target which Agent revisions (fed by the Promotion watch).
    promotions: PromotionIndex = field(default_factory=PromotionIndex)
    # Recent scrapes of gateways' /metrics (metric gates, external metrics API).
    scrapes: ScrapeHistory = field(default_factory=ScrapeHistory)
    # (kind, namespace, name) -> the task of a requested reconcile that has not started yet;
    # ``tasks`` holds every requested reconcile until it ends.
    requested: dict[tuple[str, str, str], asyncio.Task[None]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    workers: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(REQUEST_WORKERS))

    def track(self, kind: str, event_type: str | None, namespace: str, name: str) -> None:
        """Remember (or forget, on deletion) an object seen by a watch."""
        objects = self.known.setdefault(kind, set())
        if event_type == "DELETED":
            objects.discard((namespace, name))
        else:
            objects.add((namespace, name))

    def request(self, kind: str, namespace: str, name: str, reconcile: Reconcile) -> None:
        """Reconcile an object soon, in the background, without waiting for it.

        ``kind`` is the one ``reconcile`` passes to :meth:`reconciling`.

        For watch events on children: the event (a whole object) is released at once
        instead of being held while the reconcile queues behind the object's lock, and
        requests made before a reconcile of that object starts are all answered by it.
        Failures are logged; the resync loop retries.
        """
        key = (kind, namespace, name)
        if key in self.requested:
            return
        task = asyncio.create_task(self._run_requested(key, reconcile))
        self.requested[key] = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_requested(self, key: tuple[str, str, str], reconcile: Reconcile) -> None:
        kind, namespace, name = key
        try:
            async with self.workers:
                await reconcile(self, namespace, name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("requested reconcile of %s %s/%s failed: %s", kind, namespace, name, exc)
        finally:
            # Normally dropped already, when the reconcile started; not if it never did.
            if self.requested.get(key) is asyncio.current_task():
                del self.requested[key]

    async def cancel_requests(self) -> None:
        """Stop requested reconciles (at shutdown, before the client closes)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def reconciling(self, kind: str, namespace: str, name: str) -> AsyncIterator[None]:
        """Serialize reconciles of one object and measure them."""
        lock = self.locks.setdefault((kind, namespace, name), asyncio.Lock())
        QUEUE_DEPTH.labels(kind).inc()
        started = time.perf_counter()
        try:
            async with lock:
                # This pass reads the object afresh: it answers every request made so far.
                self.requested.pop((kind, namespace, name), None)
                try:
                    yield
                except kopf.TemporaryError:
                    RECONCILES.labels(kind, "retry").inc()
                    RECONCILE_ERRORS.labels(kind, "temporary").inc()
                    raise
                except Exception:
                    RECONCILES.labels(kind, "error").inc()
                    RECONCILE_ERRORS.labels(kind, "unexpected").inc()
                    raise
                else:
                    RECONCILES.labels(kind, "success").inc()
        finally:
            QUEUE_DEPTH.labels(kind).dec()
            RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)


def runtime_of(memo: Any) -> Runtime:
    """The Runtime stored in kopf's memo at start-up."""
    runtime: Runtime = memo.runtime
    return runtime


async def apply_all(kube: Kube, children: Iterable[dict[str, Any]]) -> list[str]:
    """Server-side apply each child; the names of those actually written."""
    written = []
    for child in children:
        if await kube.apply(child) is not None:
            written.append(f"{child['kind']}/{child['metadata']['name']}")
    return written


def owned_by(obj: dict[str, Any], owner_uid: str) -> bool:
    """True when ``obj`` has ``owner_uid`` among its ownerReferences."""
    return any(ref.get("uid") == owner_uid for ref in obj["metadata"].get("ownerReferences") or [])


async def prune(
    kube: Kube, namespace: str, owner_uid: str, unwanted: Iterable[tuple[str, str, str]]
) -> list[str]:
    """Delete children the parent no longer wants (only ones it owns)."""
    deleted = []
    for api_version, kind, name in unwanted:
        live = await kube.find(api_version, kind, namespace, name)
        if live is not None and owned_by(live, owner_uid):
            await kube.delete(api_version, kind, namespace, name)
            deleted.append(f"{kind}/{name}")
    return deleted


def status_changed(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """True when writing ``desired`` would change the stored status."""
    current = current or {}
    return any(current.get(k) != v for k, v in desired.items())


async def write_status(
    kube: Kube, obj: dict[str, Any], status: dict[str, Any], *, guard: bool = False
) -> bool:
    """Write the status once, only when it changed.

    ``guard`` makes the write conditional on the object's resourceVersion, for
    status that is itself a source of truth (a Gateway's served revisions).
    """
    if not status_changed(obj.get("status"), status):
        return False
    meta = obj["metadata"]
    where = (obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
    if guard:
        await kube.patch_status_guarded(*where, status, meta["resourceVersion"])
    else:
        await kube.patch_status(*where, status)
    return True


async def report_rejected(
    kube: Kube,
    obj: dict[str, Any],
    summary: str,
    message: str,
    now: datetime,
    *,
    guard: bool = False,
) -> None:
    """Stall ``obj``: the apiserver refused what its spec makes (``message``). Status
    says so (reason ChildRejected) and, when that is news, one Warning Event does."""
    status = rejected_status(obj, f"{summary}: {message}", now)
    if await write_status(kube, obj, status, guard=guard):
        await record(kube, obj, CHILD_REJECTED, message, warning=True)
