"""kopf registrations that fill the watch cache (kaizen_operator.cache).

An indexing handler per watched kind stores each object kopf sees; kopf runs them
before every other handler, and at start-up holds the other handlers until every
watched kind's initial listing is stored. Deletions reach the cache through
:func:`forget_deleted` (kopf calls no indexing handler for them).
"""

from __future__ import annotations

from typing import Any

import kopf

from kaizen_operator import names
from kaizen_operator.cache import WATCHED
from kaizen_operator.runtime import runtime_of

GROUP, VERSION = "kaizen.studio", "v1alpha1"
# Our gateway children only (the label selector is the drift watch's).
GATEWAY_CHILDREN: Any = {
    "app.kubernetes.io/managed-by": names.MANAGED_BY,
    names.GATEWAY_LABEL: kopf.PRESENT,
}


def _register(group: str, version: str, plural: str, labels: Any = None) -> None:
    @kopf.index(group, version, plural, labels=labels, id=f"{plural}-cache")
    def cache_object(body: kopf.Body, memo: Any, **_: Any) -> None:
        """Keep the object as the watch shows it (kopf's own index stays empty)."""
        cache = runtime_of(memo).kube.cache
        if cache is not None:
            cache.store(body)


def forget_deleted(memo: Any, kind: str, event_type: str | None, body: kopf.Body) -> None:
    """Drop a deleted object from the cache (called by each kind's event handler and by
    the children's drift handler)."""
    cache = runtime_of(memo).kube.cache
    if event_type == "DELETED" and cache is not None:
        meta = body["metadata"]
        cache.remove(kind, meta["namespace"], meta["name"])


for _plural in WATCHED.values():
    _register(GROUP, VERSION, _plural)
_register("apps", "v1", "deployments", GATEWAY_CHILDREN)
_register("policy", "v1", "poddisruptionbudgets", GATEWAY_CHILDREN)
_register("networking.k8s.io", "v1", "ingresses", GATEWAY_CHILDREN)
