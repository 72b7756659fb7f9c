"""Entry point of ``kaizen-operator``: reconciles Kaizen Studio's custom resources."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Coroutine
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kopf
from aiohttp import web
from prometheus_client import start_http_server

from kaizen_operator import kopf_fixes
from kaizen_operator.cache import ObjectCache
from kaizen_operator.gateway.policy import GatewayPolicy
from kaizen_operator.gateway.render import ALLOW_LINK_LOCAL_ENV, OTLP_ENDPOINT_ENV, REDIS_URL_ENV
from kaizen_operator.gatewaymetrics import ScrapeHistory
from kaizen_operator.kube import Kube
from kaizen_operator.leader import LeaderElector, LeaseSettings
from kaizen_operator.promotion.webhook import WebhookSettings, start_webhook, stop_webhook
from kaizen_operator.resync import resync_forever
from kaizen_operator.runtime import OperatorConfig, Runtime
from kaizen_operator.scaling.metrics_api import (
    ExternalMetrics,
    load_request_header_auth,
    local_metrics_service,
    render_registration,
)

DEFAULT_IMAGE = f"ghcr.io/kaizen-studio/kaizen-studio:{version('kaizen-studio')}"


def otlp_endpoint(value: str) -> str:
    """An OTLP/HTTP collector URL: http(s), a host, and no credentials — it is written
    into every gateway Deployment, where a password would be readable by anyone who can
    read Deployments."""
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http(s) URL with a host")
    if url.username or url.password:
        raise argparse.ArgumentTypeError(
            "the OTLP endpoint must not hold credentials; they would be readable in every "
            "gateway Deployment"
        )
    return value


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _pairs(value: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in _csv(value))


def _json_list(value: str) -> tuple[dict[str, Any], ...]:
    found = json.loads(value or "[]")
    if not isinstance(found, list) or not all(isinstance(e, dict) for e in found):
        raise argparse.ArgumentTypeError("expected a JSON list of objects")
    return tuple(found)


def gateway_policy(args: argparse.Namespace) -> GatewayPolicy:
    """The gateway policy of the command line."""
    return GatewayPolicy(
        allowed_images=args.gateway_allowed_images,
        max_replicas=args.gateway_max_replicas,
        max_resources=args.gateway_max_resources,
        service_types=args.gateway_service_types,
        ingress_hosts=args.gateway_ingress_hosts,
        ingress_classes=args.gateway_ingress_classes,
        ingress_namespaces=args.gateway_ingress_namespaces,
        egress_allow=args.gateway_egress_allow,
        egress_denied=args.gateway_egress_deny,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (each also readable from a KAIZEN_OPERATOR_* variable)."""
    parser = argparse.ArgumentParser(
        prog="kaizen-operator",
        description="Reconcile Agents, Gateways, ScalingPolicies and Promotions.",
    )
    parser.add_argument("--version", action="version", version=version("kaizen-studio"))
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="Watch only this namespace (repeatable; globs allowed). Needs only namespaced RBAC.",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="Watch every namespace (default)."
    )
    parser.add_argument(
        "--kubeconfig", default=os.environ.get("KUBECONFIG"), help="Kubeconfig outside a cluster."
    )
    parser.add_argument(
        "--health-address",
        default=os.environ.get("KAIZEN_OPERATOR_HEALTH", "0.0.0.0:8081"),
        help="host:port of the /healthz liveness endpoint.",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("KAIZEN_OPERATOR_METRICS_PORT", "9090")),
        help="Port of the Prometheus /metrics endpoint (0 disables it).",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        default=os.environ.get("KAIZEN_OPERATOR_LEADER_ELECT", "") in ("1", "true"),
        help="Run several replicas: the one holding a Lease reconciles, the others stand by.",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="Namespace of the Lease (default: $POD_NAMESPACE, else default).",
    )
    parser.add_argument(
        "--leader-election-id",
        default=os.environ.get("KAIZEN_OPERATOR_LEADER_ELECTION_ID", "kaizen-operator"),
        help="Name of the Lease; replicas sharing it elect one leader.",
    )
    parser.add_argument(
        "--leader-election-lease-duration",
        type=float,
        default=15.0,
        help="Seconds a standby waits after the leader's last renewal before taking over.",
    )
    parser.add_argument(
        "--gateway-image",
        default=os.environ.get("KAIZEN_GATEWAY_IMAGE", DEFAULT_IMAGE),
        help="Image of gateway pods when a Gateway sets none.",
    )
    parser.add_argument(
        "--webhook-listen",
        default=os.environ.get("KAIZEN_OPERATOR_WEBHOOK_LISTEN", "0.0.0.0:9443"),
        help="host:port the Promotion admission webhook listens on.",
    )
    parser.add_argument(
        "--webhook-url",
        default=os.environ.get("KAIZEN_OPERATOR_WEBHOOK_URL"),
        help="URL the apiserver calls (a local process: https://127.0.0.1:PORT).",
    )
    parser.add_argument(
        "--webhook-service",
        default=os.environ.get("KAIZEN_OPERATOR_WEBHOOK_SERVICE"),
        help="namespace/name:port of the webhook Service, in a cluster.",
    )
    parser.add_argument(
        "--webhook-name",
        default=os.environ.get("KAIZEN_OPERATOR_WEBHOOK_NAME", "kaizen-operator"),
        help="Name of the MutatingWebhookConfiguration this operator manages.",
    )
    parser.add_argument(
        "--webhook-namespace-label",
        default=os.environ.get("KAIZEN_OPERATOR_WEBHOOK_NAMESPACE_LABEL"),
        help="key=value: only namespaces with this label use this operator's webhook; "
        "!key: only namespaces without the label.",
    )
    parser.add_argument(
        "--webhook-cert-dir",
        type=Path,
        default=os.environ.get("KAIZEN_OPERATOR_WEBHOOK_CERT_DIR"),
        help="Folder with tls.crt and tls.key (a mounted Secret): every replica serves the "
        "webhook and metrics API with it; the Helm chart installs their configuration.",
    )
    parser.add_argument(
        "--no-webhook", action="store_true", help="Do not serve the Promotion webhook."
    )
    parser.add_argument(
        "--external-metrics",
        action="store_true",
        default=os.environ.get("KAIZEN_OPERATOR_EXTERNAL_METRICS", "") in ("1", "true"),
        help="Serve external.metrics.k8s.io (requestsPerSecond, latencyP95 and errorRate "
        "ScalingPolicies) on the webhook's HTTPS port and register its APIService.",
    )
    parser.add_argument(
        "--gateway-endpoints",
        type=Path,
        default=os.environ.get("KAIZEN_GATEWAY_ENDPOINTS"),
        help="JSON file (or folder of them) mapping <namespace>/<gateway> to a local URL, "
        "for clusters whose pods run no containers (kwok, make dev).",
    )
    parser.add_argument(
        "--allow-link-local-destinations",
        action="store_true",
        default=os.environ.get("KAIZEN_OPERATOR_ALLOW_LINK_LOCAL_DESTINATIONS", "")
        in ("1", "true"),
        help="Let Promotion webhooks and failure notifications call link-local and "
        "cloud-metadata addresses (169.254.0.0/16, fe80::/10, ...); refused by default.",
    )
    parser.add_argument(
        "--allow-link-local-upstreams",
        action="store_true",
        default=os.environ.get("KAIZEN_OPERATOR_ALLOW_LINK_LOCAL_UPSTREAMS", "") in ("1", "true"),
        help="Render gateway pods that may call link-local and cloud-metadata upstreams "
        f"(sets {ALLOW_LINK_LOCAL_ENV}=1 on them); refused by default.",
    )
    parser.add_argument(
        "--gateway-redis-secret",
        default=os.environ.get("KAIZEN_OPERATOR_GATEWAY_REDIS_SECRET") or None,
        help="Name of a Secret, in each Gateway's namespace, whose key 'url' is the Redis "
        f"URL of that namespace's gateway pods (as {REDIS_URL_ENV}; conversation memory and "
        "rate limits shared by replicas). Unset: gateways run without Redis.",
    )
    parser.add_argument(
        "--gateway-otlp-endpoint",
        type=otlp_endpoint,
        default=os.environ.get("KAIZEN_OPERATOR_GATEWAY_OTLP_ENDPOINT") or None,
        help="OTLP/HTTP collector URL gateway pods export their traces to (as "
        f"{OTLP_ENDPOINT_ENV}, e.g. http://otel-collector.observability.svc:4318). "
        "Unset: gateways record no traces.",
    )
    policy = parser.add_argument_group(
        "gateway policy", "What Gateways may ask for (chart gatewayPolicy; docs/security.md)."
    )
    policy.add_argument(
        "--gateway-allowed-images",
        type=_csv,
        default=_csv(os.environ.get("KAIZEN_OPERATOR_GATEWAY_ALLOWED_IMAGES", "")),
        help="Comma-separated image prefixes a Gateway's spec.image may start with "
        "(--gateway-image is always allowed). Default: none.",
    )
    policy.add_argument(
        "--gateway-max-replicas",
        type=int,
        default=int(os.environ.get("KAIZEN_OPERATOR_GATEWAY_MAX_REPLICAS", "20")),
        help="Most spec.replicas of a Gateway.",
    )
    policy.add_argument(
        "--gateway-max-resources",
        type=_pairs,
        default=_pairs(
            os.environ.get(
                "KAIZEN_OPERATOR_GATEWAY_MAX_RESOURCES", "cpu=4,memory=8Gi,ephemeral-storage=1Gi"
            )
        ),
        help="name=quantity,...: the resources a Gateway may request and the most of each.",
    )
    policy.add_argument(
        "--gateway-service-types",
        type=_csv,
        default=_csv(os.environ.get("KAIZEN_OPERATOR_GATEWAY_SERVICE_TYPES", "ClusterIP")),
        help="Service types a Gateway may ask for (ClusterIP, NodePort, LoadBalancer).",
    )
    policy.add_argument(
        "--gateway-ingress-hosts",
        type=_csv,
        default=_csv(os.environ.get("KAIZEN_OPERATOR_GATEWAY_INGRESS_HOSTS", "")),
        help="Host patterns for Ingress hosts and HTTPRoute host names ('*', "
        "'*.apps.example.com', '{namespace}.apps.example.com'). Default: none.",
    )
    policy.add_argument(
        "--gateway-ingress-classes",
        type=_csv,
        default=_csv(os.environ.get("KAIZEN_OPERATOR_GATEWAY_INGRESS_CLASSES", "")),
        help="IngressClass names an Ingress may name ('*': any). Default: only the default.",
    )
    policy.add_argument(
        "--gateway-ingress-namespaces",
        type=_csv,
        default=_csv(os.environ.get("KAIZEN_OPERATOR_GATEWAY_INGRESS_NAMESPACES", "")),
        help="Namespaces (the ingress controllers') whose pods may reach gateway pods.",
    )
    policy.add_argument(
        "--gateway-egress-allow",
        type=_json_list,
        default=_json_list(os.environ.get("KAIZEN_OPERATOR_GATEWAY_EGRESS_ALLOW", "[]")),
        help="JSON list of in-cluster destinations gateway pods may reach besides DNS: "
        '[{"cidr": "10.0.3.7/32", "ports": [6379]}, {"namespace": "otel", "ports": [4317]}].',
    )
    policy.add_argument(
        "--gateway-egress-deny",
        type=_csv,
        default=_csv(os.environ.get("KAIZEN_OPERATOR_GATEWAY_EGRESS_DENY", "")),
        help="Extra CIDRs gateway pods may not reach (public pod or service ranges).",
    )
    parser.add_argument("--log-format", choices=["json", "plain"], default="json")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.external_metrics and args.no_webhook:
        parser.error("--external-metrics is served on the webhook's HTTPS port: drop --no-webhook")
    return args


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf bookkeeping under our own prefix; our client; no log lines posted as Events."""
    settings.persistence.finalizer = "kaizen.studio/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kaizen.studio")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kaizen.studio", key="last-handled-configuration"
    )
    settings.posting.loggers = False  # Events are posted on purpose, with reasons
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    config: OperatorConfig = memo.operator_config
    kube = await Kube.connect(config.kubeconfig)
    kube.cache = ObjectCache()  # reconciles read watched kinds from memory (cache_feed)
    memo.runtime = Runtime(kube=kube, config=config)
    memo.resync = asyncio.create_task(resync_forever(memo.runtime))
    webhook: WebhookSettings | None = memo.webhook_settings
    memo.webhook_runner, memo.registration = None, []
    if webhook is None or webhook.cert_dir is not None:
        return  # none, or served by every replica (see serve_on_every_replica)
    auth = await load_request_header_auth(kube) if memo.external_metrics else None
    metrics_api = (
        ExternalMetrics(kube, config.gateway_endpoints, memo.runtime.scrapes, auth)
        if memo.external_metrics
        else None
    )
    memo.webhook_runner, ca_pem = await start_webhook(
        kube, webhook, metrics_api.routes() if metrics_api else (), auth.ca_pem if auth else None
    )
    if metrics_api is not None:
        service = webhook.service or local_metrics_service(webhook.name, webhook.listen_port)
        memo.registration = render_registration(ca_pem, service, local=webhook.service is None)
        for obj in memo.registration:
            await kube.apply(obj)


@kopf.on.cleanup()
async def close_client(memo: kopf.Memo, **_: Any) -> None:
    """Close the shared connection pool."""
    for obj in reversed(getattr(memo, "registration", [])):
        meta = obj["metadata"]
        await memo.runtime.kube.delete(
            obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"]
        )
    runner = getattr(memo, "webhook_runner", None)
    if runner is not None:
        await stop_webhook(memo.runtime.kube, memo.webhook_settings, runner)
    resync = getattr(memo, "resync", None)
    if resync is not None:
        resync.cancel()
    runtime = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.cancel_requests()
        await runtime.kube.close()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster ServiceAccount, else the kubeconfig given on the command line."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - comparison only


def webhook_settings(args: argparse.Namespace) -> WebhookSettings:
    """Where the Promotion webhook listens and how the apiserver reaches it."""
    host, port = args.webhook_listen.rsplit(":", 1)
    service = None
    dns: tuple[str, ...] = ("localhost",)
    if args.webhook_service:
        ref, svc_port = args.webhook_service.rsplit(":", 1)
        svc_ns, svc_name = ref.split("/", 1)
        service = (svc_ns, svc_name, int(svc_port))
        dns = (f"{svc_name}.{svc_ns}.svc", f"{svc_name}.{svc_ns}.svc.cluster.local")
    elif args.external_metrics:  # the aggregator checks the name of the local Service
        svc_ns, svc_name, _ = local_metrics_service(args.webhook_name, int(port))
        dns += (f"{svc_name}.{svc_ns}.svc",)
    selector: dict[str, Any] | None = None
    label = args.webhook_namespace_label
    if label and label.startswith("!"):
        selector = {"matchExpressions": [{"key": label[1:], "operator": "DoesNotExist"}]}
    elif label:
        key, value = label.split("=", 1)
        selector = {"matchLabels": {key: value}}
    return WebhookSettings(
        name=args.webhook_name,
        listen_host=host,
        listen_port=int(port),
        url=args.webhook_url or (None if service else f"https://{_loopback(host)}:{port}"),
        service=service,
        namespace_selector=selector,
        dns_names=dns,
        cert_dir=args.webhook_cert_dir,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the operator until SIGINT/SIGTERM."""
    args = parse_args(argv)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    kopf_fixes.apply()
    # Handlers register on import; importing here keeps `--help` fast.
    from kaizen_operator import cache_feed as _cache  # noqa: F401
    from kaizen_operator.agent import handlers as _agent  # noqa: F401
    from kaizen_operator.gateway import handlers as _gateway  # noqa: F401
    from kaizen_operator.pipeline import handlers as _pipeline  # noqa: F401
    from kaizen_operator.promotion import handlers as _promotion  # noqa: F401
    from kaizen_operator.scaling import handlers as _scaling  # noqa: F401

    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.health_address.rsplit(":", 1)[0])
    memo = kopf.Memo(
        operator_config=OperatorConfig(
            gateway_image=args.gateway_image,
            kubeconfig=args.kubeconfig,
            gateway_endpoints=args.gateway_endpoints,
            allow_link_local_destinations=args.allow_link_local_destinations,
            allow_link_local_upstreams=args.allow_link_local_upstreams,
            gateway_redis_secret=args.gateway_redis_secret,
            gateway_otlp_endpoint=args.gateway_otlp_endpoint,
            gateway_policy=gateway_policy(args),
            namespace=os.environ.get("POD_NAMESPACE") or None,
        ),
        webhook_settings=None if args.no_webhook else webhook_settings(args),
        external_metrics=args.external_metrics,
    )
    # Not uvloop (which `kopf run` would pick): when the apiserver was killed under it,
    # uvloop refused a new connection with "File descriptor N is used by transport" and
    # kopf's watchers died (tests/reliability/test_operator_faults.py).
    return asyncio.run(run(args, memo))


async def run(args: argparse.Namespace, memo: kopf.Memo) -> int:
    """kopf's operator loop; with --leader-elect, only while this replica leads."""
    stop = asyncio.Event()
    operator = functools.partial(
        kopf.operator,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=True,  # one actor is ensured by the Lease, not kopf peering
        liveness_endpoint=f"http://{args.health_address}/healthz",
        memo=memo,
        stop_flag=stop,
    )
    kube = await Kube.connect(args.kubeconfig)
    shared = await serve_on_every_replica(kube, memo)
    try:
        if not args.leader_elect:
            await operator()
            return 0
        return await lead_then_operate(args, kube, operator, stop)
    finally:
        if shared is not None:
            await shared.cleanup()
        await kube.close()


async def serve_on_every_replica(kube: Kube, memo: kopf.Memo) -> web.AppRunner | None:
    """With --webhook-cert-dir the webhook and metrics API are stateless HTTPS endpoints
    behind the operator's Service: every replica serves them, leader or not."""
    webhook: WebhookSettings | None = memo.webhook_settings
    if webhook is None or webhook.cert_dir is None:
        return None
    config: OperatorConfig = memo.operator_config
    auth = await load_request_header_auth(kube) if memo.external_metrics else None
    routes = (
        ExternalMetrics(kube, config.gateway_endpoints, ScrapeHistory(), auth).routes()
        if memo.external_metrics
        else []
    )
    runner, _ = await start_webhook(kube, webhook, routes, auth.ca_pem if auth else None)
    return runner


async def lead_then_operate(
    args: argparse.Namespace,
    kube: Kube,
    operator: Callable[[], Coroutine[Any, Any, None]],
    stop: asyncio.Event,
) -> int:
    """Stand by until this replica holds the Lease, then run kopf while it does."""
    identity = os.environ.get("KAIZEN_OPERATOR_IDENTITY") or f"{socket.gethostname()}_{os.getpid()}"
    lease_s = args.leader_election_lease_duration
    elector = LeaderElector(
        kube,
        LeaseSettings(
            namespace=args.leader_election_namespace,
            name=args.leader_election_id,
            identity=identity,
            lease_duration=lease_s,
            renew_deadline=lease_s * 2 / 3,
            retry_period=max(0.5, lease_s / 7.5),
        ),
    )
    standby = await serve_standby_health(args.health_address)
    try:
        await elector.acquire()
    finally:
        await standby.cleanup()
    reconciling = asyncio.create_task(operator())
    holding = asyncio.create_task(elector.hold())
    done, _ = await asyncio.wait({reconciling, holding}, return_when=asyncio.FIRST_COMPLETED)
    if holding in done:
        logging.getLogger("kaizen_operator").error(
            "leadership lost (%s); stopping so that only the new leader acts",
            holding.exception(),
        )
        stop.set()
        await reconciling
        return 1
    holding.cancel()
    await elector.release()
    reconciling.result()
    return 0


async def serve_standby_health(address: str) -> web.AppRunner:
    """/healthz for a standby replica (kopf serves it once this replica leads)."""
    host, port = address.rsplit(":", 1)

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(text="standby")

    app = web.Application()
    app.router.add_get("/healthz", healthy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(port), reuse_address=True).start()
    return runner


if __name__ == "__main__":
    sys.exit(main())
