"""The console's typed client is generated from the facade's OpenAPI document: the
committed document (and role tables) must be what the facade serves today, or the
console would call routes and send bodies the facade no longer has."""

from __future__ import annotations

import json
from pathlib import Path

from kaizen_api.server.__main__ import write_documents
from kaizen_api.server.openapi import CONSOLE_API_DIR, render_documents

ROOT = Path(__file__).resolve().parents[2]


def test_committed_openapi_document_and_roles_are_current() -> None:
    files = render_documents()
    for name, text in files.items():
        committed = (ROOT / CONSOLE_API_DIR / name).read_text()
        assert committed == text, f"{CONSOLE_API_DIR}/{name} is stale: run `kaizen-api openapi`"


def test_check_fails_on_a_stale_document_and_passes_once_written(tmp_path: Path) -> None:
    (tmp_path / "openapi.json").write_text("{}\n")
    assert write_documents(str(tmp_path), check=True) == 1
    assert write_documents(str(tmp_path)) == 0
    assert write_documents(str(tmp_path), check=True) == 0


def test_role_tables_are_the_facade_s() -> None:
    from kaizen_api.server.permissions import ORG_ROLES, WORKSPACE_ROLES

    roles = json.loads(render_documents()["roles.json"])
    assert roles["workspace"]["viewer"] == list(WORKSPACE_ROLES["viewer"])
    assert set(roles["org"]) == set(ORG_ROLES)
