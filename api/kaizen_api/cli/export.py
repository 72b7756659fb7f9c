"""``kaizen export``: the Kaizen Studio objects of one or every namespace as clean,
re-appliable YAML (what the server set is stripped), for backups and moves.

Reads Kubernetes directly with the kubeconfig's rights (like ``--kube``): a backup is
an administrator's job and covers namespaces no facade user sees. Restore with
``kubectl apply -f DIR`` (see docs/backup-restore.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError

from kaizen_api.cli.__main__ import app
from kaizen_api.cli.backends import KINDS, CLIError
from kaizen_api.cli.commands import console, fail
from kaizen_api.v1alpha1.gateway import GatewaySpec, RevisionPolicy, promoted_revisions
from kaizen_api.v1alpha1.promotion import TERMINAL_PHASES

GROUP, VERSION = "kaizen.studio", "v1alpha1"
WORKSPACE_LABEL = "kaizen.studio/workspace"  # namespaces the facade made
# kind -> the label on its ControllerRevisions naming their owner
REVISION_LABELS = {"Agent": "kaizen.studio/agent", "Pipeline": "kaizen.studio/pipeline"}
# Set by the apiserver (or by controllers) for the object that exists now; a new
# object gets its own.
SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "managedFields",
    "creationTimestamp",
    "generation",
    "ownerReferences",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "finalizers",
)
DROPPED_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    # The operator's (kopf's) bookkeeping of what it handled: restored with the object,
    # it would make the operator take the new object for one it had already handled and
    # skip its creation until the next periodic resync.
    "kaizen.studio/last-handled-configuration",
    "kaizen.studio/kopf-managed",
)
DROPPED_LABELS = ("kubernetes.io/metadata.name",)


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as one would apply it: apiVersion, kind, metadata (name, namespace,
    labels, annotations) and the rest of its content, without status or server fields."""
    meta = dict(obj.get("metadata") or {})
    for name in SERVER_FIELDS:
        meta.pop(name, None)
    for key, dropped in (("annotations", DROPPED_ANNOTATIONS), ("labels", DROPPED_LABELS)):
        values = {k: v for k, v in (meta.get(key) or {}).items() if k not in dropped}
        if values:
            meta[key] = values
        else:
            meta.pop(key, None)
    out = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    out["metadata"] = {k: v for k, v in meta.items() if v not in (None, "", {}, [])}
    ordered: dict[str, Any] = {
        k: out.pop(k) for k in ("apiVersion", "kind", "metadata") if k in out
    }
    return {**ordered, **out}


def clean_namespace(ns: dict[str, Any]) -> dict[str, Any]:
    """A Namespace with its name, labels and annotations only (its spec is the
    apiserver's finalizers list)."""
    return clean({"apiVersion": "v1", "kind": "Namespace", "metadata": ns["metadata"]})


def ended(promotion: dict[str, Any]) -> bool:
    """Whether a Promotion is over: history, not desired state. Re-applied without its
    status it would run again, so it is not exported by default."""
    return (promotion.get("status") or {}).get("phase") in TERMINAL_PHASES


def with_promoted_state(obj: dict[str, Any], cleaned: dict[str, Any]) -> dict[str, Any]:
    """Gateways: what Promotions made them serve, in ``spec.promotedRevisions`` (a
    Gateway promoted before that field existed has it only in its status)."""
    spec = obj.get("spec") or {}
    if obj.get("kind") != "Gateway" or "promotedRevisions" in spec:
        return cleaned
    promoted = list(promoted_revisions(obj).values())
    try:
        policy = GatewaySpec.model_validate(spec).effective_revision_policy()
    except ValidationError:  # exported as it is; the apiserver will say what is wrong
        return cleaned
    if not promoted or policy != RevisionPolicy.PROMOTED:
        return cleaned
    return {**cleaned, "spec": {**cleaned["spec"], "promotedRevisions": promoted}}


def secret_names(obj: dict[str, Any]) -> set[str]:
    """Names of the Secrets an object refers to (any ``*SecretRef`` / ``secretRef``)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key.lower().endswith("secretref") and isinstance(inner, dict):
                    if isinstance(inner.get("name"), str):
                        found.add(inner["name"])
                else:
                    walk(inner)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(obj.get("spec") or {})
    return found


@dataclass
class NamespaceExport:
    """What one namespace contributes to the export."""

    namespace: dict[str, Any] | None
    objects: list[dict[str, Any]] = field(default_factory=list)  # re-appliable, in order
    history: list[dict[str, Any]] = field(default_factory=list)  # ended Promotions
    secrets: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # ended Promotions left out

    def documents(self) -> list[dict[str, Any]]:
        return ([self.namespace] if self.namespace else []) + self.objects


def dump(docs: Iterable[dict[str, Any]], header: str = "") -> str:
    body = "".join("---\n" + yaml.safe_dump(d, sort_keys=False) for d in docs)
    return header + body


class Cluster:
    """The few reads the export makes (JSON as the apiserver sends it)."""

    def __init__(self, kubeconfig: str | None) -> None:
        from kubernetes import client, config

        self.api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self._exception = client.ApiException
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self.default_namespace = context["context"].get("namespace") or "default"

    def _json(self, call: Any, *args: Any, **kw: Any) -> Any:
        try:
            response = call(*args, _preload_content=False, **kw)
        except self._exception as exc:
            raise CLIError(f"{exc.status} {exc.reason}") from exc
        return json.loads(response.data)

    def objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            kw: dict[str, Any] = {"limit": 500, **({"_continue": token} if token else {})}
            if namespace is None:
                page = self._json(
                    self.custom.list_cluster_custom_object, GROUP, VERSION, plural, **kw
                )
            else:
                page = self._json(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    plural,
                    **kw,
                )
            items += page.get("items", [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _found(self, call: Any, *args: Any) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        try:
            found: dict[str, Any] = self._json(call, *args)
        except CLIError as exc:
            if str(exc).startswith("404"):
                return None
            raise
        return found

    def namespace(self, name: str) -> dict[str, Any] | None:
        return self._found(self.core.read_namespace, name)

    def workspace_namespaces(self) -> list[str]:
        page = self._json(self.core.list_namespace, label_selector=WORKSPACE_LABEL)
        return [ns["metadata"]["name"] for ns in page.get("items", [])]

    def revisions(
        self, namespace: str, agent: dict[str, Any], kind: str = "Agent"
    ) -> list[dict[str, Any]]:
        """The ControllerRevisions an Agent (or Pipeline) owns (its revision history)."""
        from kubernetes import client

        apps = client.AppsV1Api(self.api)
        page = self._json(
            apps.list_namespaced_controller_revision,
            namespace,
            label_selector=f"{REVISION_LABELS[kind]}={agent['name']}",
        )
        owned = [
            r
            for r in page.get("items", [])
            if any(
                o.get("uid") == agent.get("uid") for o in r["metadata"].get("ownerReferences") or []
            )
        ]
        # Items of a list carry no apiVersion/kind of their own.
        typed = [{"apiVersion": "apps/v1", "kind": "ControllerRevision", **r} for r in owned]
        return sorted(typed, key=lambda r: int(r.get("revision", 0)))

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._found(self.core.read_namespaced_secret, name, namespace)


def collect(
    cluster: Cluster,
    namespace: str | None,
    *,
    include_ended: bool = False,
    include_secrets: bool = False,
) -> dict[str, NamespaceExport]:
    """The export of ``namespace`` (None: every namespace with Kaizen objects, and every
    workspace namespace of the facade), by namespace name."""
    by_ns: dict[str, list[dict[str, Any]]] = {}
    # agents, pipelines, gateways, scalingpolicies, promotions: apply order
    for plural in KINDS:
        for obj in cluster.objects(plural, namespace):
            by_ns.setdefault(obj["metadata"]["namespace"], []).append(obj)
    names = set(by_ns) | ({namespace} if namespace else set(cluster.workspace_namespaces()))
    out: dict[str, NamespaceExport] = {}
    for name in sorted(names):
        ns = cluster.namespace(name)
        export = NamespaceExport(clean_namespace(ns) if ns else None)
        refs: set[str] = set()
        for obj in by_ns.get(name, []):
            if obj.get("kind") == "Promotion" and ended(obj):
                if include_ended:
                    export.history.append(obj)  # whole, status included: it is a record
                else:
                    export.skipped += 1
                continue
            if obj.get("kind") in REVISION_LABELS:
                # Before their owner: applied first, they are adopted, not made anew.
                export.objects += [
                    clean(r) for r in cluster.revisions(name, obj["metadata"], obj["kind"])
                ]
            export.objects.append(with_promoted_state(obj, clean(obj)))
            refs |= secret_names(obj)
        if include_secrets:
            for secret_name in sorted(refs):
                secret = cluster.secret(name, secret_name)
                if secret is not None:
                    export.secrets.append(clean(secret))
        out[name] = export
    return out


def write_folder(exports: dict[str, NamespaceExport], folder: Path, header: str) -> list[Path]:
    """``<ns>.yaml`` per namespace (what ``kubectl apply -f DIR`` restores), ended
    Promotions in ``history/``, Secrets in ``secrets/`` (mode 0600): neither is applied
    by ``kubectl apply -f DIR`` (no ``-R``)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, export in exports.items():
        path = folder / f"{name}.yaml"
        path.write_text(dump(export.documents(), header))
        written.append(path)
        if export.history:
            path = folder / "history" / f"{name}.promotions.yaml"
            path.parent.mkdir(exist_ok=True)
            note = "# Ended Promotions as they were: a record (applied, they would run again)\n"
            path.write_text(dump(export.history, header + note))
            written.append(path)
        if export.secrets:
            secrets = folder / "secrets"
            secrets.mkdir(mode=0o700, exist_ok=True)
            path = secrets / f"{name}.yaml"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(dump(export.secrets, header + "# Secret values: keep this file safe\n"))
            written.append(path)
    return written


@app.command("export")
def export_command(
    ctx: typer.Context,
    namespace: str | None = typer.Option(
        None, "-n", "--namespace", help="Namespace to export (default: the context's)."
    ),
    all_namespaces: bool = typer.Option(
        False, "-A", "--all-namespaces", help="Every namespace with Kaizen Studio objects."
    ),
    output: str = typer.Option("-", "-o", "--output", help="Folder to write, or - for stdout."),
    include_ended: bool = typer.Option(
        False,
        "--include-ended",
        help="Also keep ended Promotions (as a record, in DIR/history/; needs -o DIR).",
    ),
    include_secrets: bool = typer.Option(
        False,
        "--include-secrets",
        help="Also the Secrets the objects refer to (values included, DIR/secrets/, mode 0600).",
    ),
) -> None:
    """Agents, Pipelines, Gateways, ScalingPolicies and in-flight Promotions as clean YAML to
    re-apply (kubectl apply -f): status and server-set fields are stripped; each
    namespace comes first with its labels. Reads Kubernetes with the kubeconfig."""
    root = ctx.find_root().obj or {}
    if all_namespaces and namespace:
        fail("pass --namespace or --all-namespaces, not both")
    if output == "-" and (include_ended or include_secrets):
        fail("--include-ended and --include-secrets need -o DIR (kept apart from what is applied)")
    try:
        cluster = Cluster(root.get("kubeconfig"))
        target = (
            None
            if all_namespaces
            else namespace or root.get("namespace") or cluster.default_namespace
        )
        exports = collect(
            cluster, target, include_ended=include_ended, include_secrets=include_secrets
        )
    except CLIError as exc:
        fail(str(exc))
    except Exception as exc:  # kubeconfig missing or unreadable, apiserver away
        fail(f"cannot read Kubernetes: {exc}")
    header = "# kaizen export: apply with `kubectl apply -f` (docs/backup-restore.md)\n"
    if output == "-":
        typer.echo(dump([d for e in exports.values() for d in e.documents()], header), nl=False)
        return
    written = write_folder(exports, Path(output), header)
    objects = sum(len(e.objects) for e in exports.values())
    kept = sum(len(e.history) for e in exports.values())
    skipped = sum(e.skipped for e in exports.values())
    console.print(
        f"exported {objects} object(s) from {len(exports)} namespace(s) to {output}/ "
        f"({len(written)} file(s))"
        + (f"; {kept} ended promotion(s) in history/" if kept else "")
        + (f"; {skipped} ended promotion(s) left out (--include-ended)" if skipped else "")
    )
