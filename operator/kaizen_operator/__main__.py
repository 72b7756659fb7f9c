"""Entry point of ``kaizen-operator``: reconciles Kaizen Studio's custom resources."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from importlib.metadata import version
from typing import Any

import kopf
from prometheus_client import start_http_server

from kaizen_operator.kube import Kube
from kaizen_operator.resync import resync_forever
from kaizen_operator.runtime import OperatorConfig, Runtime

DEFAULT_IMAGE = f"ghcr.io/kaizen-studio/kaizen-studio:{version('kaizen-studio')}"


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
        "--peering",
        default=os.environ.get("KAIZEN_OPERATOR_PEERING"),
        help="kopf peering name: replicas sharing it elect one active operator. "
        "Without it the operator runs standalone.",
    )
    parser.add_argument(
        "--gateway-image",
        default=os.environ.get("KAIZEN_GATEWAY_IMAGE", DEFAULT_IMAGE),
        help="Image of gateway pods when a Gateway sets none.",
    )
    parser.add_argument("--log-format", choices=["json", "plain"], default="json")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


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
    memo.runtime = Runtime(kube=await Kube.connect(config.kubeconfig), config=config)
    memo.resync = asyncio.create_task(resync_forever(memo.runtime))


@kopf.on.cleanup()
async def close_client(memo: kopf.Memo, **_: Any) -> None:
    """Close the shared connection pool."""
    resync = getattr(memo, "resync", None)
    if resync is not None:
        resync.cancel()
    runtime = getattr(memo, "runtime", None)
    if runtime is not None:
        await runtime.kube.close()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster ServiceAccount, else the kubeconfig given on the command line."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


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
    # Handlers register on import; importing here keeps `--help` fast.
    from kaizen_operator.agent import handlers as _agent  # noqa: F401
    from kaizen_operator.gateway import handlers as _gateway  # noqa: F401
    from kaizen_operator.scaling import handlers as _scaling  # noqa: F401

    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.health_address.rsplit(":", 1)[0])
    memo = kopf.Memo(
        operator_config=OperatorConfig(gateway_image=args.gateway_image, kubeconfig=args.kubeconfig)
    )
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=args.peering is None,
            peering_name=args.peering,
            liveness_endpoint=f"http://{args.health_address}/healthz",
            memo=memo,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
