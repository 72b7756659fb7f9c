"""The facade's Kubernetes client: plain HTTP (urllib3) to the kube-apiserver, as the
facade itself (tenancy objects) or impersonating a caller (everything a caller asks).

Impersonation sends ``Impersonate-User`` and one ``Impersonate-Group`` header per
group (a comma-joined header would be one group with a comma in its name), so the
apiserver's RBAC decides every call a caller makes. ``arequest`` (the routes' calls)
runs on the event loop (an aiohttp session of kept-alive connections); ``request``
(urllib3, the official client's transport) serves synchronous callers: tenancy writes
and the CLI.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from multidict import CIMultiDict
from urllib3 import HTTPHeaderDict
from urllib3.util import parse_url
from yarl import URL

from kaizen_api.mounted import MountedFiles
from kaizen_api.server.guards import WorkspacePolicy
from kaizen_api.server.timing import kube_call

if TYPE_CHECKING:
    from kaizen_api.server.settings import Settings

FIELD_MANAGER = "kaizen-api"
TIMEOUT_SECONDS = 30.0
TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
TOKEN_MAX_AGE = 60.0  # seconds a read of the rotating in-cluster token is used
# Quota admission refuses every create a quota covers while the quota controller has
# taken the quota in but not counted a resource of it (a CRD it did not know yet; see
# workspaces.recount). Transient: the facade has it recounted and tries again.
QUOTA_PENDING = "status unknown for quota"


@dataclass(frozen=True)
class Caller:
    """Who a request is made as."""

    user: str
    groups: tuple[str, ...] = ()


class KubeError(Exception):
    """The apiserver refused (status, reason and its own message)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def quota_pending(self) -> bool:
        """The refusal only says the quota controller has not counted a quota yet."""
        return self.status == 403 and QUOTA_PENDING in self.message


class Kube:
    """One pooled connection to the apiserver, thread-safe (routes run in a pool)."""

    def __init__(
        self,
        kubeconfig: str | None = None,
        *,
        quota_wait_seconds: float = 30.0,
        workspace_policy: WorkspacePolicy | None = None,
        workspace_role: str = "",
        service_account: str = "",
        operator_secrets_role: str = "",
        operator_service_account: str = "",
    ) -> None:
        self.quota_wait_seconds = quota_wait_seconds  # see workspaces.wait_for_quota
        # What workspace namespaces get besides their bindings (see workspaces.sync_workspace).
        self.workspace_policy = workspace_policy or WorkspacePolicy()
        # What the facade binds to itself in each workspace namespace (see Settings).
        self.workspace_role, self.service_account = workspace_role, service_account
        # What the facade binds to the operator there (its only access to Secrets).
        self.operator_secrets_role = operator_secrets_role
        self.operator_service_account = operator_service_account
        cfg = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            self._token: Path | None = TOKEN_FILE
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
            self._token = None
        # A kubeconfig's token: "BearerToken" (kubernetes>=35), "authorization" before.
        self._auth = cfg.api_key.get("BearerToken") or cfg.api_key.get("authorization")
        self._files = MountedFiles(TOKEN_MAX_AGE)
        tls = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file:
            tls.load_cert_chain(cfg.cert_file, cfg.key_file)
        self._base = cfg.host.rstrip("/")
        self._http = urllib3.PoolManager(
            maxsize=32, block=False, ssl_context=tls, timeout=urllib3.Timeout(total=TIMEOUT_SECONDS)
        )
        self._tls = tls
        # Made on first use: an aiohttp session belongs to the running event loop.
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> Kube:
        """The client the facade's settings describe (the server and its CLI commands)."""
        return cls(
            settings.kubeconfig,
            quota_wait_seconds=settings.quota_wait_seconds,
            workspace_policy=settings.workspace_policy,
            workspace_role=settings.workspace_role,
            service_account=settings.service_account,
            operator_secrets_role=settings.operator_secrets_role,
            operator_service_account=settings.operator_service_account,
        )

    def _async_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, ssl=self._tls),
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
                auto_decompress=False,
            )
        return self._session

    def close(self) -> None:
        """Close the synchronous pool (see :meth:`aclose` for the event loop's)."""
        self._http.clear()

    async def aclose(self) -> None:
        """Close both pools."""
        self.close()
        if self._session is not None:
            await self._session.close()

    def _headers(self, caller: Caller | None, body: Any, content_type: str) -> HTTPHeaderDict:
        headers = HTTPHeaderDict({"accept": "application/json"})
        if body is not None:
            headers["content-type"] = content_type
        if caller is not None:
            headers["impersonate-user"] = caller.user
            for group in caller.groups:
                headers.add("impersonate-group", group)
        if self._token is not None:
            headers["authorization"] = f"Bearer {self._files.read(self._token)}"
        elif self._auth:
            headers["authorization"] = self._auth
        return headers

    def _url(self, path: str, params: dict[str, str] | None) -> str:
        url = self._base + path
        if params:
            url += "?" + urlencode(params)
        return url

    async def arequest(
        self,
        method: str,
        path: str,
        *,
        caller: Caller | None = None,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[dict[str, Any], bytes]:
        """One call on the event loop: the parsed answer and its bytes (to pass on
        unchanged); raises KubeError with the apiserver's status and message."""
        # One Impersonate-Group header per group: a multidict keeps the repeats.
        headers = CIMultiDict(self._headers(caller, body, content_type).iteritems())
        url = URL(parse_url(self._url(path, params)).url, encoded=True)  # as urllib3 encodes
        data = json.dumps(body).encode() if body is not None else None
        try:
            with kube_call():
                async with self._async_session().request(
                    method, url, headers=headers, data=data, allow_redirects=False
                ) as resp:
                    raw = await resp.read()
                    status, reason = resp.status, resp.reason or ""
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(502, "BadGateway", f"the apiserver is unreachable: {exc!r}") from exc
        return _answer(status, reason, raw), raw

    async def watch_lines(
        self, path: str, params: dict[str, str], timeout: float
    ) -> AsyncIterator[bytes]:
        """The lines of a watch as the facade itself (one JSON event each), for at most
        ``timeout`` seconds (the apiserver ends it at ``timeoutSeconds``)."""
        headers = CIMultiDict(self._headers(None, None, "").iteritems())
        url = URL(parse_url(self._url(path, params)).url, encoded=True)
        limit = aiohttp.ClientTimeout(total=timeout + 30)
        async with self._async_session().get(url, headers=headers, timeout=limit) as resp:
            if resp.status >= 400:
                _answer(resp.status, resp.reason or "", await resp.read())
            async for line in resp.content:
                yield line

    def request(
        self,
        method: str,
        path: str,
        *,
        caller: Caller | None = None,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One call; raises KubeError with the apiserver's status and message."""
        with kube_call():
            response = self._http.request(
                method,
                self._url(path, params),
                headers=self._headers(caller, body, content_type),
                body=json.dumps(body).encode() if body is not None else None,
                retries=False,
            )
        return _answer(response.status, response.reason or "", response.data)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as the facade itself (tenancy objects only)."""
        return self.request(
            "PATCH",
            object_path(obj),
            body=obj,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )

    def delete(self, path: str) -> None:
        try:
            self.request("DELETE", path, body={"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.status != 404:
                raise


def _answer(status: int, reason: str, raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(raw) if raw else {}
    if status >= 400:
        raise KubeError(
            status,
            str(data.get("reason") or reason),
            str(data.get("message") or raw[:500].decode(errors="replace")),
        )
    return data


PATHS = {
    ("v1", "Namespace"): "/api/v1/namespaces",
    ("v1", "ResourceQuota"): "/api/v1/namespaces/{ns}/resourcequotas",
    ("v1", "LimitRange"): "/api/v1/namespaces/{ns}/limitranges",
    ("networking.k8s.io/v1", "NetworkPolicy"): (
        "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"
    ),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): (
        "/apis/rbac.authorization.k8s.io/v1/clusterroles"
    ),
}


def object_path(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    base = PATHS[(obj["apiVersion"], obj["kind"])].format(ns=meta.get("namespace", ""))
    return f"{base}/{meta['name']}"


def kaizen_path(namespace: str, plural: str, name: str | None = None, sub: str = "") -> str:
    """The path of a kaizen.studio collection or object. ``name`` is percent-encoded
    (the routes admit DNS names only; this keeps any other out of the URL's structure)
    and a dot segment is refused."""
    path = f"/apis/kaizen.studio/v1alpha1/namespaces/{namespace}/{plural}"
    if name:
        if name in (".", ".."):
            raise ValueError(f"not a resource name: {name!r}")
        path += "/" + quote(name, safe="")
    if sub:
        path += f"/{sub}"
    return path
