"""``kaizen policies list|get|apply|delete|check|schema|mode``: an organization's
access policies (Cedar) on the REST facade."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from kaizen_api.cli.__main__ import app
from kaizen_api.cli.backends import CLIError, FacadeBackend
from kaizen_api.cli.commands import console, fail

policies_app = typer.Typer(
    help="Access policies of an organization (Cedar; docs/policies.md).", no_args_is_help=True
)
app.add_typer(policies_app, name="policies")


def _facade(ctx: typer.Context) -> FacadeBackend:
    opts = ctx.find_root().obj or {}
    if opts.get("kube"):
        fail("policies live in the facade's database: run without --kube")
    try:
        return FacadeBackend.from_credentials(opts.get("org"), None, need_workspace=False)
    except CLIError as exc:
        fail(str(exc))


def _call(ctx: typer.Context, method: str, path: str, **kw: Any) -> Any:
    try:
        return _facade(ctx).org_call(method, path, **kw)
    except CLIError as exc:
        fail(str(exc))


def read_policies(path: Path, name: str | None) -> list[dict[str, str]]:
    """Policies from a file: ``*.cedar`` is one policy (named by --name or the file's
    stem); YAML or JSON holds documents ``{name, cedar, description?}`` (or a list)."""
    text = path.read_text()
    if path.suffix == ".cedar":
        return [{"name": name or path.stem, "cedar": text, "description": ""}]
    found: list[dict[str, str]] = []
    for doc in yaml.safe_load_all(text):
        for item in doc if isinstance(doc, list) else [doc]:
            if not isinstance(item, dict) or "cedar" not in item or "name" not in item:
                raise CLIError(f"{path}: each policy needs name and cedar")
            found.append(
                {
                    "name": str(item["name"]),
                    "cedar": str(item["cedar"]),
                    "description": str(item.get("description", "")),
                }
            )
    if name is not None and len(found) == 1:
        found[0]["name"] = name
    return found


@policies_app.command("list")
def policies_list(ctx: typer.Context) -> None:
    """The organization's policies and its policy mode."""
    data = _call(ctx, "GET", "/policies")
    table = Table()
    table.add_column("NAME", no_wrap=True)  # names are what commands take: never cut
    for column in ("STATEMENTS", "UPDATED", "BY", "DESCRIPTION"):
        table.add_column(column)
    for item in data["items"]:
        table.add_row(
            item["name"],
            str(item["statements"]),
            item["updated_at"][:19],
            item["updated_by"],
            item["description"],
        )
    console.print(f"mode: {data['mode']} (version {data['version']})")
    console.print(table)


@policies_app.command("get")
def policies_get(ctx: typer.Context, name: str) -> None:
    """One policy's Cedar text."""
    typer.echo(_call(ctx, "GET", f"/policies/{name}")["cedar"])


@policies_app.command("apply")
def policies_apply(
    ctx: typer.Context,
    file: Path = typer.Option(..., "-f", "--file", exists=True, dir_okay=False),  # noqa: B008
    name: str | None = typer.Option(None, "--name", help="Name of a single policy."),
) -> None:
    """Create or replace policies from a .cedar, YAML or JSON file (validated by the
    facade against the published schema; Cedar's message when refused)."""
    try:
        items = read_policies(file, name)
    except (CLIError, yaml.YAMLError) as exc:
        fail(str(exc))
    for item in items:
        body = {"cedar": item["cedar"], "description": item["description"]}
        _call(ctx, "PUT", f"/policies/{item['name']}", json=body)
        console.print(f"policy {item['name']} applied")


@policies_app.command("delete")
def policies_delete(ctx: typer.Context, name: str) -> None:
    """Delete a policy."""
    _call(ctx, "DELETE", f"/policies/{name}")
    console.print(f"policy {name} deleted")


@policies_app.command("mode")
def policies_mode(
    ctx: typer.Context,
    mode: str | None = typer.Argument(None, help="restrict | permit-required (omit: show)"),
) -> None:
    """Show or set the policy mode."""
    if mode is None:
        data = _call(ctx, "GET", "/policy-mode")
    else:
        data = _call(ctx, "PUT", "/policy-mode", json={"mode": mode})
    console.print(f"mode: {data['mode']} (version {data['version']})")


@policies_app.command("schema")
def policies_schema(ctx: typer.Context) -> None:
    """The Cedar schema policies are validated against."""
    facade = _facade(ctx)
    typer.echo(facade.http.get("/policies/schema").text)


@policies_app.command("check")
def policies_check(
    ctx: typer.Context,
    permission: str = typer.Argument(..., help="e.g. agents:delete"),
    workspace: str | None = typer.Option(None, "--workspace", "-w"),
    name: str = typer.Option("", "--name", help="The object's name."),
    label: list[str] = typer.Option([], "--label", "-l", help="key=value (repeatable)."),  # noqa: B008
    target_environment: str = typer.Option("", "--target-environment"),
    user: str | None = typer.Option(None, "--user", help="A member's email (default: you)."),
    key_scope: list[str] = typer.Option(  # noqa: B008
        [], "--key-scope", help="Judge as an API key with this scope (repeatable)."
    ),
    at: datetime | None = typer.Option(None, "--at", help="The request's time (UTC)."),  # noqa: B008
    source_ip: str | None = typer.Option(None, "--source-ip"),
    file: Path | None = typer.Option(  # noqa: B008
        None, "-f", "--file", help="Judge as if this (single) policy were saved."
    ),
) -> None:
    """Dry run: would this request be allowed, and by which policy? Exit 1 if not."""
    body: dict[str, Any] = {"permission": permission, "name": name}
    if workspace:
        body["workspace"] = workspace
    if label:
        body["labels"] = dict(item.partition("=")[::2] for item in label)
    if target_environment:
        body["targetEnvironment"] = target_environment
    if user:
        body["user"] = user
    if key_scope:
        body["apiKey"] = {"scopes": key_scope, "workspace": workspace}
    if at is not None:
        body["time"] = at.isoformat()
    if source_ip:
        body["sourceIp"] = source_ip
    if file is not None:
        try:
            (candidate,) = read_policies(file, None)
        except (ValueError, CLIError, yaml.YAMLError) as exc:
            fail(f"{file}: give exactly one policy to check ({exc})")
        body["policy"] = {"name": candidate["name"], "cedar": candidate["cedar"]}
    result = _call(ctx, "POST", "/policy-check", json=body)
    verdict = "[green]allowed[/green]" if result["allowed"] else "[red]denied[/red]"
    by = ", ".join(result["policies"]) or "-"
    console.print(f"{verdict}  reason: {result['reason']}  policies: {by}  mode: {result['mode']}")
    if result.get("roleDetail"):
        console.print(f"role: {result['roleDetail']}")
    if not result["allowed"]:
        raise typer.Exit(1)
