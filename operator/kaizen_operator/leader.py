"""Leader election on a coordination.k8s.io Lease, so that of several operator
replicas exactly one reconciles.

kopf's own peering is not used for this: replicas of equal priority all freeze
(by kopf's design), and a Deployment's replicas share one priority. This follows
client-go's leaderelection instead: a replica takes the Lease when it is free or its
holder stopped renewing for a whole lease duration, measured on the local monotonic
clock from when this replica last saw the record change (so clock skew between
nodes does not matter), and writes with resourceVersion so two replicas never both
win. A leader that cannot renew in time stops acting (the caller exits), and on a
clean shutdown it releases the Lease so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kaizen_operator.kube import ApiException, Kube

log = logging.getLogger("kaizen_operator.leader")


class LeadershipLost(RuntimeError):
    """This replica no longer holds the Lease; it must stop reconciling."""


@dataclass(frozen=True)
class LeaseSettings:
    """Which Lease, who we are, and the timings (seconds)."""

    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _micro_time(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def render_lease(
    settings: LeaseSettings, current: dict[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The Lease held by ``settings.identity`` from ``now`` (pure)."""
    spec = (current or {}).get("spec") or {}
    ours = spec.get("holderIdentity") == settings.identity
    lease: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": settings.name,
            "namespace": settings.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "kaizen-operator",
                "app.kubernetes.io/part-of": "kaizen-studio",
            },
        },
        "spec": {
            "holderIdentity": settings.identity,
            "leaseDurationSeconds": max(1, round(settings.lease_duration)),
            "acquireTime": spec.get("acquireTime") if ours else _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours else 1),
        },
    }
    if current is not None:
        lease["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    return lease


def lease_is_free(
    spec: dict[str, Any], identity: str, unchanged_for: float, default_duration: float
) -> bool:
    """True when ``identity`` may take a Lease whose record has not changed for
    ``unchanged_for`` seconds (pure)."""
    holder = spec.get("holderIdentity") or ""
    if holder in ("", identity):
        return True
    duration = float(spec.get("leaseDurationSeconds") or default_duration)
    return unchanged_for >= duration


class LeaderElector:
    """Acquire, renew and release one Lease."""

    def __init__(self, kube: Kube, settings: LeaseSettings) -> None:
        self.kube = kube
        self.settings = settings
        self._seen: tuple[str, float] | None = None  # (resourceVersion, monotonic time seen)
        self.is_leader = False

    def _unchanged_for(self, lease: dict[str, Any]) -> float:
        version = lease["metadata"]["resourceVersion"]
        now = time.monotonic()
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, now)
        return now - self._seen[1]

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: True when this replica holds the Lease afterwards."""
        s = self.settings
        current = await self.kube.get("coordination.k8s.io/v1", "Lease", s.namespace, s.name)
        if current is not None and not lease_is_free(
            current.get("spec") or {}, s.identity, self._unchanged_for(current), s.lease_duration
        ):
            return False
        desired = render_lease(s, current, datetime.now(UTC))
        try:
            if current is None:
                await self.kube.create(desired)
            else:
                await self.kube.replace(desired)
        except ApiException as exc:
            if exc.status in (409, 422):  # another replica wrote first
                return False
            raise
        return True

    async def acquire(self) -> None:
        """Wait until this replica is the leader."""
        s = self.settings
        waiting_logged = False
        while True:
            try:
                if await self.try_acquire_or_renew():
                    self.is_leader = True
                    log.info("became leader of lease %s/%s as %s", s.namespace, s.name, s.identity)
                    return
            except (ApiException, OSError) as exc:
                log.warning("leader election: %s", exc.__class__.__name__)
            if not waiting_logged:
                log.info("standing by: lease %s/%s is held by another replica", s.namespace, s.name)
                waiting_logged = True
            await asyncio.sleep(s.retry_period)

    async def hold(self) -> None:
        """Renew until cancelled; raise LeadershipLost when renewal fails for too long."""
        s = self.settings
        last_renewed = time.monotonic()
        while True:
            await asyncio.sleep(s.retry_period)
            try:
                if await self.try_acquire_or_renew():
                    last_renewed = time.monotonic()
                    continue
                self.is_leader = False
                raise LeadershipLost(f"lease {s.namespace}/{s.name} was taken over")
            except (ApiException, OSError) as exc:
                log.warning("lease renewal failed: %s", exc.__class__.__name__)
            if time.monotonic() - last_renewed > s.renew_deadline:
                self.is_leader = False
                raise LeadershipLost(f"could not renew lease {s.namespace}/{s.name} in time")

    async def release(self) -> None:
        """Give the Lease up so a standby replica takes over without waiting it out."""
        if not self.is_leader:
            return
        s = self.settings
        try:
            current = await self.kube.get("coordination.k8s.io/v1", "Lease", s.namespace, s.name)
            if current and (current.get("spec") or {}).get("holderIdentity") == s.identity:
                released = dict(current)
                released["spec"] = {**current["spec"], "holderIdentity": "", "renewTime": None}
                await self.kube.replace(released)
        except (ApiException, OSError) as exc:
            log.warning("could not release the lease: %s", exc.__class__.__name__)
        self.is_leader = False
