"""The ``kaizen`` command line (typer)."""

from __future__ import annotations

from pathlib import Path

import typer

from kaizen_api import __version__
from kaizen_api.cli.gitops import argocd_cm_patch
from kaizen_api.v1alpha1.crd import render_crd_files
from kaizen_api.v1alpha1.rbac import CHART_TEMPLATE, render_chart_template
from kaizen_api.v1alpha1.reference import render_api_reference

app = typer.Typer(help="Kaizen Studio command line.", no_args_is_help=True)
crds_app = typer.Typer(help="CustomResourceDefinitions generated from the API models.")
app.add_typer(crds_app, name="crds")
gitops_app = typer.Typer(help="Argo CD and Flux integration.")
app.add_typer(gitops_app, name="gitops")

DEFAULT_CRD_DIRS = [Path("crds"), Path("charts/kaizen-studio/crds")]
DEFAULT_REFERENCE = Path("docs/api.md")


@app.command()
def version() -> None:
    """Print Kaizen Studio's version."""
    typer.echo(__version__)


@crds_app.command("generate")
def crds_generate(
    out: list[Path] = typer.Option(  # noqa: B008 - typer's declaration style
        DEFAULT_CRD_DIRS, "--out", help="Folder to write into (repeatable)."
    ),
    reference: Path = typer.Option(DEFAULT_REFERENCE, help="API reference to write."),  # noqa: B008
) -> None:
    """Write every CRD as YAML into crds/ and the Helm chart's crds/, and docs/api.md."""
    files = render_crd_files()
    for folder in out:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in {p.name for p in folder.glob("*.kaizen.studio.yaml")} - set(files):
            (folder / stale).unlink()
        for name, text in files.items():
            (folder / name).write_text(text)
        typer.echo(f"wrote {len(files)} CRDs to {folder}/")
    reference.parent.mkdir(parents=True, exist_ok=True)
    reference.write_text(render_api_reference())
    typer.echo(f"wrote {reference}")
    chart_rbac = Path(CHART_TEMPLATE)
    if chart_rbac.parent.exists():
        chart_rbac.write_text(render_chart_template())
        typer.echo(f"wrote {chart_rbac}")


@crds_app.command("check")
def crds_check(
    out: list[Path] = typer.Option(  # noqa: B008
        DEFAULT_CRD_DIRS, "--out", help="Folder to compare (repeatable)."
    ),
    reference: Path = typer.Option(DEFAULT_REFERENCE, help="API reference to compare."),  # noqa: B008
) -> None:
    """Fail when the committed CRDs or API reference differ from what the models generate."""
    files = render_crd_files()
    stale = [
        str(folder / name)
        for folder in out
        for name, text in files.items()
        if not (folder / name).exists() or (folder / name).read_text() != text
    ]
    if not reference.exists() or reference.read_text() != render_api_reference():
        stale.append(str(reference))
    chart_rbac = Path(CHART_TEMPLATE)
    if chart_rbac.parent.exists() and (
        not chart_rbac.exists() or chart_rbac.read_text() != render_chart_template()
    ):
        stale.append(str(chart_rbac))
    if stale:
        typer.echo("out of date (run `kaizen crds generate`): " + ", ".join(stale), err=True)
        raise typer.Exit(1)
    typer.echo("CRDs are up to date")


@gitops_app.command("argocd-cm")
def gitops_argocd_cm(
    namespace: str = typer.Option("argocd", help="Namespace of Argo CD's argocd-cm."),
) -> None:
    """Print an argocd-cm patch with health checks and actions for the four kinds."""
    typer.echo(argocd_cm_patch(namespace), nl=False)


@app.callback()
def _root(
    ctx: typer.Context,
    kube: bool = typer.Option(False, "--kube", help="Talk to Kubernetes directly (kubeconfig)."),
    namespace: str | None = typer.Option(None, "-n", "--namespace", help="With --kube."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG"),
    org: str | None = typer.Option(None, "--org", help="Facade organization (default: login's)."),
    workspace: str | None = typer.Option(None, "--workspace", help="Facade workspace."),
) -> None:
    """Kaizen Studio command line. Resource commands go to the REST facade (after
    `kaizen login`), or with --kube straight to Kubernetes as the kubeconfig's user."""
    ctx.obj = {
        "kube": kube,
        "namespace": namespace,
        "kubeconfig": kubeconfig,
        "org": org,
        "workspace": workspace,
    }


def main() -> None:
    """Console-script entry point."""
    from kaizen_api.cli import (  # noqa: F401 - register their commands
        commands,
        export,
        pipelines,
        policies,
        usage,
        webhooks,
    )

    app()


if __name__ == "__main__":
    main()
