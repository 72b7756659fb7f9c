"""Which destinations a Secret may be sent to: the guard against the confused deputy.

Developers may not read Secrets, yet a webhook's ``secretRef`` makes the operator read
one and send it as a bearer token to a URL the developer wrote. So a Secret reaches an
outbound URL only when an administrator paired them: the Secret's annotation
``kaizen.studio/allowed-destinations`` lists the URL prefixes it may be sent to
(comma-separated, e.g. ``https://hooks.example.com/kaizen, https://ci.internal:8443``).
Developers cannot write that annotation: they have no RBAC on Secrets. Pure.

The same rule holds for gateways: an Agent whose model ``endpoint`` or http tool
``url`` would receive an unpaired Secret is not served (the Gateway says why), and the
Secret is not mounted into its pods. Providers' own fixed hosts need no pairing.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from kaizen_api.netguard import DestinationNotAllowed, display_url, parse
from kaizen_api.v1alpha1.agent import AgentSpec

ALLOWED_DESTINATIONS = "kaizen.studio/allowed-destinations"
DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_and_path(url: str) -> tuple[str, str, int, str] | None:
    try:
        where = parse(url)  # scheme, and the host as the HTTP client will see it
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS[where.scheme]
    except (DestinationNotAllowed, ValueError, KeyError):
        return None
    return where.scheme, where.host, port, parts.path or "/"


def allowed_destinations(annotations: dict[str, str] | None) -> list[str]:
    """The URL prefixes an administrator allowed for a Secret."""
    raw = (annotations or {}).get(ALLOWED_DESTINATIONS, "")
    return [a.strip() for a in raw.split(",") if a.strip()]


def matches(prefix: str, url: str) -> bool:
    """Whether ``url`` lies under ``prefix``: same scheme, host and port, and a path
    that is the prefix's or below it (``/a`` covers ``/a`` and ``/a/b``, not ``/ab``)."""
    want, got = _origin_and_path(prefix), _origin_and_path(url)
    if want is None or got is None or want[:3] != got[:3]:
        return False
    base, path = want[3].rstrip("/"), got[3]
    return not base or path == base or path.startswith(base + "/")


def pairing_refusal(secret: str, annotations: dict[str, str] | None, url: str) -> str | None:
    """Why Secret ``secret`` may not be sent to ``url`` (None: an administrator allowed it)."""
    allowed = allowed_destinations(annotations)
    if any(matches(prefix, url) for prefix in allowed):
        return None
    return (
        f"Secret {secret!r} is not paired with {display_url(url)} (an administrator pairs a "
        f"Secret with the URLs it may be sent to in its annotation {ALLOWED_DESTINATIONS}; "
        f"allowed now: {', '.join(allowed) or 'none'})"
    )


def agent_refusals(
    spec: AgentSpec, annotations_of: Mapping[str, Mapping[str, str] | None]
) -> list[str]:
    """Why a gateway may not send an Agent's Secrets where its spec points them: the
    model's credentials to a custom ``endpoint``, an http tool's headers to its ``url``
    (a provider's own fixed host needs no pairing). ``annotations_of`` maps each Secret
    the spec names to its annotations (absent: the Secret does not exist, so nothing
    can leak). Pure."""
    uses: list[tuple[str, str, str]] = []  # (what, secret, url)
    model = spec.model
    if model.credentials_secret_ref and model.endpoint:
        uses.append(("spec.model.endpoint", model.credentials_secret_ref.name, model.endpoint))
    for tool in spec.tools or []:
        if tool.http and tool.http.headers_secret_ref:
            what = f"tool {tool.name} url"
            uses.append((what, tool.http.headers_secret_ref.name, tool.http.url))
    refusals = []
    for what, secret, url in uses:
        if secret not in annotations_of:
            continue
        refused = pairing_refusal(secret, dict(annotations_of[secret] or {}), url)
        if refused:
            refusals.append(f"{what}: {refused}")
    return refusals


def secrets_sent(spec: AgentSpec) -> set[str]:
    """The Secrets an Agent's spec sends to URLs it chooses (see agent_refusals)."""
    found = set()
    if spec.model.credentials_secret_ref and spec.model.endpoint:
        found.add(spec.model.credentials_secret_ref.name)
    for tool in spec.tools or []:
        if tool.http and tool.http.headers_secret_ref:
            found.add(tool.http.headers_secret_ref.name)
    return found
