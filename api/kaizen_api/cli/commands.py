"""``kaizen login``, ``agents``, ``promote``, ``approve``/``reject``, ``scale``, ``status``:
the everyday commands, on the facade or (``--kube``) on Kubernetes directly."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.table import Table

from kaizen_api.cli.__main__ import app
from kaizen_api.cli.backends import (
    KINDS,
    Backend,
    CLIError,
    FacadeBackend,
    KubeBackend,
    credentials_file,
)

console = Console()
agents_app = typer.Typer(help="Agents: list, get, apply.", no_args_is_help=True)
scale_app = typer.Typer(help="Manual control of a ScalingPolicy.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
app.add_typer(scale_app, name="scale")
TERMINAL = {"Succeeded", "Failed", "Rejected", "Aborted", "Errored"}


def backend(ctx: typer.Context) -> Backend:
    opts = ctx.find_root().obj or {}
    try:
        if opts.get("kube"):
            return KubeBackend(opts.get("namespace"), opts.get("kubeconfig"))
        return FacadeBackend.from_credentials(opts.get("org"), opts.get("workspace"))
    except CLIError as exc:
        return fail(str(exc))


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def condition(obj: dict[str, Any], kind: str = "Ready") -> dict[str, Any]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c.get("type") == kind), {})


def ready_text(obj: dict[str, Any]) -> str:
    ready = condition(obj)
    if ready.get("status") == "True":
        return "[green]Ready[/green]"
    return f"[yellow]{ready.get('reason') or 'Pending'}[/yellow]"


@app.command()
def login(
    url: str = typer.Option("http://127.0.0.1:18000", help="The facade's URL."),
    email: str = typer.Option(..., prompt=True),
    password: str = typer.Option(..., prompt=True, hide_input=True),
    org: str | None = typer.Option(None, help="Default organization for later commands."),
    workspace: str | None = typer.Option(None, help="Default workspace."),
) -> None:
    """Log in to the REST facade; the tokens are kept in ~/.config/kaizen (mode 0600)."""
    import httpx

    try:
        response = httpx.post(
            url.rstrip("/") + "/api/v1/auth/login",
            json={"email": email, "password": password},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {exc}")
    if response.status_code != 200:
        fail(f"login refused ({response.status_code}): {response.json().get('title', '')}")
    tokens = response.json()
    path = credentials_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    saved = {"url": url, **tokens, "org": org, "workspace": workspace}
    path.touch(mode=0o600)
    path.write_text(json.dumps(saved))
    path.chmod(0o600)
    console.print(f"logged in to {url} as {email}" + (f" ({org}/{workspace})" if org else ""))


@agents_app.command("list")
def agents_list(ctx: typer.Context) -> None:
    """Agents with their latest revision and readiness."""
    table = Table("NAME", "PROVIDER", "MODEL", "REVISION", "READY")
    try:
        agents = backend(ctx).list("agents")
    except CLIError as exc:
        fail(str(exc))
    for agent in sorted(agents, key=lambda a: a["metadata"]["name"]):
        model = agent["spec"].get("model") or {}
        table.add_row(
            agent["metadata"]["name"],
            model.get("provider", ""),
            model.get("name", ""),
            str((agent.get("status") or {}).get("latestRevision") or "-"),
            ready_text(agent),
        )
    console.print(table)


@agents_app.command("get")
def agents_get(
    ctx: typer.Context,
    name: str,
    output: str = typer.Option("yaml", "-o", "--output", help="yaml or json"),
) -> None:
    """One Agent, whole."""
    try:
        agent = backend(ctx).get("agents", name)
    except CLIError as exc:
        fail(str(exc))
    typer.echo(json.dumps(agent, indent=2) if output == "json" else yaml.safe_dump(agent))


@agents_app.command("apply")
def agents_apply(
    ctx: typer.Context,
    file: Path = typer.Option(..., "-f", "--file", exists=True, dir_okay=False),  # noqa: B008
) -> None:
    """Create or update the Kaizen Studio objects in a YAML file (any of the five kinds)."""
    apply_file(ctx, file)


def apply_file(ctx: typer.Context, file: Path) -> None:
    """Create or update every Kaizen Studio object of ``file``, in its order."""
    target = backend(ctx)
    docs = [d for d in yaml.safe_load_all(file.read_text()) if d]
    for doc in docs:
        if doc.get("kind") not in KINDS.values():
            fail(f"{doc.get('kind')!r} is not a Kaizen Studio kind")
        doc.setdefault("apiVersion", "kaizen.studio/v1alpha1")
        doc.get("metadata", {}).pop("namespace", None)
        try:
            target.apply(doc)
        except CLIError as exc:
            fail(f"{doc['kind']} {doc['metadata']['name']}: {exc}")
        console.print(f"{doc['kind'].lower()}/{doc['metadata']['name']} applied")


@app.command()
def promote(
    ctx: typer.Context,
    agent: str,
    to: str = typer.Option(..., "--to", help="Target Gateway (e.g. staging)."),
    source: str = typer.Option("dev", "--from", help="Source Gateway."),
    revision: int | None = typer.Option(None, help="Default: the agent's latest revision."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the Promotion ends."),
    timeout: int = typer.Option(600, help="Seconds to wait with --wait."),
) -> None:
    """Promote an agent revision from one Gateway to another (a Promotion object)."""
    target = backend(ctx)
    try:
        if revision is None:
            revision = (target.get("agents", agent).get("status") or {}).get("latestRevision")
            if revision is None:
                fail(f"agent {agent} has no revision yet")
        name = f"{agent}-r{revision}-to-{to}-{int(time.time()) % 100000}"
        target.create(
            {
                "apiVersion": "kaizen.studio/v1alpha1",
                "kind": "Promotion",
                "metadata": {"name": name},
                "spec": {
                    "agentRef": {"name": agent},
                    "revision": revision,
                    "from": source,
                    "to": to,
                },
            }
        )
    except CLIError as exc:
        fail(str(exc))
    console.print(f"promotion/{name} created: {agent} revision {revision}, {source} -> {to}")
    if wait:
        raise typer.Exit(wait_for_promotion(target, name, timeout))


def wait_for_promotion(target: Backend, name: str, timeout: int) -> int:
    """Show the phase until the Promotion ends; exit status 0 only when it succeeded."""
    deadline = time.monotonic() + timeout
    phase, message = "Pending", ""
    with console.status(f"promotion/{name}: {phase}") as status:
        while time.monotonic() < deadline:
            body = target.get("promotions", name).get("status") or {}
            phase, message = body.get("phase") or "Pending", body.get("message") or ""
            status.update(f"promotion/{name}: {phase} {message}")
            if phase in TERMINAL:
                break
            time.sleep(1)
    color = "green" if phase == "Succeeded" else "red" if phase in TERMINAL else "yellow"
    console.print(f"promotion/{name}: [{color}]{phase}[/{color}] {message}")
    return 0 if phase == "Succeeded" else 1


def _decide(ctx: typer.Context, promotion: str, approve: bool, reason: str) -> None:
    try:
        backend(ctx).decide(promotion, approve, reason)
    except CLIError as exc:
        fail(str(exc))
    console.print(f"promotion/{promotion} {'approved' if approve else 'rejected'}")


@app.command()
def approve(
    ctx: typer.Context, promotion: str, reason: str = typer.Option("approved", "--reason")
) -> None:
    """Approve a Promotion as yourself (the operator records who)."""
    _decide(ctx, promotion, True, reason)


@app.command()
def reject(ctx: typer.Context, promotion: str, reason: str = typer.Option(..., "--reason")) -> None:
    """Reject a Promotion, with a reason."""
    _decide(ctx, promotion, False, reason)


@scale_app.command("override")
def scale_override(
    ctx: typer.Context,
    policy: str,
    mode: str = typer.Option(..., help="Pin, FreezeScaleDown or FreezeScaleUp"),
    replicas: int | None = typer.Option(None, help="With Pin."),
    expires_in: int | None = typer.Option(None, help="Minutes until the override ends."),
    reason: str = typer.Option("set with the kaizen CLI"),
) -> None:
    """Pin or freeze a ScalingPolicy's autoscaler (optionally for a while)."""
    override: dict[str, Any] = {"mode": mode, "reason": reason}
    if replicas is not None:
        override["replicas"] = replicas
    if expires_in is not None:
        until = datetime.now(UTC) + timedelta(minutes=expires_in)
        override["expiresAt"] = until.strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        backend(ctx).override(policy, override)
    except CLIError as exc:
        fail(str(exc))
    console.print(f"scalingpolicy/{policy}: override {mode} set")


@scale_app.command("clear")
def scale_clear(ctx: typer.Context, policy: str) -> None:
    """Hand the count back to the autoscaler."""
    try:
        backend(ctx).override(policy, None)
    except CLIError as exc:
        fail(str(exc))
    console.print(f"scalingpolicy/{policy}: override cleared")


@app.command()
def status(ctx: typer.Context) -> None:
    """Everything at a glance: agents, gateways, promotions, scaling."""
    target = backend(ctx)
    try:
        agents, gateways = target.list("agents"), target.list("gateways")
        promotions, policies = target.list("promotions"), target.list("scalingpolicies")
    except CLIError as exc:
        fail(str(exc))
    table = Table("KIND", "NAME", "STATE", "DETAIL")
    for a in agents:
        rev = (a.get("status") or {}).get("latestRevision")
        table.add_row("agent", a["metadata"]["name"], ready_text(a), f"revision {rev or '-'}")
    for g in gateways:
        served = ", ".join(
            f"{s['agent']}@r{s['revision']}"
            for s in (g.get("status") or {}).get("servedRevisions") or []
        )
        table.add_row("gateway", g["metadata"]["name"], ready_text(g), served or "-")
    for p in promotions:
        body = p.get("status") or {}
        table.add_row(
            "promotion",
            p["metadata"]["name"],
            body.get("phase") or "Pending",
            body.get("message") or "",
        )
    for sp in policies:
        body = sp.get("status") or {}
        detail = (
            f"{body.get('currentReplicas') or '-'} -> {body.get('desiredReplicas') or '-'} replicas"
        )
        table.add_row("scaling", sp["metadata"]["name"], ready_text(sp), detail)
    console.print(table)
