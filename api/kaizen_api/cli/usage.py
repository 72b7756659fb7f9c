"""``kaizen usage show`` and ``kaizen usage export``: an organization's usage from the
REST facade (as the logged-in user; owners and billing admins)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from kaizen_api.cli.__main__ import app
from kaizen_api.cli.backends import CLIError, credentials_file
from kaizen_api.cli.commands import console, fail

usage_app = typer.Typer(help="Usage and cost of an organization.", no_args_is_help=True)
app.add_typer(usage_app, name="usage")


def _get(ctx: typer.Context, path: str, params: dict[str, Any]) -> Any:
    """GET ``/orgs/{org}{path}`` with the saved login; the org from --org or the login."""
    import httpx

    credentials = credentials_file()
    if not credentials.exists():
        fail("not logged in: run `kaizen login`")
    saved = json.loads(credentials.read_text())
    org = (ctx.find_root().obj or {}).get("org") or saved.get("org")
    if not org:
        fail("which organization? pass --org (or set it at login)")
    try:
        response = httpx.get(
            f"{saved['url'].rstrip('/')}/api/v1/orgs/{org}{path}",
            params={k: v for k, v in params.items() if v is not None},
            headers={"authorization": f"Bearer {saved['access_token']}"},
            timeout=60,
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach {saved['url']}: {exc}")
    if response.status_code >= 400:
        try:
            body = response.json()
            message = f"{body.get('title', '')}: {body.get('detail', '')}".strip(": ")
        except ValueError:
            message = response.text[:300]
        fail(str(CLIError(f"{response.status_code} {message}")))
    return response


def _money(value: float) -> str:
    return f"${value:,.4f}"


@usage_app.command("show")
def show(
    ctx: typer.Context,
    group: str = typer.Option("day", help="hour, day or month"),
    since: str | None = typer.Option(None, help="ISO time (default: this month's start)"),
    until: str | None = typer.Option(None, help="ISO time, excluded (default: now)"),
    workspace: str | None = typer.Option(None, "--in-workspace", help="Only this workspace."),
    agent: str | None = typer.Option(None, help="Only this agent."),
    pipeline: str | None = typer.Option(None, help="Only this pipeline."),
    key: str | None = typer.Option(None, help="Only this caller (API key hash)."),
    model: str | None = typer.Option(None, help="Only this model."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON."),
) -> None:
    """Requests, tokens and cost per period, by agent, and the top errors."""
    params = {
        "group": group,
        "since": since,
        "until": until,
        "workspace": workspace,
        "agent": agent,
        "pipeline": pipeline,
        "key": key,
        "model": model,
    }
    data = _get(ctx, "/usage", params).json()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    columns = ("requests", "errors", "tokens_in", "tokens_out", "tool_calls")
    series = Table(title=f"{data['org']} usage by {data['group']}")
    for name in ("start", *columns, "cost", "mean ms"):
        series.add_column(name, justify="left" if name == "start" else "right")
    for row in data["series"]:
        series.add_row(
            row["start"][: 16 if group == "hour" else 10],
            *(f"{row[c]:,}" for c in columns),
            _money(row["cost_usd"]),
            f"{row['mean_latency_ms']:.1f}",
        )
    t = data["totals"]
    series.add_row(
        "[bold]total[/bold]",
        *(f"[bold]{t[c]:,}[/bold]" for c in columns),
        f"[bold]{_money(t['cost_usd'])}[/bold]",
        f"{t['mean_latency_ms']:.1f}",
    )
    console.print(series)
    if data["by_agent"]:
        agents = Table(title="cost by agent")
        for name in ("kind", "name", "requests", "errors", "tokens", "cost"):
            agents.add_column(name, justify="left" if name in ("kind", "name") else "right")
        for a in data["by_agent"]:
            agents.add_row(
                a["kind"],
                a["name"],
                f"{a['requests']:,}",
                f"{a['errors']:,}",
                f"{a['tokens_in'] + a['tokens_out']:,}",
                _money(a["cost_usd"]),
            )
        console.print(agents)
    if data["top_errors"]:
        errors = Table(title="top errors")
        errors.add_column("outcome")
        errors.add_column("requests", justify="right")
        for e in data["top_errors"]:
            errors.add_row(e["outcome"], f"{e['requests']:,}")
        console.print(errors)


@usage_app.command("export")
def export(
    ctx: typer.Context,
    period: str = typer.Option(..., help="The month, YYYY-MM (UTC)."),
    fmt: str = typer.Option("csv", "--format", help="csv or json"),
    out: Path | None = typer.Option(None, "-o", "--out", help="File (default: stdout)."),  # noqa: B008
) -> None:
    """Every usage record of one month, one row per request."""
    response = _get(ctx, "/usage/export", {"period": period, "format": fmt})
    if out is None:
        typer.echo(response.text, nl=False)
        return
    out.write_text(response.text)
    console.print(f"wrote {out}")
