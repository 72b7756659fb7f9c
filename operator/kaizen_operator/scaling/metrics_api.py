"""The external metrics API (``external.metrics.k8s.io/v1beta1``) that lets HPAs scale
gateways on requests per second, p95 latency and error rate, the way KEDA's metrics
server does.

The kube-apiserver's aggregation layer forwards
``GET /apis/external.metrics.k8s.io/v1beta1/namespaces/NS/METRIC?labelSelector=...``
here. The selector names the Gateway (``kaizen.studio/gateway=NAME``); the value is
computed from that gateway's pods' own ``/metrics`` over the last minute (two scrapes
at least a second apart; the first query of a gateway scrapes twice). Serving is
stateless apart from that short scrape history, so any replica can answer.
"""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from kaizen_api.v1alpha1.scaling import MetricType
from kaizen_operator.endpoints import gateway_urls
from kaizen_operator.gatewaymetrics import ScrapeHistory, Window, parse_counts, scrape
from kaizen_operator.kube import Kube
from kaizen_operator.names import EXTERNAL_METRICS, GATEWAY_LABEL

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
APISERVICE = f"{VERSION}.{GROUP}"
WINDOW_SECONDS = 60.0


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

    def __init__(self, kube: Kube, overrides: Path | None, history: ScrapeHistory) -> None:
        self.kube = kube
        self.overrides = overrides
        self.history = history

    def routes(self) -> list[web.RouteDef]:
        base = f"/apis/{GROUP}/{VERSION}"
        return [
            web.get(base, resource_list),
            web.get(base + "/namespaces/{namespace}/{metric}", self.value),
            web.get("/openapi/v2", openapi_v2),
            web.get("/openapi/v3", openapi_v3),
        ]

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
