"""Hostile knowledge sources against a real `kaizen-gateway` process: URLs at link-local
and metadata addresses (directly or through a redirect) are refused and reported on
/readyz, a 50 MB document is read only up to the agent's cap, and none of it stops the
gateway serving."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.test_gateway_knowledge import (
    DocumentServer,
    KnowledgeGateway,
    context_of,
    invoke,
    start_knowledge_gateway,
)

CAP = 65_536
FACT = "The spare key is under the blue flowerpot."


@pytest.fixture(scope="module")
def docs() -> Iterator[DocumentServer]:
    server = DocumentServer(
        {"/to-metadata": ("redirect", b"http://169.254.169.254/latest/meta-data/")}
    )
    yield server
    server.close()


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, docs: DocumentServer
) -> Iterator[KnowledgeGateway]:
    knowledge = [
        {"name": "notes", "configMapRef": {"name": "notes"}},
        {"name": "metadata", "url": "http://169.254.169.254/latest/meta-data/"},
        {"name": "gcp", "url": "http://metadata.google.internal/computeMetadata/v1/"},
        {"name": "bounce", "url": f"{docs.url}/to-metadata"},
        {"name": "huge", "url": f"{docs.url}/huge.txt"},
        {"name": "absent", "configMapRef": {"name": "never-created"}},
    ]
    yield from start_knowledge_gateway(
        tmp_path_factory.mktemp("hostile-knowledge"),
        [
            {
                "apiVersion": "kaizen.studio/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": "greedy", "namespace": "team-a", "uid": "uid-agent-greedy"},
                "spec": {
                    "model": {"provider": "mock", "name": "echo"},  # put on the stub
                    "context": {"knowledge": knowledge, "retrieval": {"maxDocumentBytes": CAP}},
                },
            }
        ],
        # a ConfigMap document over the cap, the fact at its start
        {"notes": {"house.txt": FACT + "\n\n" + "filler words " * 20_000}},
    )


def problems(gw: KnowledgeGateway) -> str:
    """What /readyz says went wrong with the agent's knowledge (it stays ready)."""
    response = httpx.get(f"{gw.url}/readyz", timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True  # degraded knowledge does not unready the pod
    return "\n".join(body["knowledge"]["greedy"]["problems"])


def test_link_local_and_metadata_urls_are_refused_and_reported(hostile: KnowledgeGateway) -> None:
    report = problems(hostile)
    assert "source metadata: url refused: host '169.254.169.254'" in report
    assert "link-local" in report
    assert "source gcp: url refused: host 'metadata.google.internal'" in report
    assert "source bounce: url refused: host '169.254.169.254'" in report  # after the redirect
    assert "source absent: ConfigMap never-created is not mounted" in report
    assert hostile.process.proc.poll() is None


def test_huge_documents_are_cut_at_the_cap_and_still_serve(
    hostile: KnowledgeGateway, docs: DocumentServer
) -> None:
    report = problems(hostile).splitlines()
    assert f"source huge: url cut at maxDocumentBytes ({CAP} bytes)" in report
    assert f"source notes: notes/house.txt: cut at maxDocumentBytes ({CAP} bytes)" in report
    # The gateway hung up after the cap: far less than the 50 MB was ever sent.
    assert docs.huge_sent < 16 * 1024 * 1024
    answer = invoke(hostile, "greedy", "where is the spare key?").json()
    assert answer["sources"][0]["name"] == "notes"
    assert FACT in context_of(hostile.sent_upstream())
    answer = invoke(hostile, "greedy", "lorem ipsum").json()
    assert {s["name"] for s in answer["sources"]} == {"huge"}


def test_the_gateway_keeps_serving_while_sources_fail(hostile: KnowledgeGateway) -> None:
    answer = invoke(hostile, "greedy", "hello").json()
    assert answer["output"] == "stub says: hello"
