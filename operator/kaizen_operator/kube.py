"""The operator's one Kubernetes client: async, shared, server-side apply.

A thin layer over kubernetes_asyncio's ApiClient (connection reuse, kubeconfig and
in-cluster auth) that speaks in plain dicts, which is what the render functions
produce. Writes skip the network when the desired object did not change since
our last apply and nobody else touched it since.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from prometheus_client import Counter

from kaizen_operator.cache import ObjectCache

FIELD_MANAGER = "kaizen-operator"
# Server-side apply bodies are parsed as YAML; the parameter keeps the client library
# from re-encoding our bytes (see apply_body).
APPLY_CONTENT_TYPE = "application/apply-patch+yaml; charset=utf-8"
REPLICAS_MANAGER = "kaizen-operator-replicas"
CACHE_READS = Counter(
    "kaizen_operator_cache_reads_total",
    "Reads of watched kinds answered from the watch cache instead of the apiserver",
    ["kind"],
)

# (apiVersion, kind) -> (URL prefix, plural)
RESOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "Event"): ("/api/v1", "events"),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts"),
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("apps/v1", "ControllerRevision"): ("/apis/apps/v1", "controllerrevisions"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("networking.k8s.io/v1", "Ingress"): ("/apis/networking.k8s.io/v1", "ingresses"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): (
        "/apis/gateway.networking.k8s.io/v1",
        "httproutes",
    ),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): (
        "/apis/autoscaling/v2",
        "horizontalpodautoscalers",
    ),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("/apis/discovery.k8s.io/v1", "endpointslices"),
    ("coordination.k8s.io/v1", "Lease"): ("/apis/coordination.k8s.io/v1", "leases"),
    ("kaizen.studio/v1alpha1", "Agent"): ("/apis/kaizen.studio/v1alpha1", "agents"),
    ("kaizen.studio/v1alpha1", "Pipeline"): ("/apis/kaizen.studio/v1alpha1", "pipelines"),
    ("kaizen.studio/v1alpha1", "Gateway"): ("/apis/kaizen.studio/v1alpha1", "gateways"),
    ("kaizen.studio/v1alpha1", "ScalingPolicy"): (
        "/apis/kaizen.studio/v1alpha1",
        "scalingpolicies",
    ),
    ("kaizen.studio/v1alpha1", "Promotion"): ("/apis/kaizen.studio/v1alpha1", "promotions"),
}

# Cluster-scoped kinds: (apiVersion, kind) -> (URL prefix, plural)
CLUSTER_RESOURCES: dict[tuple[str, str], tuple[str, str]] = {
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"): (
        "/apis/admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
    ),
    ("apiregistration.k8s.io/v1", "APIService"): (
        "/apis/apiregistration.k8s.io/v1",
        "apiservices",
    ),
}

ApiException = client.ApiException


def refusal(exc: ApiException) -> str | None:
    """The apiserver's message when it refused a write as invalid (400 or 422): a
    problem of the spec that retrying cannot fix. None for every other error."""
    if exc.status not in (400, 422):
        return None
    try:
        message = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        message = ""
    return message or f"refused with HTTP {exc.status}"


# Names, namespaces and subresources: DNS subdomains (dots, not dot segments).
_SEGMENT = re.compile(r"(?!\.\.?$)[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def resource_path(
    api_version: str, kind: str, namespace: str, name: str | None = None, sub: str | None = None
) -> str:
    """URL path of a collection or object (namespace "" for cluster-scoped kinds).

    Each segment must be a plain name: one with ``/``, ``?``, ``#``, ``%`` or a dot
    segment would address another object once the client normalises the URL (security
    review M2), so it is refused with ValueError before any request."""
    for segment in (namespace, name, sub):
        if segment and not _SEGMENT.fullmatch(segment):
            raise ValueError(f"not a valid object name or namespace: {segment!r}")
    if (api_version, kind) in CLUSTER_RESOURCES:
        prefix, plural = CLUSTER_RESOURCES[(api_version, kind)]
        path = f"{prefix}/{plural}"
    else:
        prefix, plural = RESOURCES[(api_version, kind)]
        path = f"{prefix}/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def apply_body(obj: dict[str, Any]) -> bytes:
    """``obj`` as a server-side apply body: JSON with characters outside the Basic
    Multilingual Plane written as UTF-8, not as \\ud83d\\ude00 surrogate pairs.

    The apiserver reads apply bodies with a YAML parser, which refuses JSON's surrogate
    escapes ("invalid Unicode character escape code"), so an emoji in a system prompt
    would make the agent bundle unappliable. Raw UTF-8 is valid in both JSON and YAML;
    control characters stay escaped (YAML refuses them raw)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _YAML_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


# Characters YAML does not take raw inside a quoted string: outside its printable set,
# or line breaks it would fold (NEL, LS, PS). Their JSON escapes are valid YAML too.
_YAML_UNPRINTABLE = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def _ignore_environment(api: client.ApiClient) -> None:
    """Give ``api`` a session that does not read proxy settings and ~/.netrc from the
    environment, as kopf's own sessions do not (kopf's ``networking.trust_env`` is off
    by default). kubernetes_asyncio's session trusts the environment, and aiohttp then
    looks both up in a worker thread on every request: two thread hops per call, a fifth
    of the operator's CPU while it reconciles a thousand Agents after a restart."""
    rest = api.rest_client
    connector = rest.pool_manager.connector
    rest.pool_manager.detach()  # keeps the connector (TLS settings, pool size) open
    rest.pool_manager = aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        read_bufsize=2**21,  # as kubernetes_asyncio: large watch events fit
    )


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta.get("name", ""))


Ref = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
# How long a child found missing is trusted to stay missing without a watch event saying
# otherwise (a bound on what a missed event could cost).
ABSENT_SECONDS = 300.0
# How long an answer of API discovery (is an optional kind served?) is trusted.
DISCOVERY_SECONDS = 60.0


MetaKeys = tuple[tuple[str, ...], tuple[str, ...]]  # (label keys, annotation keys)


def _own_keys(sent: dict[str, Any]) -> MetaKeys:
    """The label and annotation keys an apply of ``sent`` owns."""
    meta = sent.get("metadata", {})
    return tuple(sorted(meta.get("labels") or {})), tuple(sorted(meta.get("annotations") or {}))


def _metadata_digest(obj: dict[str, Any], keys: MetaKeys) -> str:
    """Digest of ``obj``'s values for the label and annotation keys we apply: another
    manager's keys (the deployment controller's revision annotation) are not ours to
    put back, so their changes are no drift."""
    meta = obj.get("metadata", {})
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    return _digest(
        {
            "labels": {k: labels.get(k) for k in keys[0]},
            "annotations": {k: annotations.get(k) for k in keys[1]},
        }
    )


@dataclass(frozen=True)
class Applied:
    """One apply of one object by one field manager, as the apiserver answered it."""

    digest: str  # of the object we sent
    version: str  # resourceVersion of the answer (or of a later status-only change)
    generation: int | None  # metadata.generation of the answer; None for kinds without
    keys: MetaKeys  # the labels and annotations we sent
    metadata: str  # digest of the answer's values for those keys

    @classmethod
    def of(cls, digest: str, sent: dict[str, Any], answer: dict[str, Any]) -> Applied:
        meta, keys = answer["metadata"], _own_keys(sent)
        return cls(
            digest,
            meta["resourceVersion"],
            meta.get("generation"),
            keys,
            _metadata_digest(answer, keys),
        )

    def untouched_by(self, obj: dict[str, Any]) -> bool:
        """``obj`` (a later state) changed neither spec nor our labels and annotations.
        Only kinds with a generation can tell: a ConfigMap's data never bumps one."""
        generation = obj.get("metadata", {}).get("generation")
        return (
            self.generation is not None
            and generation == self.generation
            and _metadata_digest(obj, self.keys) == self.metadata
        )


class Kube:
    """Async Kubernetes client for the operator (one per process)."""

    def __init__(self, api: client.ApiClient, max_concurrency: int = 32) -> None:
        self._api = api
        self._slots = asyncio.Semaphore(max_concurrency)
        # object -> field manager -> what we applied and what came back; keyed by object
        # so that each child event looks up one entry, not all of them.
        self._applied: dict[Ref, dict[str, Applied]] = {}
        # object -> when find() last found it missing.
        self._absent: dict[Ref, float] = {}
        # (apiVersion, kind) -> (served?, when discovery said so).
        self._served: dict[tuple[str, str], tuple[bool, float]] = {}
        # The watched kinds, fed by the operator's watches; None: every read is a call.
        self.cache: ObjectCache | None = None

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        """Load in-cluster credentials, else ``kubeconfig`` / ``$KUBECONFIG``."""
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        api = client.ApiClient(cfg)
        _ignore_environment(api)
        return cls(api)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._api.close()

    async def _call(
        self,
        path: str,
        method: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        async with self._slots:
            return await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )

    async def serves(self, api_version: str, kind: str) -> bool:
        """Whether the cluster serves ``kind`` (an optional API such as the Gateway API's
        HTTPRoute, whose CRD may not be installed). Discovery is asked at most once per
        ``DISCOVERY_SECONDS``; installing the CRD is noticed within that time."""
        key = (api_version, kind)
        known = self._served.get(key)
        if known is not None and time.monotonic() - known[1] < DISCOVERY_SECONDS:
            return known[0]
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            found = await self._call(prefix, "GET")
        except ApiException as exc:
            if exc.status != 404:
                raise
            found = {}
        served = any(r.get("kind") == kind for r in found.get("resources") or [])
        self._served[key] = (served, time.monotonic())
        return served

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str, *, fresh: bool = False
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist. A watched kind is answered from
        the cache unless ``fresh`` (after a conflict, or before deleting for good)."""
        if not fresh and self.cache is not None and self.cache.holds(api_version, kind):
            CACHE_READS.labels(kind).inc()
            return self.cache.get(kind, namespace, name)
        try:
            obj: dict[str, Any] = await self._call(
                resource_path(api_version, kind, namespace, name), "GET"
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def find(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """Like :meth:`get`, for a child that is usually missing (an optional PDB or
        Ingress that prune looks for on every reconcile): a miss is remembered until the
        object shows up in a watch event or is applied, at most ``ABSENT_SECONDS``."""
        ref = (api_version, kind, namespace, name)
        missing_since = self._absent.get(ref)
        if missing_since is not None and time.monotonic() - missing_since < ABSENT_SECONDS:
            return None
        obj = await self.get(api_version, kind, namespace, name)
        if obj is None:
            self._absent[ref] = time.monotonic()
        else:
            self._absent.pop(ref, None)
        return obj

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        label_selector: str | None = None,
        *,
        fresh: bool = False,
    ) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace (optionally by label selector). A watched
        kind without a selector is answered from the cache unless ``fresh``."""
        if (
            not fresh
            and label_selector is None
            and self.cache is not None
            and self.cache.holds(api_version, kind)
        ):
            CACHE_READS.labels(kind).inc()
            return self.cache.list(kind, namespace)
        query = [("labelSelector", label_selector)] if label_selector else []
        result = await self._call(resource_path(api_version, kind, namespace), "GET", query=query)
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def relist(self, api_version: str, kind: str, namespace: str) -> tuple[str, ...]:
        """List a cached kind afresh and correct the cache; the names it had wrongly."""
        if self.cache is None:
            return ()
        result = await self._call(resource_path(api_version, kind, namespace), "GET")
        items: Sequence[dict[str, Any]] = result.get("items", [])
        for item in items:  # list items carry no apiVersion or kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        version = str((result.get("metadata") or {}).get("resourceVersion", ""))
        return self.cache.relisted(kind, namespace, items, version)

    async def apply(
        self, obj: dict[str, Any], manager: str = FIELD_MANAGER
    ) -> dict[str, Any] | None:
        """Server-side apply ``obj`` as ``manager``; skipped when nothing changed.

        Returns the applied object, or None when the write was skipped.
        """
        ref = _key(obj)
        digest = _digest(obj)
        cached = self._applied.get(ref, {}).get(manager)
        if cached and cached.digest == digest:
            return None
        path = resource_path(*ref)
        query = [("fieldManager", manager), ("force", "true")]
        try:
            applied: dict[str, Any] = await self._call(
                path, "PATCH", body=apply_body(obj), query=query, content_type=APPLY_CONTENT_TYPE
            )
        except ApiException as exc:
            if exc.status != 422:
                raise
            # Someone else's edit of a keyed list (e.g. a Service port renamed) can make
            # the merged result invalid; a JSON merge patch replaces such lists whole,
            # then the apply re-takes ownership.
            try:
                await self._call(
                    path, "PATCH", body=obj, content_type="application/merge-patch+json"
                )
            except ApiException as merge_exc:
                if merge_exc.status == 404:  # nothing to merge into: our object is invalid
                    raise exc from None
                raise
            applied = await self._call(
                path, "PATCH", body=apply_body(obj), query=query, content_type=APPLY_CONTENT_TYPE
            )
        self._applied.setdefault(ref, {})[manager] = Applied.of(digest, obj, applied)
        self._absent.pop(ref, None)
        self._remember_write(applied)
        return applied

    def observe(self, obj: dict[str, Any]) -> bool:
        """Note a child's current state; False when it is just the echo of our own write.

        A change we did not make re-enables the next write of that object, unless it
        left the object's generation and our labels and annotations as we applied them:
        a controller's status update (a Deployment rolling, an HPA's every sync) or its
        own annotation (the Deployment's revision) is news for the parent's status, not
        drift to write over.
        """
        meta = obj.get("metadata", {})
        ref = (
            obj.get("apiVersion", ""),
            obj.get("kind", ""),
            meta.get("namespace", ""),
            meta.get("name", ""),
        )
        self._absent.pop(ref, None)
        managers = self._applied.get(ref)
        if not managers:
            return True
        version = meta.get("resourceVersion")
        if all(entry.version == version for entry in managers.values()):
            return False
        # Forget the writes this version changed: the next apply of those goes out.
        kept = {
            m: replace(entry, version=str(version))
            for m, entry in managers.items()
            if entry.version == version or entry.untouched_by(obj)
        }
        if kept:
            self._applied[ref] = kept
        else:
            del self._applied[ref]
        return True

    def forget(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Drop the skip-write memory of one object (it was deleted or replaced). Its
        next find() asks the apiserver: a delete that failed must not pass for done."""
        self._applied.pop((api_version, kind, namespace, name), None)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` (a review: SubjectAccessReview, TokenReview)."""
        answer: dict[str, Any] = await self._call(path, "POST", body=body)
        return answer

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj``; raises ApiException(409) when it exists."""
        api_version, kind, namespace, _ = _key(obj)
        created: dict[str, Any] = await self._call(
            resource_path(api_version, kind, namespace),
            "POST",
            body=obj,
            query=[("fieldManager", FIELD_MANAGER)],
        )
        return created

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT ``obj``; with metadata.resourceVersion set, 409 when it changed meanwhile."""
        api_version, kind, namespace, name = _key(obj)
        replaced: dict[str, Any] = await self._call(
            resource_path(api_version, kind, namespace, name),
            "PUT",
            body=obj,
            query=[("fieldManager", FIELD_MANAGER)],
        )
        return replaced

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete the object (background propagation); False when it was already gone."""
        self.forget(api_version, kind, namespace, name)
        if self.cache is not None:
            self.cache.remove(kind, namespace, name)
        try:
            await self._call(
                resource_path(api_version, kind, namespace, name),
                "DELETE",
                body={"propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def patch_guarded(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        resource_version: str,
        *,
        manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        """JSON merge patch of the object as ``manager``; 409 if it changed since read."""
        body = {
            **patch,
            "metadata": {**patch.get("metadata", {}), "resourceVersion": resource_version},
        }
        patched: dict[str, Any] = await self._call(
            resource_path(api_version, kind, namespace, name),
            "PATCH",
            body=body,
            query=[("fieldManager", manager)],
            content_type="application/merge-patch+json",
        )
        self._remember_write(patched)
        return patched

    def _remember_write(self, answer: dict[str, Any]) -> None:
        """Put what the apiserver answered a write of a cached kind into the cache."""
        if self.cache is not None and self.cache.holds(
            str(answer.get("apiVersion")), str(answer.get("kind"))
        ):
            self.cache.store(answer)

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace the status fields given (JSON merge patch on the status subresource)."""
        patched: dict[str, Any] = await self._call(
            resource_path(api_version, kind, namespace, name, "status"),
            "PATCH",
            body={"status": status},
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )
        self._remember_write(patched)
        return patched

    async def patch_status_guarded(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str,
    ) -> dict[str, Any]:
        """Like patch_status, but fails with 409 if the object changed since it was read."""
        patched: dict[str, Any] = await self._call(
            resource_path(api_version, kind, namespace, name, "status"),
            "PATCH",
            body={"metadata": {"resourceVersion": resource_version}, "status": status},
            query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )
        self._remember_write(patched)
        return patched
