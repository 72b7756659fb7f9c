"""The operator reading gateway pods' /readyz: a pod is not trusted to redirect the
operator elsewhere, nor to exhaust its memory with a huge answer."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kaizen_operator.gatewaymetrics import READINESS_MAX_BYTES, read_readiness

pytestmark = pytest.mark.integration

READY = {"ready": True, "mcpServers": []}


class Pods(BaseHTTPRequestHandler):
    """/good/readyz answers; /redirect/readyz points at /good; /huge/readyz is too big."""

    def do_GET(self) -> None:
        if self.path == "/good/readyz":
            self._answer(200, json.dumps(READY).encode())
        elif self.path == "/redirect/readyz":
            self.send_response(302)
            self.send_header("location", "/good/readyz")
            self.end_headers()
        elif self.path == "/huge/readyz":
            self._answer(200, b'{"pad": "' + b"x" * (READINESS_MAX_BYTES + 10) + b'"}')
        else:
            self._answer(404, b"{}")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def pods() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pods)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_only_direct_json_answers_within_the_cap_are_read(pods: str) -> None:
    urls = [f"{pods}/good", f"{pods}/redirect", f"{pods}/huge", "http://127.0.0.1:9"]
    pages = asyncio.run(read_readiness(urls))
    assert pages == {f"{pods}/good": READY}
