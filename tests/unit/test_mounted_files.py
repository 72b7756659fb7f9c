"""Mounted files (the facade's in-cluster token, the gateway's provider credentials):
read once, then again only after ``max_age``, so a rotated token or key is picked up
without a file read per request."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaizen_api import mounted
from kaizen_api.mounted import MountedFiles


def test_a_rotated_file_is_used_after_max_age_and_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(mounted.time, "monotonic", lambda: now[0])
    path, other = tmp_path / "token", tmp_path / "other"
    path.write_text("first\n")
    other.write_text("another key")
    files = MountedFiles(max_age=60)
    assert files.read(path) == "first"
    assert files.read(other) == "another key"  # each file on its own
    path.write_text("second\n")  # the kubelet rotates it
    now[0] += 59
    assert files.read(path) == "first"  # cached: no read per request
    now[0] += 1
    assert files.read(path) == "second"
    path.unlink()
    now[0] += 30
    assert files.read(path) == "second"  # a moment without the file changes nothing yet
    now[0] += 30
    with pytest.raises(FileNotFoundError):  # gone for good: the caller says so
        files.read(path)
    with pytest.raises(FileNotFoundError):
        files.read(tmp_path / "never-there")
