"""Entry point of ``kaizen-operator``: reconciles Kaizen Studio's custom resources."""

import argparse
import sys
from importlib.metadata import version


def main(argv: list[str] | None = None) -> int:
    """Parse flags; the component itself arrives with issue #5."""
    parser = argparse.ArgumentParser(
        prog="kaizen-operator", description="reconciles Kaizen Studio's custom resources"
    )
    parser.add_argument("--version", action="version", version=version("kaizen-studio"))
    parser.parse_args(argv)
    print("kaizen-operator: not implemented yet (tracked in issue #5)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
