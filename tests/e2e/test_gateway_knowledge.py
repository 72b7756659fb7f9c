"""Knowledge and traces of a real gateway process, run with the command the operator
renders: documents from a mounted ConfigMap (laid out as the kubelet does) and a URL
reach the model with their source names, an edit is served without a restart, and the
spans a local OTLP receiver collects form the request's tree."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.agent_gateway import (
    gateway_bundle,
    gateway_command,
    metric_total,
    render_dev_gateway,
)
from tests.support.kube import eventually
from tests.support.mounts import write_config_map_volume
from tests.support.objects import agent
from tests.support.otlp import OTLPReceiver, ReceivedSpan, children
from tests.support.processes import LocalProcess, free_port, start, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]
REFUNDS = (
    "# Refunds\n\nCustomers may return any item within 45 days for a full refund, "
    "paid to the original card."
)
SHIPPING = "# Shipping\n\nOrders ship from the Porto warehouse within two business days."
FAQ_HTML = (
    "<html><body><h1>FAQ</h1><p>The support line answers on weekdays, "
    "the hotline number is 0800-KAIZEN.</p><script>var hidden=1</script></body></html>"
)


class DocumentServer:
    """Serves documents over HTTP: path -> (content type, body), or ("redirect",
    location); ``/huge.txt`` streams up to 50 MB and counts what it managed to send."""

    HUGE = 50 * 1024 * 1024

    def __init__(self, documents: dict[str, tuple[str, bytes]]) -> None:
        self.documents = documents
        self.huge_sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/huge.txt":
                    self.send_response(200)
                    self.send_header("content-type", "text/plain")
                    self.send_header("content-length", str(server.HUGE))
                    self.end_headers()
                    block = b"lorem ipsum " * 5461  # ~64 KiB
                    try:
                        while server.huge_sent < server.HUGE:
                            self.wfile.write(block)
                            server.huge_sent += len(block)
                    except OSError:
                        pass  # the reader hung up: what the cap should make it do
                    return
                found = server.documents.get(self.path)
                if found is None:
                    self.send_error(404)
                    return
                kind, body = found
                if kind == "redirect":
                    self.send_response(302)
                    self.send_header("location", body.decode())
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class KnowledgeGateway:
    url: str
    stub: str
    knowledge: Path  # where the ConfigMaps are "mounted"
    process: LocalProcess
    otlp: OTLPReceiver

    def sent_upstream(self) -> list[dict[str, Any]]:
        """The messages of the last request the upstream stub received."""
        requests = httpx.get(f"{self.stub}/_control", timeout=5).json()["requests"]
        return list(requests[-1]["body"]["messages"])


def rendered_command(agents: list[dict[str, Any]]) -> tuple[list[str], str]:
    """The Deployment's command and the ConfigMap's bundle for ``agents``."""
    plan = render_dev_gateway(agents)
    return gateway_command(plan), gateway_bundle(plan)


def start_knowledge_gateway(
    tmp: Path, agents: list[dict[str, Any]], config_maps: dict[str, dict[str, str]]
) -> Iterator[KnowledgeGateway]:
    """The upstream stub, an OTLP receiver, and the gateway with the pod's command (pod
    paths mapped onto ``tmp``), its ConfigMaps laid out as the kubelet mounts them."""
    stub_port, port = free_port(), free_port()
    stub = start(
        [sys.executable, "-m", "upstream_stub.server", "--port", str(stub_port)],
        tmp / "stub.log",
        env={"PYTHONPATH": str(ROOT / "hack")},
    )
    stub_url = f"http://127.0.0.1:{stub_port}"
    argv, bundle_text = rendered_command([_on_stub(a, stub_url) for a in agents])
    bundle = tmp / "bundle" / "bundle.json"
    bundle.parent.mkdir()
    bundle.write_text(bundle_text)
    knowledge = tmp / "knowledge"
    for name, files in config_maps.items():
        write_config_map_volume(knowledge / name, files)
    args = [a.replace("/etc/kaizen/bundle/bundle.json", str(bundle)) for a in argv]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    otlp = OTLPReceiver()
    gw = start(
        [*args, "--knowledge-dir", str(knowledge), "--secrets-dir", str(tmp / "secrets")],
        tmp / "gateway.log",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_SERVICE_NAME": "kaizen-gateway-test",
        },
    )
    try:
        wait_http_ok(f"{stub_url}/_control", stub)
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", gw)
        yield KnowledgeGateway(f"http://127.0.0.1:{port}", stub_url, knowledge, gw, otlp)
    finally:
        gw.stop()
        stub.stop()
        otlp.close()


def _on_stub(body: dict[str, Any], stub: str) -> dict[str, Any]:
    body["spec"]["model"] = {
        "provider": "openai-compatible",
        "name": "gpt-4o-mini",
        "endpoint": f"{stub}/v1",
    }
    return body


@pytest.fixture(scope="module")
def docs() -> Iterator[DocumentServer]:
    server = DocumentServer({"/faq.html": ("text/html; charset=utf-8", FAQ_HTML.encode())})
    yield server
    server.close()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, docs: DocumentServer
) -> Iterator[KnowledgeGateway]:
    knowledge = [
        {"name": "policies", "configMapRef": {"name": "shop-policies"}},
        {"name": "faq", "url": f"{docs.url}/faq.html"},
    ]
    yield from start_knowledge_gateway(
        tmp_path_factory.mktemp("knowledge"),
        [
            agent(
                "shop",
                prompt="You answer shop questions.",
                context={"knowledge": knowledge, "retrieval": {"topK": 2}},
            ),
            agent("plain", prompt="No knowledge here."),
        ],
        {"shop-policies": {"refunds.md": REFUNDS, "shipping.md": SHIPPING}},
    )


def invoke(gw: KnowledgeGateway, name: str, text: str, **headers: str) -> httpx.Response:
    response = httpx.post(
        f"{gw.url}/agents/{name}/invoke", json={"input": text}, headers=headers, timeout=10
    )
    response.raise_for_status()
    return response


def context_of(messages: list[dict[str, Any]]) -> str:
    """The context system message the gateway added ("" when none)."""
    return next(
        (m["content"] for m in messages if str(m["content"]).startswith("Context from")), ""
    )


def metric(gw: KnowledgeGateway, name: str, **labels: str) -> float:
    return metric_total(gw.url, name, **labels)


def test_the_answer_names_the_config_map_document_holding_the_fact(
    served: KnowledgeGateway,
) -> None:
    lookups = "kaizen_gateway_retrieval_duration_seconds_count"
    before = metric(served, lookups, agent="shop")
    answer = invoke(served, "shop", "How many days do I have to get a refund?").json()
    assert metric(served, lookups, agent="shop") == before + 1
    assert metric(served, "kaizen_gateway_knowledge_chunks", agent="shop") == 3
    assert answer["sources"][0]["name"] == "policies"
    assert answer["sources"][0]["document"] == "refunds.md"
    sent = served.sent_upstream()
    assert sent[0] == {"role": "system", "content": "You answer shop questions."}
    assert "within 45 days for a full refund" in context_of(sent)
    assert "[source: policies/refunds.md#0]" in context_of(sent)
    assert sent[-1] == {"role": "user", "content": "How many days do I have to get a refund?"}


def test_a_url_source_is_fetched_as_text_and_retrieved(served: KnowledgeGateway) -> None:
    answer = invoke(served, "shop", "what is the hotline number?").json()
    assert answer["sources"][0]["name"] == "faq"
    context = context_of(served.sent_upstream())
    assert "0800-KAIZEN" in context
    assert "hidden" not in context  # the page's script is not text


def test_chat_completions_carry_the_sources_in_a_field_and_a_header(
    served: KnowledgeGateway,
) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="shop", messages=[{"role": "user", "content": "Where do orders ship from?"}]
    )
    completion = raw.parse()
    assert completion.model_extra["sources"][0]["document"] == "shipping.md"
    assert raw.headers["x-kaizen-knowledge-sources"].startswith("policies/shipping.md#0")
    stream = client.chat.completions.with_raw_response.create(
        model="shop",
        messages=[{"role": "user", "content": "Where do orders ship from?"}],
        stream=True,
    )
    assert stream.headers["x-kaizen-knowledge-sources"].startswith("policies/shipping.md#0")
    assert "stub says" in "".join(
        c.choices[0].delta.content or "" for c in stream.parse() if c.choices
    )


def test_an_agent_without_knowledge_sends_no_context(served: KnowledgeGateway) -> None:
    answer = invoke(served, "plain", "How many days do I have to get a refund?").json()
    assert answer["sources"] == []
    assert context_of(served.sent_upstream()) == ""


def test_an_edited_config_map_is_served_without_restart(served: KnowledgeGateway) -> None:
    pid = served.process.proc.pid
    edited = REFUNDS.replace("45 days", "60 days")
    write_config_map_volume(
        served.knowledge / "shop-policies", {"refunds.md": edited, "shipping.md": SHIPPING}
    )

    def served_edit() -> bool | None:
        invoke(served, "shop", "How many days do I have to get a refund?")
        return "within 60 days" in context_of(served.sent_upstream()) or None

    eventually(served_edit, timeout=15, what="the edited refunds.md to be retrieved")
    assert served.process.proc.pid == pid and served.process.proc.poll() is None


def test_the_span_tree_follows_the_request_and_its_trace_id_comes_back(
    served: KnowledgeGateway,
) -> None:
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = invoke(
        served,
        "shop",
        "Where do orders ship from?",
        traceparent=f"00-{caller_trace}-00f067aa0ba902b7-01",
    )
    trace_id = response.headers["x-kaizen-trace-id"]
    assert trace_id == caller_trace  # the caller's W3C trace continues here

    def complete(spans: list[ReceivedSpan]) -> bool:
        return {s.name.split(" ")[0] for s in spans} >= {"invoke_agent", "retrieval", "chat"}

    spans = served.otlp.wait_for(trace_id, complete)
    (root,) = [s for s in spans if s.name == "invoke_agent shop"]
    assert root.parent_id == "00f067aa0ba902b7" and root.kind == "SERVER"
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "shop"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["kaizen.request_id"] == response.json()["requestId"]
    assert root.resource["service.name"] == "kaizen-gateway-test"
    below = {s.name: s for s in children(spans, root)}
    assert set(below) == {"retrieval", "chat gpt-4o-mini"}
    retrieval = below["retrieval"]
    assert retrieval.attributes["gen_ai.operation.name"] == "retrieval"
    assert retrieval.attributes["gen_ai.data_source.id"] == "shop"
    assert retrieval.attributes["gen_ai.retrieval.top_k"] == 2
    assert retrieval.attributes["kaizen.retrieval.sources"][0] == "policies/shipping.md#0"
    chat = below["chat gpt-4o-mini"]
    assert chat.kind == "CLIENT"
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "openai-compatible"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat.attributes["gen_ai.usage.input_tokens"] == response.json()["usage"]["prompt_tokens"]
    assert (
        chat.attributes["gen_ai.usage.output_tokens"]
        == response.json()["usage"]["completion_tokens"]
    )
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert chat.attributes["server.address"] == "127.0.0.1"


def test_a_streamed_answer_is_one_trace_whose_model_span_has_its_usage(
    served: KnowledgeGateway,
) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="plain",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    trace_id = raw.headers["x-kaizen-trace-id"]
    assert len(trace_id) == 32
    chunks = list(raw.parse())
    spans = served.otlp.wait_for(trace_id, lambda s: len(s) >= 2)
    (root,) = [s for s in spans if s.parent_id == ""]
    assert root.name == "invoke_agent plain"
    (chat,) = children(spans, root)
    assert chat.attributes["gen_ai.request.stream"] is True
    assert chat.attributes["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens


def test_a_failed_request_is_a_failed_span(served: KnowledgeGateway) -> None:
    response = httpx.post(f"{served.url}/agents/nobody/invoke", json={"input": "hi"}, timeout=10)
    assert response.status_code == 404
    spans = served.otlp.wait_for(response.headers["x-kaizen-trace-id"], lambda s: len(s) >= 1)
    assert spans[0].attributes["http.response.status_code"] == 404
    assert spans[0].attributes["error.type"] == "404"
    assert spans[0].status_code == 2  # STATUS_CODE_ERROR
