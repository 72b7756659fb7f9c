"""A fix for kopf behaviour the operator depends on, applied before kopf runs. It
names the kopf code it replaces and why; drop it once kopf fixes the race upstream.

kopf (1.38 to at least 1.45) serves namespaces that match ``--namespace`` globs: its
namespace observer lists the namespaces once, then starts a watch, and that watch
lists them a second time and ignores that listing. A namespace created between the two
listings is in neither, and its ADDED event is older than the watch, so its Agents and
Gateways go unserved until the namespace itself next changes. Seen here as a test
namespace created right after the operator started that was never reconciled.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


async def process_namespace_event(
    *, raw_event: Any, namespaces: Any, insights: Any, **_: Any
) -> None:
    """kopf's ``process_discovered_namespace_event``, but the watch's own initial
    listing (events of type None) counts too. Watchers are re-planned only when the
    set of served namespaces changed, so a listing of known namespaces costs nothing."""
    from kopf._core.reactor import observation

    async with insights.revised:
        before = set(insights.namespaces)
        observation.revise_namespaces(
            raw_events=[raw_event], insights=insights, namespaces=namespaces
        )
        if insights.namespaces != before:
            insights.revised.notify_all()


def apply() -> bool:
    """Install the fix; False (and a warning) when kopf's internals have moved."""
    try:
        from kopf._core.reactor import observation
    except ImportError:
        return _moved()
    if not all(
        hasattr(observation, name)
        for name in ("process_discovered_namespace_event", "revise_namespaces")
    ):
        return _moved()
    observation.process_discovered_namespace_event = process_namespace_event
    return True


def _moved() -> bool:
    log.warning(
        "kopf's namespace observer has changed; namespaces created while the operator "
        "starts may be missed until they change"
    )
    return False
