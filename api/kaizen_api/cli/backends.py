"""Where the ``kaizen`` CLI sends its calls: the REST facade (default, after
``kaizen login``) or the Kubernetes API directly (``--kube``, the kubeconfig's user).
Both speak the same small interface, so each command is written once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

KINDS = {
    "agents": "Agent",
    "pipelines": "Pipeline",
    "gateways": "Gateway",
    "scalingpolicies": "ScalingPolicy",
    "promotions": "Promotion",
}


class CLIError(Exception):
    """A failure worth one clear line (the server's message), not a traceback."""


def credentials_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(os.environ.get("KAIZEN_CREDENTIALS", Path(base) / "kaizen" / "credentials.json"))


class Backend(Protocol):
    def list(self, plural: str) -> list[dict[str, Any]]: ...
    def get(self, plural: str, name: str) -> dict[str, Any]: ...
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...
    def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...
    def decide(self, promotion: str, approve: bool, reason: str) -> dict[str, Any]: ...
    def override(self, policy: str, override: dict[str, Any] | None) -> dict[str, Any]: ...


class FacadeBackend:
    """The REST facade, as the logged-in user (token from ``kaizen login``)."""

    def __init__(self, url: str, token: str, org: str, workspace: str) -> None:
        import httpx

        self.org = org
        self.base = f"/orgs/{org}/workspaces/{workspace}"
        self.http = httpx.Client(
            base_url=url.rstrip("/") + "/api/v1",
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        )

    @classmethod
    def from_credentials(
        cls, org: str | None, workspace: str | None, *, need_workspace: bool = True
    ) -> FacadeBackend:
        path = credentials_file()
        if not path.exists():
            raise CLIError("not logged in: run `kaizen login` (or use --kube)")
        saved = json.loads(path.read_text())
        org, workspace = org or saved.get("org"), workspace or saved.get("workspace")
        if not org:
            raise CLIError("which organization? pass --org (or set it at login)")
        if need_workspace and not workspace:
            raise CLIError("which workspace? pass --org and --workspace (or set them at login)")
        return cls(saved["url"], saved["access_token"], org, workspace or "")

    def org_call(self, method: str, path: str, **kw: Any) -> Any:
        """A call on the organization (``/orgs/<org><path>``), e.g. its policies."""
        return self._call(method, path, root=f"/orgs/{self.org}", **kw)

    def _call(self, method: str, path: str, root: str | None = None, **kw: Any) -> Any:
        response = self.http.request(method, (self.base if root is None else root) + path, **kw)
        if response.status_code >= 400:
            try:
                body = response.json()
                message = f"{body.get('title', '')}: {body.get('detail', '')}".strip(": ")
                # Field errors (invalid resources) name the field: say which.
                fields = [f"{e.get('field')}: {e.get('message')}" for e in body.get("errors") or []]
                if fields:
                    message += " (" + "; ".join(fields) + ")"
            except ValueError:
                message = response.text[:300]
            raise CLIError(f"{response.status_code} {message}")
        return response.json() if response.content else {}

    def list(self, plural: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            params = {"limit": 500, **({"continue": token} if token else {})}
            page = self._call("GET", f"/{plural}", params=params)
            items += page["items"]
            token = page.get("continue")
            if not token:
                return items

    def get(self, plural: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", f"/{plural}/{name}")
        return found

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        plural = next(p for p, k in KINDS.items() if k == obj["kind"])
        created: dict[str, Any] = self._call("POST", f"/{plural}", json=obj)
        return created

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        plural = next(p for p, k in KINDS.items() if k == obj["kind"])
        name = obj["metadata"]["name"]
        try:
            current = self.get(plural, name)
        except CLIError as exc:
            if not str(exc).startswith("404"):
                raise
            return self.create(obj)
        desired = {
            **obj,
            "metadata": {
                **obj["metadata"],
                "resourceVersion": current["metadata"]["resourceVersion"],
            },
        }
        replaced: dict[str, Any] = self._call("PUT", f"/{plural}/{name}", json=desired)
        return replaced

    def decide(self, promotion: str, approve: bool, reason: str) -> dict[str, Any]:
        verb = "approve" if approve else "reject"
        decided: dict[str, Any] = self._call(
            "POST", f"/promotions/{promotion}/{verb}", json={"reason": reason}
        )
        return decided

    def override(self, policy: str, override: dict[str, Any] | None) -> dict[str, Any]:
        path = f"/scalingpolicies/{policy}/override"
        if override is None:
            cleared: dict[str, Any] = self._call("DELETE", path)
            return cleared
        set_: dict[str, Any] = self._call("PUT", path, json=override)
        return set_


class KubeBackend:
    """The Kubernetes API directly, as the kubeconfig's user (kubectl's rights)."""

    def __init__(self, namespace: str | None, kubeconfig: str | None = None) -> None:
        from kubernetes import client, config

        config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self.namespace = namespace or context["context"].get("namespace") or "default"
        self.api = client.CustomObjectsApi()
        self._exception = client.ApiException

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn("kaizen.studio", "v1alpha1", self.namespace, *args, **kw)
        except self._exception as exc:
            try:
                message = json.loads(exc.body or "{}").get("message", exc.reason)
            except (TypeError, ValueError):
                message = exc.reason
            raise CLIError(f"{exc.status} {message}") from exc

    def list(self, plural: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call(self.api.list_namespaced_custom_object, plural)[
            "items"
        ]
        return items

    def get(self, plural: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call(self.api.get_namespaced_custom_object, plural, name)
        return found

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        plural = next(p for p, k in KINDS.items() if k == obj["kind"])
        created: dict[str, Any] = self._call(self.api.create_namespaced_custom_object, plural, obj)
        return created

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        plural = next(p for p, k in KINDS.items() if k == obj["kind"])
        applied: dict[str, Any] = self._call(
            self.api.patch_namespaced_custom_object,
            plural,
            obj["metadata"]["name"],
            obj,
            field_manager="kaizen-cli",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        return applied

    def decide(self, promotion: str, approve: bool, reason: str) -> dict[str, Any]:
        key = "kaizen.studio/approve" if approve else "kaizen.studio/reject"
        patch = {"metadata": {"annotations": {key: reason}}}
        decided: dict[str, Any] = self._call(
            self.api.patch_namespaced_custom_object, "promotions", promotion, patch
        )
        return decided

    def override(self, policy: str, override: dict[str, Any] | None) -> dict[str, Any]:
        patch = {"spec": {"override": override}}
        changed: dict[str, Any] = self._call(
            self.api.patch_namespaced_custom_object, "scalingpolicies", policy, patch
        )
        return changed
