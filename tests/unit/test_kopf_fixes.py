"""kopf's namespace observer with the operator's fix: a namespace that first shows up
in the watch's own initial listing (created between kopf's two listings at start-up)
is served, instead of being ignored until it next changes."""

from __future__ import annotations

import asyncio
from typing import Any

from kopf._cogs.structs import references
from kopf._core.reactor import observation

from kaizen_operator import kopf_fixes


def namespace(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, **meta}}


def test_a_namespace_first_listed_by_the_watch_is_served() -> None:
    async def scenario() -> set[str]:
        insights = references.Insights()
        process = observation.process_discovered_namespace_event
        for event in (
            {"type": None, "object": namespace("t-gw1-new")},  # the watch's listing
            {"type": None, "object": namespace("kube-system")},  # matches no pattern
            {"type": "ADDED", "object": namespace("t-gw1-later")},
            {"type": "DELETED", "object": namespace("t-gw1-later")},
        ):
            await process(raw_event=event, namespaces=["t-gw1-*"], insights=insights)
        return set(insights.namespaces)

    original = observation.process_discovered_namespace_event
    try:
        assert asyncio.run(scenario()) == set()  # kopf alone ignores the listing
        assert kopf_fixes.apply()
        assert asyncio.run(scenario()) == {"t-gw1-new"}
    finally:
        observation.process_discovered_namespace_event = original
