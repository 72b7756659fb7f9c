"""The operator's admission webhook for Promotions: an HTTPS endpoint plus the
MutatingWebhookConfiguration that points the apiserver at it.

Run in a cluster, the apiserver reaches it through a Service; run as a local
process (tests, `make dev`), through a URL on 127.0.0.1. The serving certificate
is generated at start-up and its CA goes into the configuration's caBundle.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import logging
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kaizen_operator.kube import Kube
from kaizen_operator.promotion.approvals import review_promotion

log = logging.getLogger("kaizen_operator.webhook")
PATH = "/mutate-promotions"


@dataclass(frozen=True)
class WebhookSettings:
    """Where the webhook listens and how the apiserver reaches it."""

    name: str  # MutatingWebhookConfiguration name
    listen_host: str
    listen_port: int
    url: str | None  # e.g. https://127.0.0.1:9443 for a local process
    service: tuple[str, str, int] | None  # (namespace, name, port) inside a cluster
    namespace_selector: dict[str, Any] | None
    dns_names: tuple[str, ...] = ()
    # tls.crt/tls.key from a mounted Secret: every replica serves with it, and the
    # configuration (with the CA) is installed by the Helm chart, not by the operator.
    cert_dir: Path | None = None


def render_webhook_configuration(settings: WebhookSettings, ca_pem: bytes) -> dict[str, Any]:
    """The MutatingWebhookConfiguration for Promotions (pure)."""
    client_config: dict[str, Any] = {"caBundle": base64.b64encode(ca_pem).decode()}
    if settings.service:
        ns, name, port = settings.service
        client_config["service"] = {"namespace": ns, "name": name, "port": port, "path": PATH}
    else:
        client_config["url"] = f"{settings.url}{PATH}"
    webhook: dict[str, Any] = {
        "name": "promotions.kaizen.studio",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        # Approvals must carry an authenticated actor: no webhook, no Promotion changes.
        "failurePolicy": "Fail",
        "timeoutSeconds": 5,
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": ["kaizen.studio"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["promotions"],
                "scope": "Namespaced",
            }
        ],
    }
    if settings.namespace_selector:
        webhook["namespaceSelector"] = settings.namespace_selector
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": settings.name,
            "labels": {
                "app.kubernetes.io/managed-by": "kaizen-operator",
                "app.kubernetes.io/part-of": "kaizen-studio",
            },
        },
        "webhooks": [webhook],
    }


def _serving_certificate(
    dns_names: tuple[str, ...], ips: tuple[str, ...]
) -> tuple[bytes, bytes, bytes]:
    """A throwaway CA and a serving certificate signed by it: (ca_pem, cert_pem, key_pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kaizen-operator-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kaizen-operator-webhook")])
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


async def handle_review(request: web.Request) -> web.Response:
    """AdmissionReview in, AdmissionReview out."""
    review = await request.json()
    req = review.get("request") or {}
    decision = review_promotion(req, dt.datetime.now(dt.UTC))
    response: dict[str, Any] = {"uid": req.get("uid", ""), "allowed": decision.allowed}
    if not decision.allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": decision.message}
        log.info(
            "refused %s of promotion %s by %s: %s",
            req.get("operation"),
            (req.get("object") or {}).get("metadata", {}).get("name"),
            (req.get("userInfo") or {}).get("username"),
            decision.message,
        )
    elif decision.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(decision.patch).encode()).decode()
    return web.json_response(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
    )


async def start_webhook(
    kube: Kube,
    settings: WebhookSettings,
    routes: Sequence[web.RouteDef] = (),
    client_ca: str | None = None,
) -> tuple[web.AppRunner, bytes]:
    """Serve the webhook (and ``routes``, e.g. the external metrics API) over HTTPS and
    register the webhook with the apiserver; returns the runner and the CA (PEM).

    With ``client_ca`` (the front-proxy CA), a client certificate is asked for and, when
    one is sent, verified against it (the handshake fails otherwise); ``routes`` decide
    whether they need one. The apiserver calls the webhook without one."""
    if settings.cert_dir is not None:
        folder = settings.cert_dir
        ca_file = folder / "ca.crt"
        ca_pem = ca_file.read_bytes() if ca_file.exists() else b""
    else:
        ips = tuple(h for h in (settings.listen_host, "127.0.0.1") if _is_ip(h))
        ca_pem, cert_pem, key_pem = _serving_certificate(settings.dns_names or ("localhost",), ips)
        folder = Path(tempfile.mkdtemp(prefix="kaizen-webhook-"))
        (folder / "tls.crt").write_bytes(cert_pem)
        (folder / "tls.key").write_bytes(key_pem)
        (folder / "tls.key").chmod(0o600)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
    if client_ca:
        context.load_verify_locations(cadata=client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    app = web.Application()
    app.router.add_post(PATH, handle_review)
    app.router.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(
        runner, settings.listen_host, settings.listen_port, ssl_context=context
    ).start()
    if settings.cert_dir is None:
        kube.forget(
            "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", settings.name
        )
        await kube.apply(render_webhook_configuration(settings, ca_pem))
    log.info(
        "admission webhook %s serving on %s:%s",
        settings.name,
        settings.listen_host,
        settings.listen_port,
    )
    return runner, ca_pem


async def stop_webhook(kube: Kube, settings: WebhookSettings, runner: web.AppRunner) -> None:
    """Unregister what this process registered (so a stopped operator blocks nothing)
    and stop serving."""
    if settings.cert_dir is None:
        await kube.delete(
            "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", settings.name
        )
    await runner.cleanup()


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
