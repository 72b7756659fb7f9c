"""Files the kubelet mounts and keeps up to date (a projected ServiceAccount token, the
keys of a Secret): read once, then again only after ``max_age`` seconds. The kubelet
itself takes up to a minute to update a mounted Secret (client-go re-reads its token
once a minute too), so a read per request buys nothing but a system call per
request."""

from __future__ import annotations

import time
from pathlib import Path


class MountedFiles:
    """The stripped text of mounted files, each re-read at most once per ``max_age``."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._read: dict[Path, tuple[float, str]] = {}  # path -> (read at, text)

    def read(self, path: Path) -> str:
        """The file's text; OSError when it cannot be read and no fresh copy is held."""
        cached, now = self._read.get(path), time.monotonic()
        if cached is None or now - cached[0] >= self.max_age:
            cached = (now, path.read_text().strip())
            self._read[path] = cached  # one assignment: safe for concurrent readers
        return cached[1]
