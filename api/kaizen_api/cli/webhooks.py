"""``kaizen webhooks list|create|delete|deliveries|redeliver|test|rotate``: an
organization's webhook subscriptions on the REST facade (after ``kaizen login``)."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from kaizen_api.cli.__main__ import app
from kaizen_api.cli.backends import CLIError, credentials_file

console = Console()
webhooks_app = typer.Typer(
    help="Webhook subscriptions of an organization (facade only).", no_args_is_help=True
)
app.add_typer(webhooks_app, name="webhooks")


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


class Hooks:
    """The facade's /orgs/{org}/webhooks, as the logged-in user."""

    def __init__(self, org: str | None) -> None:
        import httpx

        path = credentials_file()
        if not path.exists():
            raise CLIError("not logged in: run `kaizen login`")
        saved = json.loads(path.read_text())
        org = org or saved.get("org")
        if not org:
            raise CLIError("which organization? pass --org (or set it at login)")
        self.base = f"/orgs/{org}/webhooks"
        self.http = httpx.Client(
            base_url=saved["url"].rstrip("/") + "/api/v1",
            headers={"authorization": f"Bearer {saved['access_token']}"},
            timeout=30,
        )

    def call(self, method: str, path: str = "", **kw: Any) -> Any:
        response = self.http.request(method, self.base + path, **kw)
        if response.status_code >= 400:
            try:
                body = response.json()
                message = f"{body.get('title', '')}: {body.get('detail', '')}".strip(": ")
                for error in body.get("errors") or []:  # which field, and why
                    message += f"\n  {error.get('field')}: {error.get('message')}"
            except ValueError:
                message = response.text[:300]
            raise CLIError(f"{response.status_code} {message}")
        return response.json() if response.content else {}


def hooks(ctx: typer.Context) -> Hooks:
    opts = ctx.find_root().obj or {}
    try:
        return Hooks(opts.get("org"))
    except CLIError as exc:
        fail(str(exc))


def run(ctx: typer.Context, method: str, path: str = "", **kw: Any) -> Any:
    try:
        return hooks(ctx).call(method, path, **kw)
    except CLIError as exc:
        fail(str(exc))


def show_secret(created: dict[str, Any]) -> None:
    console.print(f"webhook {created['id']} -> {created['url']}")
    console.print(f"signing secret (shown once, keep it now): [bold]{created['secret']}[/bold]")


JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


@webhooks_app.command("list")
def list_(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Subscriptions with their filters and state."""
    found = run(ctx, "GET")
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table("ID", "URL", "EVENTS", "WORKSPACE", "ACTIVE")
    for h in found:
        active = "yes" if h["active"] else f"[red]no[/red] {h['disabled_reason']}"
        table.add_row(h["id"], h["url"], ",".join(h["events"]), h["workspace"] or "-", active)
    console.print(table)


@webhooks_app.command("create")
def create(
    ctx: typer.Context,
    url: str,
    events: str = typer.Option("*", help="Comma-separated types or patterns (promotion.*)."),
    workspace: str | None = typer.Option(None, help="Only this workspace's resource events."),
    description: str = typer.Option("", help="A note for humans."),
) -> None:
    """Subscribe URL; prints the signing secret once."""
    body = {
        "url": url,
        "events": [e.strip() for e in events.split(",") if e.strip()],
        "workspace": workspace,
        "description": description,
    }
    show_secret(run(ctx, "POST", json=body))


@webhooks_app.command("delete")
def delete(ctx: typer.Context, webhook: str) -> None:
    """Delete a subscription and its delivery log."""
    run(ctx, "DELETE", f"/{webhook}")
    console.print(f"webhook {webhook} deleted")


@webhooks_app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    webhook: str,
    status: str | None = typer.Option(None, help="pending, succeeded or failed."),
    limit: int = typer.Option(50, help="How many, newest first."),
    as_json: bool = JSON,
) -> None:
    """The delivery log: status, attempts, response code, latency."""
    params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
    found = run(ctx, "GET", f"/{webhook}/deliveries", params=params)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table("ID", "EVENT", "TYPE", "STATUS", "ATTEMPTS", "CODE", "LATENCY", "ERROR")
    for d in found:
        latency = f"{d['latency_ms']:.0f} ms" if d["latency_ms"] is not None else "-"
        table.add_row(
            str(d["id"]),
            d["event_id"],
            d["event_type"],
            d["status"],
            str(d["attempts"]),
            str(d["response_code"] or "-"),
            latency,
            d["error"][:60],
        )
    console.print(table)


@webhooks_app.command("redeliver")
def redeliver(ctx: typer.Context, webhook: str, delivery: int) -> None:
    """Send a delivery again now (same webhook-id, a fresh retry schedule)."""
    done = run(ctx, "POST", f"/{webhook}/deliveries/{delivery}/redeliver")
    console.print(f"delivery {done['id']} ({done['event_type']}) queued again")


@webhooks_app.command("test")
def test(ctx: typer.Context, webhook: str) -> None:
    """Queue a webhook.test event to this subscription."""
    done = run(ctx, "POST", f"/{webhook}/test")
    console.print(f"test event {done['event_id']} queued (delivery {done['id']})")


@webhooks_app.command("rotate")
def rotate(
    ctx: typer.Context,
    webhook: str,
    overlap: int | None = typer.Option(
        None, help="Seconds the old secret keeps signing too (default: a day)."
    ),
) -> None:
    """A new signing secret (shown once); the old one signs alongside it for OVERLAP."""
    body = {"overlap_seconds": overlap} if overlap is not None else {}
    rotated = run(ctx, "POST", f"/{webhook}/rotate", json=body)
    show_secret(rotated)
    if rotated.get("previous_secret_until"):
        console.print(f"the previous secret also signs until {rotated['previous_secret_until']}")
