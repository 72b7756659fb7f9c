"""The ``kaizen`` command line (typer)."""

import typer

from kaizen_api import __version__

app = typer.Typer(help="Kaizen Studio command line.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print Kaizen Studio's version."""
    typer.echo(__version__)


@app.callback()
def _root() -> None:
    """Kaizen Studio command line."""


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
