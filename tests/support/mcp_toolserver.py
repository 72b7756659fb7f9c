"""The demo MCP tool server (hack/toolserver/mcp_server.py) as a real process for tests."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import LocalProcess, start, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]
PATHS = {"streamable-http": "/mcp", "sse": "/sse"}


@dataclass
class MCPToolServer:
    """One server process; ``restart`` brings it back on the same port."""

    port: int
    transport: str
    log: Path
    process: LocalProcess | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + PATHS[self.transport]

    def start(self) -> MCPToolServer:
        self.process = start(
            [
                sys.executable,
                str(ROOT / "hack" / "toolserver" / "mcp_server.py"),
                "--port",
                str(self.port),
                "--transport",
                self.transport,
            ],
            self.log,
        )
        wait_http_ok(f"{self.base}/stats", self.process)
        return self

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.base}/stats", timeout=5).json()
        return stats

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
