"""Entry point of ``kaizen-gateway``: serves agents over an OpenAI-compatible API."""

import argparse
import sys
from importlib.metadata import version


def main(argv: list[str] | None = None) -> int:
    """Parse flags; the component itself arrives with issue #6."""
    parser = argparse.ArgumentParser(
        prog="kaizen-gateway", description="serves agents over an OpenAI-compatible API"
    )
    parser.add_argument("--version", action="version", version=version("kaizen-studio"))
    parser.parse_args(argv)
    print("kaizen-gateway: not implemented yet (tracked in issue #6)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
