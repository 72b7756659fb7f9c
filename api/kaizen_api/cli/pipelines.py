"""``kaizen pipelines list|get|apply|invoke``: Pipelines on the facade (or ``--kube``),
and a run of one on a gateway (``POST /pipelines/{name}/invoke``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from kaizen_api.cli.__main__ import app
from kaizen_api.cli.backends import CLIError
from kaizen_api.cli.commands import apply_file, backend, console, fail, ready_text

pipelines_app = typer.Typer(help="Pipelines: list, get, apply, invoke.", no_args_is_help=True)
app.add_typer(pipelines_app, name="pipelines")
GATEWAY_URL_ENV = "KAIZEN_GATEWAY_URL"
GATEWAY_KEY_ENV = "KAIZEN_GATEWAY_API_KEY"


def step_target(step: dict[str, Any]) -> str:
    """``agent/NAME[@rN]`` or ``pipeline/NAME`` of a spec step."""
    if step.get("agentRef"):
        ref = step["agentRef"]
        pinned = f"@r{ref['revision']}" if ref.get("revision") else ""
        return f"agent/{ref.get('name', '')}{pinned}"
    return f"pipeline/{(step.get('pipelineRef') or {}).get('name', '')}"


@pipelines_app.command("list")
def pipelines_list(ctx: typer.Context) -> None:
    """Pipelines with their pattern, steps, latest revision and readiness."""
    table = Table("NAME", "PATTERN", "STEPS", "REVISION", "READY")
    try:
        found = backend(ctx).list("pipelines")
    except CLIError as exc:
        fail(str(exc))
    for pipeline in sorted(found, key=lambda p: p["metadata"]["name"]):
        spec = pipeline.get("spec") or {}
        table.add_row(
            pipeline["metadata"]["name"],
            spec.get("pattern", ""),
            ", ".join(f"{s['name']} ({step_target(s)})" for s in spec.get("steps") or []),
            str((pipeline.get("status") or {}).get("latestRevision") or "-"),
            ready_text(pipeline),
        )
    console.print(table)


@pipelines_app.command("get")
def pipelines_get(
    ctx: typer.Context,
    name: str,
    output: str = typer.Option("yaml", "-o", "--output", help="yaml or json"),
) -> None:
    """One Pipeline, whole."""
    try:
        pipeline = backend(ctx).get("pipelines", name)
    except CLIError as exc:
        fail(str(exc))
    typer.echo(json.dumps(pipeline, indent=2) if output == "json" else yaml.safe_dump(pipeline))


@pipelines_app.command("apply")
def pipelines_apply(
    ctx: typer.Context,
    file: Path = typer.Option(..., "-f", "--file", exists=True, dir_okay=False),  # noqa: B008
) -> None:
    """Create or update the Kaizen Studio objects in a YAML file (Pipelines and the
    Agents and Gateways they need, in one file)."""
    apply_file(ctx, file)


def gateway_url(ctx: typer.Context, url: str | None, gateway: str | None) -> str:
    """The gateway to call: ``--url``, else the endpoint in Gateway ``--gateway``'s status."""
    if url:
        return url.rstrip("/")
    if not gateway:
        fail(
            f"which gateway? pass --url (or set {GATEWAY_URL_ENV}; `make dev` prints the dev "
            "gateway's URL) or --gateway NAME (its status.endpoint)"
        )
    try:
        status = backend(ctx).get("gateways", gateway).get("status") or {}
    except CLIError as exc:
        fail(str(exc))
    endpoint = status.get("endpoint")
    if not endpoint:
        fail(f"gateway {gateway} has no endpoint in its status yet: pass --url")
    return str(endpoint).rstrip("/")


def print_steps(steps: list[dict[str, Any]]) -> None:
    """Every step as it ran: a table, then each step's input and output."""
    table = Table("STEP", "TARGET", "REVISION", "STATUS", "MS", "TOKENS")
    for step in steps:
        status = str(step.get("status", ""))
        color = "green" if status == "ok" else "red" if status == "failed" else "yellow"
        table.add_row(
            escape(str(step.get("name", ""))),
            escape(f"{str(step.get('kind', 'Agent')).lower()}/{step.get('target', '')}"),
            str(step.get("revision") or "-"),
            f"[{color}]{escape(status)}[/{color}]",
            f"{float(step.get('latencyMs') or 0):.0f}",
            str((step.get("usage") or {}).get("total_tokens", "-")),
        )
    console.print(table)
    for step in steps:
        console.print(f"[bold]{escape(str(step.get('name', '')))}[/bold]")
        console.print(f"  input:  {escape(str(step.get('input', '')))}")
        if step.get("error"):
            console.print(f"  [red]error:[/red] {escape(str(step['error']))}")
        else:
            console.print(f"  output: {escape(str(step.get('output', '')))}")


@pipelines_app.command("invoke")
def pipelines_invoke(
    ctx: typer.Context,
    name: str,
    text: str = typer.Argument(..., metavar="INPUT", help="The pipeline's input ('-': stdin)."),
    url: str | None = typer.Option(
        None, "--url", envvar=GATEWAY_URL_ENV, help="The gateway's URL."
    ),
    gateway: str | None = typer.Option(
        None, "--gateway", help="Or: the Gateway whose status.endpoint to call."
    ),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar=GATEWAY_KEY_ENV, help="A key of the Gateway's auth Secret."
    ),
    steps: bool = typer.Option(False, "--steps", help="Also print every step as it ran."),
    output: str = typer.Option("text", "-o", "--output", help="text or json (the whole answer)"),
    timeout: float = typer.Option(330.0, help="Seconds to wait (a run may take 300 s)."),
) -> None:
    """Run a pipeline on a gateway that serves it and print its output (with --steps,
    every step: target, revision, status, latency, tokens, input and output)."""
    import httpx

    base = gateway_url(ctx, url, gateway)
    body = {"input": sys.stdin.read() if text == "-" else text}
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.post(
            f"{base}/pipelines/{name}/invoke", json=body, headers=headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach {base}: {exc}")
    try:
        answer: dict[str, Any] = response.json()
    except ValueError:
        answer = {"error": {"message": response.text[:300] or response.reason_phrase}}
    if output == "json":
        typer.echo(json.dumps(answer, indent=2))
        raise typer.Exit(0 if response.status_code < 400 else 1)
    if response.status_code >= 400:
        error = answer.get("error") or {}
        if steps and answer.get("steps"):
            print_steps(answer["steps"])
        code = f" {error['code']}" if error.get("code") else ""
        fail(f"{response.status_code}{code}: {escape(str(error.get('message', '')))}")
    if steps:
        print_steps(answer.get("steps") or [])
        usage = answer.get("usage") or {}
        extra = [f"revision {answer.get('revision', '-')}"]
        if answer.get("route"):
            extra.append(f"route {answer['route']}")
        if answer.get("vote"):
            vote = answer["vote"]
            extra.append(f"vote {vote.get('votes')}/{vote.get('of')} (step {vote.get('step')})")
        extra.append(f"{usage.get('total_tokens', 0)} tokens")
        console.print(f"[bold]{escape(name)}[/bold]: " + ", ".join(extra))
    typer.echo(answer.get("output", ""))
