"""Entry point of ``kaizen-gateway``: serves agents over an OpenAI-compatible API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib.metadata import version
from pathlib import Path

import uvicorn

from kaizen_api.v1alpha1.bundle import (
    BUNDLE_FILE,
    BUNDLE_MOUNT,
    GATEWAY_PORT,
    KNOWLEDGE_MOUNT,
    SECRETS_MOUNT,
)
from kaizen_gateway import tracing
from kaizen_gateway.app import Gateway, GatewaySettings, build_app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags; the operator's pod template passes --bundle, --host and --port."""
    parser = argparse.ArgumentParser(
        prog="kaizen-gateway", description="Serve agents over an OpenAI-compatible API."
    )
    parser.add_argument("--version", action="version", version=version("kaizen-studio"))
    parser.add_argument(
        "--bundle", type=Path, default=Path(BUNDLE_MOUNT) / BUNDLE_FILE, help="Agent bundle (JSON)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=GATEWAY_PORT)
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        default=Path(SECRETS_MOUNT),
        help="Where Secrets are mounted (<secret>/<key> files).",
    )
    parser.add_argument(
        "--knowledge-dir",
        type=Path,
        default=Path(KNOWLEDGE_MOUNT),
        help="Where knowledge ConfigMaps are mounted (<configmap>/<key> files).",
    )
    parser.add_argument("--max-body-bytes", type=int, default=1_048_576)
    parser.add_argument(
        "--upstream-timeout", type=float, default=60.0, help="Seconds per upstream attempt."
    )
    parser.add_argument(
        "--upstream-retries", type=int, default=2, help="Retries on 429/5xx/network errors."
    )
    parser.add_argument(
        "--prices", type=Path, help='JSON {"model": [usd_per_1m_in, usd_per_1m_out]} overrides.'
    )
    parser.add_argument(
        "--allow-link-local-upstreams",
        action="store_true",
        default=os.environ.get("KAIZEN_GATEWAY_ALLOW_LINK_LOCAL", "") in ("1", "true"),
        help="Let providers' base URLs and http tools' URLs be link-local or cloud-metadata "
        "addresses (169.254.0.0/16, fe80::/10, ...); refused by default. Also "
        "KAIZEN_GATEWAY_ALLOW_LINK_LOCAL=1.",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("KAIZEN_REDIS_URL") or None,
        help="Redis for conversation memory and rate limits shared by all replicas "
        "(redis://[user:password@]host:port/db, rediss:// for TLS). Also KAIZEN_REDIS_URL. "
        "Without it memory is skipped and rate limits are per pod.",
    )
    parser.add_argument(
        "--redis-timeout",
        type=float,
        default=0.25,
        help="Seconds a Redis call may take before the fallback applies (memory skipped, "
        "per-pod rate limits).",
    )
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the gateway until SIGTERM."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format='{"level":"%(levelname)s","logger":"%(name)s","message":%(message)r}',
    )
    settings = GatewaySettings(
        bundle_path=args.bundle,
        secrets_dir=args.secrets_dir,
        knowledge_dir=args.knowledge_dir,
        max_body_bytes=args.max_body_bytes,
        upstream_timeout=args.upstream_timeout,
        upstream_retries=args.upstream_retries,
        allow_link_local=args.allow_link_local_upstreams,
        redis_url=args.redis_url,
        redis_timeout=args.redis_timeout,
    )
    if args.prices:
        settings.prices.update(
            {k: (float(v[0]), float(v[1])) for k, v in json.loads(args.prices.read_text()).items()}
        )
    tracing.configure()  # before the app is built: untraced handlers stay unwrapped
    app = build_app(Gateway(settings))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        # asyncio's own loop, as in the operator and the facade: uvloop measured no faster
        # here (bench/gateway_latency, same run) and has an open fd-reuse bug with aiohttp
        # client connections that are cancelled (MagicStack/uvloop#653).
        loop="asyncio",
        http="httptools",
        timeout_graceful_shutdown=20,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
