"""Entry point of ``kaizen-api``: the multi-tenant REST facade."""

import argparse
import sys
from importlib.metadata import version


def main(argv: list[str] | None = None) -> int:
    """Parse flags; the component itself arrives with issue #7."""
    parser = argparse.ArgumentParser(prog="kaizen-api", description="the multi-tenant REST facade")
    parser.add_argument("--version", action="version", version=version("kaizen-studio"))
    parser.parse_args(argv)
    print("kaizen-api: not implemented yet (tracked in issue #7)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
