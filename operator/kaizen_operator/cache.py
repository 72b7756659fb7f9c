"""The kinds the operator watches, kept in memory from the watches: reconciles read them
here instead of GETting them (controller-runtime's cached client, in kopf terms).

Fed by kopf indexing handlers (``@kopf.index``), which kopf runs on every watch event
before any other handler and, at start-up, for the whole initial listing before any
other handler runs: a reconcile never sees a half-filled cache, and a restart reads
every watched object once, in its listing, and never again one by one.

Only what reconciles read is kept (apiVersion, kind, the metadata below, spec and
status): not managedFields, nor the last-applied and kopf annotations, which are most
of a small object's bytes. Reads return copies, so a reconcile cannot corrupt it.

Like any informer cache it may lag the apiserver by an event: writes that depend on
the exact version stay guarded by resourceVersion, and after a conflict the caller
reads afresh (``fresh=True`` on :meth:`Kube.get <kaizen_operator.kube.Kube.get>`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "kaizen.studio/v1alpha1"
# kind -> plural: the kinds whose every event reaches the cache.
WATCHED = {
    "Agent": "agents",
    "Pipeline": "pipelines",
    "Gateway": "gateways",
    "ScalingPolicy": "scalingpolicies",
    "Promotion": "promotions",
}
# Children kept too: only the operator's own (labelled) ones are watched, and only what
# a reconcile reads of them: a gateway Deployment's generation, replicas and status; of
# the optional children, that they exist and who owns them (prune). Not HTTPRoute: its
# CRD may be missing, and its absence is remembered by Kube.find instead.
CHILDREN: dict[tuple[str, str], tuple[str, ...]] = {
    ("apps/v1", "Deployment"): ("replicas",),
    ("policy/v1", "PodDisruptionBudget"): (),
    ("networking.k8s.io/v1", "Ingress"): (),
}
KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "ownerReferences",
)
# Annotations nothing reads from the cache: large, and copies of the spec (kopf's
# diff base is kept under our prefix, see __main__.configure).
DROPPED_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "kaizen.studio/last-handled-configuration",
    "kopf.zalando.org/",
)


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the cache keeps of a watched object."""
    meta = body.get("metadata") or {}
    kept: dict[str, Any] = {k: copy.deepcopy(meta[k]) for k in KEPT_METADATA if k in meta}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(DROPPED_ANNOTATIONS)
    }
    if annotations:
        kept["annotations"] = annotations
    obj: dict[str, Any] = {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind"),
        "metadata": kept,
    }
    kept_spec = CHILDREN.get((obj["apiVersion"], str(obj["kind"])))
    spec = body.get("spec")
    if kept_spec is not None and isinstance(spec, Mapping):
        obj["spec"] = {k: copy.deepcopy(spec[k]) for k in kept_spec if k in spec}
    elif spec is not None:
        obj["spec"] = copy.deepcopy(spec)
    if "status" in body and (kept_spec is None or kept_spec):
        obj["status"] = copy.deepcopy(body["status"])
    return obj


def _older(candidate: Mapping[str, Any], kept: Mapping[str, Any]) -> bool:
    """True when ``candidate`` is an older version than ``kept``. resourceVersions are
    opaque, but every apiserver backed by etcd 3 makes them increasing integers; if
    either is not one, the newest arrival wins, as in an informer."""
    new = candidate["metadata"].get("resourceVersion", "")
    old = kept["metadata"].get("resourceVersion", "")
    return new.isdigit() and old.isdigit() and int(new) < int(old)


@dataclass
class ObjectCache:
    """Watched objects by kind, namespace and name."""

    objects: dict[str, dict[str, dict[str, dict[str, Any]]]] = field(default_factory=dict)

    def holds(self, api_version: str, kind: str) -> bool:
        """True for the kinds the watches feed."""
        return (api_version == API_VERSION and kind in WATCHED) or (
            api_version,
            kind,
        ) in CHILDREN

    def store(self, body: Mapping[str, Any]) -> None:
        """Keep the latest version of an object, as a watch reported it or as the
        apiserver answered our own write (so the next reconcile reads its own write
        before the watch echoes it); an older version never replaces a newer one."""
        obj = slim(body)
        meta = obj["metadata"]
        in_namespace = self.objects.setdefault(str(obj["kind"]), {}).setdefault(
            meta["namespace"], {}
        )
        kept = in_namespace.get(meta["name"])
        if kept is None or not _older(obj, kept):
            in_namespace[meta["name"]] = obj

    def remove(self, kind: str, namespace: str, name: str) -> None:
        """Forget a deleted object."""
        in_namespace = self.objects.get(kind, {}).get(namespace)
        if in_namespace is not None:
            in_namespace.pop(name, None)
            if not in_namespace:
                del self.objects[kind][namespace]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the object, or None when the watch has not shown it (or its deletion)."""
        obj = self.objects.get(kind, {}).get(namespace, {}).get(name)
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self,
        kind: str,
        namespace: str,
        where: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Copies of the objects of a kind in a namespace, by name; only those ``where``
        accepts (tested before copying: a selector over 5,000 Agents copies its few)."""
        in_namespace = self.objects.get(kind, {}).get(namespace, {})
        return [
            copy.deepcopy(in_namespace[name])
            for name in sorted(in_namespace)
            if where is None or where(in_namespace[name])
        ]

    def namespaces(self, kind: str) -> set[str]:
        """Namespaces holding objects of ``kind``."""
        return set(self.objects.get(kind, {}))

    def relisted(
        self, kind: str, namespace: str, items: Sequence[Mapping[str, Any]], list_version: str
    ) -> tuple[str, ...]:
        """Bring a namespace's objects of ``kind`` in line with a fresh list (made at
        ``list_version``); the names dropped. A watch does not report the objects of a
        deleted namespace as deleted: its stream just ends, and this is how they go."""
        for item in items:
            self.store(item)
        listed = {item["metadata"]["name"] for item in items}
        gone = [
            name
            for name, kept in self.objects.get(kind, {}).get(namespace, {}).items()
            if name not in listed
            and not _older({"metadata": {"resourceVersion": list_version}}, kept)
        ]
        for name in gone:
            self.remove(kind, namespace, name)
        if kind == "Gateway" and not listed:  # no Gateway left: neither are their children
            for child_kind in {k for _, k in CHILDREN}:
                self.objects.get(child_kind, {}).pop(namespace, None)
        return tuple(sorted(gone))

    def __len__(self) -> int:
        return sum(len(names) for kinds in self.objects.values() for names in kinds.values())
