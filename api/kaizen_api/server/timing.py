"""``Server-Timing`` on every facade answer: how long the request waited for the
kube-apiserver (``kube``) and how long the facade took in all until it answered
(``total``), so a caller, a browser's developer tools or the benchmark can tell the
facade's own cost from Kubernetes' and from the network's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

# Seconds the current request spent in apiserver calls; a list so that calls made in
# the thread pool (which runs on a copy of the context) add to the same total.
_KUBE_SECONDS: ContextVar[list[float] | None] = ContextVar("kaizen_kube_seconds", default=None)


@contextmanager
def kube_call() -> Iterator[None]:
    """Count the enclosed time as the current request's apiserver time."""
    spent = _KUBE_SECONDS.get()
    started = time.perf_counter()
    try:
        yield
    finally:
        if spent is not None:
            spent[0] += time.perf_counter() - started


class RequestTiming:
    """The timing of one request, from its start in the outermost middleware."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.kube = [0.0]
        self._token: Token[list[float] | None] = _KUBE_SECONDS.set(self.kube)

    def header(self) -> tuple[bytes, bytes]:
        """The ``Server-Timing`` header as of now (milliseconds)."""
        total = (time.perf_counter() - self.started) * 1000
        return b"server-timing", b"kube;dur=%.2f, total;dur=%.2f" % (self.kube[0] * 1000, total)

    def close(self) -> None:
        _KUBE_SECONDS.reset(self._token)
