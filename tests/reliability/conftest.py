"""Fixtures of the reliability suite (the figures table is printed by tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.reliability.figures import Figures


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Record a measured figure: ``figures.record("p99", 12.5, "ms")``."""
    return Figures(request.node.name)
