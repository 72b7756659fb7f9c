"""The facade's in-cluster token: read once, then again only after ``max_age``, so a
rotated token is picked up within a minute without a file read per request."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaizen_api.server import kube
from kaizen_api.server.kube import TokenFile


def test_a_rotated_token_is_used_after_max_age_and_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(kube.time, "monotonic", lambda: now[0])
    path = tmp_path / "token"
    path.write_text("first\n")
    token = TokenFile(path, max_age=60)
    assert token.value() == "first"
    path.write_text("second\n")  # the kubelet rotates it
    now[0] += 59
    assert token.value() == "first"  # cached: no read per request
    now[0] += 1
    assert token.value() == "second"
    path.unlink()
    now[0] += 30
    assert token.value() == "second"  # a moment without the file changes nothing yet
