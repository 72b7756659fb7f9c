"""Kubernetes Events about our objects, posted with the operator's own client.

kopf's event helpers need a handler's context; reconciles also run from the resync
loop, so Events go through the shared client instead. Posting never fails a
reconcile (an Event in a terminating namespace is simply lost).
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from typing import Any

from kaizen_operator.conditions import timestamp
from kaizen_operator.kube import ApiException, Kube

log = logging.getLogger("kaizen_operator.events")
INSTANCE = socket.gethostname()


def render_event(
    obj: dict[str, Any], reason: str, message: str, *, warning: bool, now: datetime
) -> dict[str, Any]:
    """A core/v1 Event about ``obj`` (pure)."""
    meta = obj["metadata"]
    stamp = timestamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": "kaizen-operator"},
        "reportingComponent": "kaizen-operator",
        "reportingInstance": INSTANCE,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def record(
    kube: Kube, obj: dict[str, Any], reason: str, message: str, *, warning: bool = False
) -> None:
    """Post an Event on ``obj``; never put secret values in ``message``."""
    try:
        await kube.create(
            render_event(obj, reason, message, warning=warning, now=datetime.now(UTC))
        )
    except ApiException as exc:
        log.info(
            "event %s on %s/%s not posted: %s",
            reason,
            obj["kind"],
            obj["metadata"]["name"],
            exc.status,
        )
