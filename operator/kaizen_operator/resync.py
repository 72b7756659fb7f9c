"""Periodic level-based resync, without kopf timers.

kopf timers put a finalizer on every object, which leaves objects (and their
namespaces) stuck in deletion whenever the operator is not running. This loop
revisits the objects the watches reported instead: ScalingPolicies often (override
expiry, HPA status), Agents and Gateways rarely (Secrets created later, missed events).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from kaizen_operator.agent.reconcile import reconcile_agent
from kaizen_operator.cache import API_VERSION
from kaizen_operator.gateway.reconcile import reconcile_gateway
from kaizen_operator.pipeline.reconcile import reconcile_pipeline
from kaizen_operator.promotion.reconcile import reconcile_promotion
from kaizen_operator.runtime import Runtime
from kaizen_operator.scaling.reconcile import reconcile_scaling_policy

log = logging.getLogger("kaizen_operator.resync")

Reconcile = Callable[[Runtime, str, str], Awaitable[object]]
SCHEDULE: tuple[tuple[str, float, Reconcile], ...] = (
    ("Promotion", 2.0, reconcile_promotion),
    ("ScalingPolicy", 5.0, reconcile_scaling_policy),
    ("Agent", 30.0, reconcile_agent),
    ("Pipeline", 30.0, reconcile_pipeline),
    ("Gateway", 60.0, reconcile_gateway),
)
TICK = 1.0
# How often each namespace's watched objects are listed afresh, to drop what a deleted
# namespace took with it (its watch ends without reporting them deleted).
RELIST_SECONDS = 60.0


async def resync_forever(rt: Runtime) -> None:
    """Reconcile every known object of each kind at that kind's interval, until cancelled."""
    last = {kind: time.monotonic() for kind, _, _ in SCHEDULE}
    relisted = time.monotonic()
    while True:
        await asyncio.sleep(TICK)
        now = time.monotonic()
        if now - relisted >= RELIST_SECONDS:
            relisted = now
            await relist_all(rt)
        for kind, interval, reconcile in SCHEDULE:
            if now - last[kind] < interval:
                continue
            last[kind] = now
            for namespace, name in sorted(rt.known.get(kind, set())):
                try:
                    await reconcile(rt, namespace, name)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("resync of %s %s/%s failed: %s", kind, namespace, name, exc)


async def relist_all(rt: Runtime) -> None:
    """One fresh list per namespace and watched kind; objects gone from it are forgotten
    (cache and resync), as if the watch had reported them deleted."""
    cache = rt.kube.cache
    if cache is None:
        return
    for kind, _, _ in SCHEDULE:
        namespaces = cache.namespaces(kind) | {ns for ns, _ in rt.known.get(kind, set())}
        for namespace in sorted(namespaces):
            try:
                gone = await rt.kube.relist(API_VERSION, kind, namespace)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relist of %s in %s failed: %s", kind, namespace, exc)
                continue
            for name in gone:
                rt.track(kind, "DELETED", namespace, name)
            if kind == "Gateway":
                for name in gone:
                    rt.gateways.observe(
                        "DELETED", {"metadata": {"namespace": namespace, "name": name}}
                    )
