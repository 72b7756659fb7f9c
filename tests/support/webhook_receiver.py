"""A webhook receiver for tests, run as its own process on 127.0.0.1: it verifies every
POST with the `standardwebhooks` library against each secret in ``<dir>/secrets``
(one per line, read per request) and appends what it saw to ``<dir>/received.jsonl``.

Steering files in ``<dir>``: ``fail`` present -> answer 503; ``slow`` present -> wait
that many seconds (its content) before answering, after logging ``started``.

    python -m tests.support.webhook_receiver <dir> <port>
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

LOCK = threading.Lock()


def received(folder: Path) -> list[dict[str, Any]]:
    """What a receiver wrote so far (tests read this)."""
    path = folder / "received.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def serve(folder: Path, port: int) -> None:
    def log(entry: dict[str, Any]) -> None:
        with LOCK, (folder / "received.jsonl").open("a") as out:
            out.write(json.dumps(entry) + "\n")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
            headers = {k.lower(): v for k, v in self.headers.items()}
            secrets_file = folder / "secrets"
            keys = secrets_file.read_text().split() if secrets_file.exists() else []
            verified = []
            payload: dict[str, Any] = {}
            for key in keys:
                try:
                    payload = Webhook(key).verify(body, headers)
                    verified.append(True)
                except WebhookVerificationError:
                    verified.append(False)
            entry = {
                "path": self.path,
                "id": headers.get("webhook-id"),
                "type": payload.get("type"),
                "organization": (payload.get("data") or {}).get("organization"),
                "data": payload.get("data"),
                "verified": verified,
            }
            slow = folder / "slow"
            if slow.exists():
                log({**entry, "phase": "started"})
                time.sleep(float(slow.read_text() or "5"))
            status = 503 if (folder / "fail").exists() else 204
            if not any(verified):
                status = 401
            log({**entry, "phase": "done", "status": status})
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
