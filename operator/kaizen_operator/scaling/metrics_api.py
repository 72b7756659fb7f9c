"""The external metrics API (``external.metrics.k8s.io/v1beta1``) that lets HPAs scale
gateways on requests per second, p95 latency and error rate, the way KEDA's metrics
server does.

The kube-apiserver's aggregation layer forwards
``GET /apis/external.metrics.k8s.io/v1beta1/namespaces/NS/METRIC?labelSelector=...``
here. The selector names the Gateway (``kaizen.studio/gateway=NAME``); the value is
computed from that gateway's pods' own ``/metrics`` over the last minute (two scrapes
at least a second apart; the first query of a gateway scrapes twice). Serving is
stateless apart from that short scrape history, so any replica can answer.

Only the aggregation layer is answered, and only for callers allowed to read the
metric: the request must carry a client certificate signed by the cluster's
requestheader (front-proxy) CA with an allowed name, as published in
``kube-system/extension-apiserver-authentication``; the user and groups it forwards
(``X-Remote-User``/``X-Remote-Group``) are then checked with a SubjectAccessReview
(``get`` on the metric in the namespace), as KEDA's metrics server does. Namespace and
Gateway names must be plain names (security review M2).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from kaizen_api.v1alpha1.common import NAME_PATTERN
from kaizen_api.v1alpha1.scaling import MetricType
from kaizen_operator.endpoints import gateway_urls
from kaizen_operator.gatewaymetrics import ScrapeHistory, Window, parse_counts, scrape
from kaizen_operator.kube import Kube
from kaizen_operator.names import EXTERNAL_METRICS, GATEWAY_LABEL

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
APISERVICE = f"{VERSION}.{GROUP}"
WINDOW_SECONDS = 60.0
AUTH_CONFIG_MAP = ("kube-system", "extension-apiserver-authentication")
REVIEW_SECONDS = 10.0  # how long an access review's answer is reused
NAME = re.compile(NAME_PATTERN)
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class RequestHeaderAuth:
    """Who may call: the front-proxy CA, the names its client certificate may carry
    (empty: any), and the headers that carry the user, groups and extras."""

    ca_pem: str
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)

    @classmethod
    def from_config_map(cls, data: dict[str, str]) -> RequestHeaderAuth | None:
        """From extension-apiserver-authentication's data; None without a CA."""
        ca = data.get("requestheader-client-ca-file")
        if not ca:
            return None

        def listed(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = data.get(key)
            return tuple(json.loads(raw)) if raw else default

        return cls(
            ca_pem=ca,
            allowed_names=listed("requestheader-allowed-names", ()),
            username_headers=listed("requestheader-username-headers", cls.username_headers),
            group_headers=listed("requestheader-group-headers", cls.group_headers),
            extra_prefixes=listed("requestheader-extra-headers-prefix", cls.extra_prefixes),
        )


async def load_request_header_auth(kube: Kube) -> RequestHeaderAuth | None:
    """The cluster's requestheader settings (None when it publishes none)."""
    found = await kube.get("v1", "ConfigMap", *AUTH_CONFIG_MAP)
    return RequestHeaderAuth.from_config_map((found or {}).get("data") or {})


def _common_name(cert: dict[str, Any]) -> str | None:
    for rdn in cert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def metric_value(metric: str, window: Window) -> float:
    """The value of one external metric over a scrape window (pure); 0 without traffic."""
    if metric == EXTERNAL_METRICS[MetricType.REQUESTS_PER_SECOND]:
        return window.per_second()
    if metric == EXTERNAL_METRICS[MetricType.LATENCY_P95]:
        return window.counts.latency_quantile_ms(0.95) or 0.0
    return window.counts.error_rate_percent() or 0.0


def milli_quantity(value: float) -> str:
    """A Kubernetes quantity in thousandths (HPAs compare these exactly)."""
    return f"{round(value * 1000)}m"


def gateway_of(selector: str) -> str | None:
    """The Gateway named by a ``kaizen.studio/gateway=NAME`` label selector."""
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if key.strip() == GATEWAY_LABEL and value.strip("= "):
            return value.strip("= ")
    return None


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        },
        status=code,
    )


async def resource_list(_: web.Request) -> web.Response:
    """Discovery: the group version serves namespaced external metrics."""
    return web.json_response(
        {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{GROUP}/{VERSION}",
            "resources": [
                {
                    "name": name,
                    "singularName": "",
                    "namespaced": True,
                    "kind": "ExternalMetricValueList",
                    "verbs": ["get"],
                }
                for name in EXTERNAL_METRICS.values()
            ],
        }
    )


async def openapi_v2(_: web.Request) -> web.Response:
    """An empty OpenAPI document: the aggregator downloads one from every API server."""
    return web.json_response(
        {"swagger": "2.0", "info": {"title": "kaizen-operator", "version": VERSION}, "paths": {}}
    )


async def openapi_v3(_: web.Request) -> web.Response:
    """An empty OpenAPI v3 discovery document."""
    return web.json_response({"paths": {}})


class ExternalMetrics:
    """Answers the aggregation layer's external metric queries."""

    def __init__(
        self,
        kube: Kube,
        overrides: Path | None,
        history: ScrapeHistory,
        auth: RequestHeaderAuth | None = None,
    ) -> None:
        self.kube = kube
        self.overrides = overrides
        self.history = history
        self.auth = auth
        self._reviews: dict[tuple[Any, ...], tuple[bool, float]] = {}

    def routes(self) -> list[web.RouteDef]:
        base = f"/apis/{GROUP}/{VERSION}"
        return [
            web.get(base, self._authenticated(resource_list)),
            web.get(base + "/namespaces/{namespace}/{metric}", self._authenticated(self.value)),
            web.get("/openapi/v2", self._authenticated(openapi_v2)),
            web.get("/openapi/v3", self._authenticated(openapi_v3)),
        ]

    def caller(self, request: web.Request) -> tuple[str, list[str], dict[str, list[str]]] | str:
        """(user, groups, extra) the aggregation layer vouches for, or why not."""
        if self.auth is None:
            return "the cluster publishes no requestheader CA (extension-apiserver-authentication)"
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        if not cert:
            return (
                "only the apiserver's aggregation layer may call (front-proxy client certificate)"
            )
        if self.auth.allowed_names and _common_name(cert) not in self.auth.allowed_names:
            return "the client certificate's name is not a requestheader allowed name"
        user = next(
            (request.headers[h] for h in self.auth.username_headers if h in request.headers), ""
        )
        if not user:
            return "no user in the request headers"
        groups = [g for h in self.auth.group_headers for g in request.headers.getall(h, [])]
        extra: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            for prefix in self.auth.extra_prefixes:
                if name.lower().startswith(prefix.lower()):
                    extra.setdefault(name[len(prefix) :].lower(), []).append(value)
        return user, groups, extra

    def _authenticated(self, handler: Any) -> Any:
        async def guarded(request: web.Request) -> web.Response:
            who = self.caller(request)
            if isinstance(who, str):
                return _status(401, "Unauthorized", who)
            request["caller"] = who
            response: web.Response = await handler(request)
            return response

        return guarded

    async def allowed(
        self, caller: tuple[str, list[str], dict[str, list[str]]], namespace: str, metric: str
    ) -> bool:
        """SubjectAccessReview: may ``caller`` get ``metric`` in ``namespace``?"""
        user, groups, extra = caller
        key = (user, tuple(groups), json.dumps(extra, sort_keys=True), namespace, metric)
        now = time.monotonic()
        known = self._reviews.get(key)
        if known is not None and now - known[1] < REVIEW_SECONDS:
            return known[0]
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": groups,
                "extra": extra,
                "resourceAttributes": {
                    "group": GROUP,
                    "version": VERSION,
                    "resource": metric,
                    "namespace": namespace,
                    "verb": "get",
                },
            },
        }
        answer = await self.kube.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        allowed = bool((answer.get("status") or {}).get("allowed"))
        if len(self._reviews) > 1000:
            self._reviews.clear()
        self._reviews[key] = (allowed, now)
        return allowed

    async def _scrape(self, key: tuple[str, ...], urls: list[str]) -> None:
        pages = await scrape(urls)
        if pages:
            self.history.record(
                key, time.monotonic(), {u: parse_counts(t) for u, t in pages.items()}
            )

    async def value(self, request: web.Request) -> web.Response:
        """One ExternalMetricValueList for the Gateway the selector names."""
        namespace, metric = request.match_info["namespace"], request.match_info["metric"]
        if metric not in EXTERNAL_METRICS.values():
            return _status(404, "NotFound", f"external metric {metric!r} is not served here")
        name = gateway_of(request.query.get("labelSelector", ""))
        if name is None:
            return _status(
                400,
                "BadRequest",
                f"select the Gateway with the label selector {GATEWAY_LABEL}=NAME",
            )
        if not LABEL.match(namespace) or not NAME.match(name):
            return _status(
                400,
                "BadRequest",
                "the namespace and the Gateway name must be plain Kubernetes names "
                "(lower-case letters, digits, '-' and '.')",
            )
        if not await self.allowed(request["caller"], namespace, metric):
            user = request["caller"][0]
            return _status(
                403,
                "Forbidden",
                f"{user} may not get {metric}.{GROUP} in namespace {namespace}",
            )
        gateway = await self.kube.get("kaizen.studio/v1alpha1", "Gateway", namespace, name)
        if gateway is None:
            return _status(404, "NotFound", f"Gateway {namespace}/{name} does not exist")
        urls = await gateway_urls(self.kube, self.overrides, gateway)
        if not urls:
            return _status(503, "ServiceUnavailable", f"Gateway {name} has no ready pod")
        key = ("external", namespace, name)
        await self._scrape(key, urls)
        window = self.history.window(key, WINDOW_SECONDS)
        if window is None:  # first query of this gateway: take a second scrape
            await asyncio.sleep(1.0)
            await self._scrape(key, urls)
            window = self.history.window(key, WINDOW_SECONDS, min_seconds=0.5)
        if window is None:
            return _status(503, "ServiceUnavailable", f"Gateway {name}'s pods do not answer")
        return web.json_response(
            {
                "kind": "ExternalMetricValueList",
                "apiVersion": f"{GROUP}/{VERSION}",
                "metadata": {},
                "items": [
                    {
                        "metricName": metric,
                        "metricLabels": {GATEWAY_LABEL: name},
                        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "window": int(window.seconds) or 1,
                        "value": milli_quantity(metric_value(metric, window)),
                    }
                ],
            }
        )


def local_metrics_service(webhook_name: str, port: int) -> tuple[str, str, int]:
    """(namespace, name, port) of the ExternalName Service a local process is reached by."""
    return ("kube-system", f"{webhook_name}-metrics", port)


def render_registration(
    ca_pem: bytes, service: tuple[str, str, int], local: bool
) -> list[dict[str, Any]]:
    """The APIService that routes the group here (pure); for a local process also an
    ExternalName Service, since Endpoints may not name loopback addresses."""
    namespace, name, port = service
    labels = {
        "app.kubernetes.io/managed-by": "kaizen-operator",
        "app.kubernetes.io/part-of": "kaizen-studio",
    }
    objects: list[dict[str, Any]] = []
    if local:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {
                    "type": "ExternalName",
                    "externalName": "localhost",
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                },
            }
        )
    objects.append(
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE, "labels": labels},
            "spec": {
                "group": GROUP,
                "version": VERSION,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "caBundle": base64.b64encode(ca_pem).decode(),
                "service": {"namespace": namespace, "name": name, "port": port},
            },
        }
    )
    return objects
