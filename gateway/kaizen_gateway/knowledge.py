"""An agent's knowledge: documents from mounted ConfigMaps and URLs, chunked and indexed
with BM25 (the `bm25s` library) when the bundle loads; each request retrieves the
chunks most relevant to its latest user message.

The index of each agent is rebuilt when its revision changes or a mounted knowledge
file changes (the kubelet swaps a ConfigMap volume's files in place; their stat
signature moves), off the event loop. Requests keep using the previous index until
the new one is built. A URL is fetched once per bundle that names it (retried on
failure), through the same SSRF guard as the model upstreams, and cut at the agent's
``maxDocumentBytes``. Problems (a missing ConfigMap, a refused URL, a cut document)
are kept per agent and shown on /readyz; they never stop the gateway serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import bm25s  # type: ignore[import-untyped]
import Stemmer  # type: ignore[import-not-found]

from kaizen_api.netguard import DestinationNotAllowed, check_url
from kaizen_api.netguard_aiohttp import read_at_most
from kaizen_api.v1alpha1.agent import KnowledgeSource, RetrievalSpec
from kaizen_api.v1alpha1.bundle import KNOWLEDGE_MOUNT, AgentBundle, BundledAgent
from kaizen_gateway import metrics, tracing

log = logging.getLogger("kaizen_gateway.knowledge")

CHUNK_WORDS = 160  # about 1,000 characters of English: a paragraph or two
OVERLAP_WORDS = 30  # a long paragraph is cut into windows sharing this many words
URL_TIMEOUT = 10.0  # seconds for fetching one url source
URL_RETRY = 30.0  # seconds before a failed url source is fetched again
MAX_REDIRECTS = 3
HOW_TO_ALLOW = "start kaizen-gateway with KAIZEN_GATEWAY_ALLOW_LINK_LOCAL=1"
_STEMMER = Stemmer.Stemmer("english")
_PARAGRAPHS = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Chunk:
    """A piece of one document."""

    source: str  # the KnowledgeSource's name
    document: str  # the ConfigMap key, or the URL
    index: int  # position of the chunk in its document, from 0
    text: str


@dataclass(frozen=True)
class Document:
    """One document of a source, as read."""

    source: str
    name: str
    text: str


def chunk_text(text: str, words: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS) -> list[str]:
    """Paragraphs packed into chunks of at most ``words`` words; a longer paragraph is
    cut into overlapping windows, so a fact is never split without a copy whole."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for paragraph in _PARAGRAPHS.split(text):
        tokens = paragraph.split()
        if not tokens:
            continue
        if len(tokens) > words:
            if current:
                chunks.append("\n\n".join(current))
                current, size = [], 0
            step = words - overlap
            for start in range(0, len(tokens) - overlap, step):
                chunks.append(" ".join(tokens[start : start + words]))
            continue
        if size + len(tokens) > words and current:
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(paragraph.strip())
        size += len(tokens)
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def _tokens(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(  # type: ignore[no-any-return]
        texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False
    )


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk and its BM25 score."""

    chunk: Chunk
    score: float


@dataclass(frozen=True)
class Retrieval:
    """The chunks retrieved for one request (empty when the agent has no knowledge)."""

    hits: tuple[Hit, ...] = ()

    def sources(self) -> list[dict[str, Any]]:
        """What the answer lists: source name, document, chunk number, score."""
        return [
            {
                "name": h.chunk.source,
                "document": h.chunk.document,
                "chunk": h.chunk.index,
                "score": round(h.score, 4),
            }
            for h in self.hits
        ]

    def header(self) -> str:
        """The sources as one header value: ``name/document#chunk`` joined by commas
        (non-ASCII escaped, so any document name fits a header)."""
        text = ", ".join(f"{h.chunk.source}/{h.chunk.document}#{h.chunk.index}" for h in self.hits)
        return text.encode("ascii", "backslashreplace").decode()

    def apply(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``messages`` with a system message of the retrieved chunks after the leading
        system messages (the agent's prompt), so the prompt stays first."""
        if not self.hits:
            return messages
        blocks = [
            f"[source: {h.chunk.source}/{h.chunk.document}#{h.chunk.index}]\n{h.chunk.text}"
            for h in self.hits
        ]
        context = {
            "role": "system",
            "content": "Context from the agent's knowledge (cite the source names you use):\n\n"
            + "\n\n".join(blocks),
        }
        at = 0
        while at < len(messages) and messages[at].get("role") in ("system", "developer"):
            at += 1
        return [*messages[:at], context, *messages[at:]]


NOTHING = Retrieval()  # what an agent without knowledge gets, allocated once


@dataclass(frozen=True)
class AgentIndex:
    """The BM25 index over one agent's chunks."""

    chunks: tuple[Chunk, ...]
    top_k: int
    retriever: Any = field(repr=False, default=None)  # bm25s.BM25; None without chunks

    def search(self, query: str, top_k: int | None = None) -> Retrieval:
        """The chunks that match ``query``, best first (none that share no term)."""
        if self.retriever is None or not query.strip():
            return NOTHING
        k = min(top_k or self.top_k, len(self.chunks))
        found, scores = self.retriever.retrieve(
            _tokens([query]), k=k, show_progress=False, n_threads=1
        )
        return Retrieval(
            tuple(
                Hit(self.chunks[int(i)], float(s))
                for i, s in zip(found[0], scores[0], strict=True)
                if s > 0
            )
        )


def build_index(documents: Iterable[Document], settings: RetrievalSpec) -> tuple[AgentIndex, int]:
    """Chunk and index ``documents`` (CPU work: run it off the event loop). Returns the
    index and how many chunks were left out past ``max_chunks``."""
    chunks: list[Chunk] = []
    dropped = 0
    for doc in documents:
        for i, text in enumerate(chunk_text(doc.text)):
            if len(chunks) >= settings.max_chunks:
                dropped += 1
                continue
            chunks.append(Chunk(doc.source, doc.name, i, text))
    if not chunks:
        return AgentIndex((), settings.top_k), dropped
    retriever = bm25s.BM25()
    retriever.index(_tokens([c.text for c in chunks]), show_progress=False)
    return AgentIndex(tuple(chunks), settings.top_k, retriever), dropped


def latest_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (text parts joined; "" when there is none)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
        return ""
    return ""


class _TextOfHTML(HTMLParser):
    """The visible text of an HTML page (script and style left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("p", "div", "br", "li", "h1", "h2", "h3", "h4", "tr", "section"):
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(html: str) -> str:
    """Text of an HTML document, paragraphs separated by blank lines."""
    parser = _TextOfHTML()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def _decode(raw: bytes, limit: int) -> tuple[str, bool]:
    """Text of at most ``limit`` bytes (a character cut at the limit is dropped)."""
    return raw[:limit].decode("utf-8", "ignore"), len(raw) > limit


def read_config_map(folder: Path, limit: int) -> tuple[list[tuple[str, str]], list[str]]:
    """The (key, text) documents of a mounted ConfigMap folder and the problems found.
    The kubelet's ``..data`` links and timestamped folders start with dots: skipped."""
    documents, problems = [], []
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return [], [f"ConfigMap {folder.name} is not mounted (does it exist?)"]
    for path in entries:
        try:
            with path.open("rb") as handle:
                raw = handle.read(limit + 1)
        except OSError as exc:
            problems.append(f"{folder.name}/{path.name}: {exc.strerror}")
            continue
        text, cut = _decode(raw, limit)
        if cut:
            problems.append(f"{folder.name}/{path.name}: cut at maxDocumentBytes ({limit} bytes)")
        documents.append((path.name, text))
    return documents, problems


def stat_signature(folder: Path) -> tuple[tuple[str, int, int, int], ...]:
    """What changes when the kubelet updates a ConfigMap volume (name, inode, size,
    mtime of each file): cheap enough to take every second."""
    found = []
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            if path.name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                st = path.stat()
                found.append((path.name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(sorted(found))


async def fetch_url(
    session: aiohttp.ClientSession, url: str, limit: int, *, allow_link_local: bool
) -> tuple[str, bool]:
    """The text of ``url`` (HTML reduced to its text), read up to ``limit`` bytes.
    Raises DestinationNotAllowed, aiohttp.ClientError, TimeoutError or ValueError."""
    timeout = aiohttp.ClientTimeout(total=URL_TIMEOUT)
    for _ in range(MAX_REDIRECTS + 1):
        # Literal addresses never reach the guarded resolver: checked here, per hop.
        check_url(url, allow_link_local=allow_link_local, how_to_allow=HOW_TO_ALLOW)
        async with session.get(url, timeout=timeout, allow_redirects=False) as resp:
            if resp.status in (301, 302, 303, 307, 308) and "location" in resp.headers:
                url = urljoin(url, resp.headers["location"])
                continue
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            raw = await read_at_most(resp, limit + 1)  # one byte past the cap tells a cut
            text, cut = _decode(raw, limit)
            if "html" in resp.headers.get("content-type", ""):
                text = html_text(text)
            return text, cut
    raise ValueError(f"more than {MAX_REDIRECTS} redirects")


@dataclass
class _Fetched:
    text: str | None  # None: not fetched
    problem: str | None
    at: float
    retry: bool  # a transient failure, fetched again after URL_RETRY


class KnowledgeBase:
    """The knowledge indexes of the agents in the served bundle."""

    def __init__(self, knowledge_dir: Path, *, allow_link_local: bool = False) -> None:
        self.knowledge_dir = knowledge_dir
        self.allow_link_local = allow_link_local
        self.indexes: dict[str, AgentIndex] = {}
        self.problems: dict[str, list[str]] = {}  # agent -> what went wrong
        self._built: dict[str, tuple[Any, ...]] = {}  # agent -> signature indexed
        self._urls: dict[tuple[str, int], _Fetched] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self,
        session: aiohttp.ClientSession,
        current: Callable[[], AgentBundle | None],
        interval: float = 1.0,
    ) -> None:
        """Index the current bundle, then follow it (and the mounted files) every
        ``interval`` seconds."""
        self._session = session
        await self.refresh(current())

        async def follow() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.refresh(current())
                except Exception:  # a bug must not stop the indexing for good
                    log.exception("knowledge refresh failed")

        self._task = asyncio.create_task(follow())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ------------------------------------------------------------------ indexing

    def folder(self, bundle: AgentBundle, config_map: str) -> Path:
        """Where this process finds a ConfigMap's files: the bundle's mount path, under
        --knowledge-dir when that is not the pod's mount point."""
        mount = Path((bundle.knowledge_mounts or {}).get(config_map, config_map))
        with contextlib.suppress(ValueError):
            return self.knowledge_dir / mount.relative_to(KNOWLEDGE_MOUNT)
        return self.knowledge_dir / mount.name

    async def refresh(self, bundle: AgentBundle | None) -> None:
        """Rebuild the index of each agent whose revision or documents changed."""
        agents = [a for a in (bundle.agents if bundle else []) if _sources(a)]
        wanted = {a.name for a in agents}
        for gone in set(self.indexes) - wanted:
            with contextlib.suppress(KeyError):
                metrics.KNOWLEDGE_CHUNKS.remove(gone)
            self.indexes.pop(gone, None)
            self._built.pop(gone, None)
            self.problems.pop(gone, None)
        urls = {
            (s.url, _settings(a).max_document_bytes) for a in agents for s in _sources(a) if s.url
        }
        for key in set(self._urls) - urls:
            del self._urls[key]
        await self._fetch_urls(urls)
        if bundle is None:
            return
        for agent in agents:
            signature = self._signature(bundle, agent)
            if self._built.get(agent.name) == signature:
                continue
            settings = _settings(agent)
            # Reading files and indexing happen off the event loop: requests go on.
            documents, problems = await asyncio.to_thread(self._documents, bundle, agent)
            index, dropped = await asyncio.to_thread(build_index, documents, settings)
            if dropped:
                problems.append(f"{dropped} chunks left out past maxChunks ({settings.max_chunks})")
            self.indexes[agent.name] = index
            self.problems[agent.name] = problems
            self._built[agent.name] = signature
            metrics.KNOWLEDGE_CHUNKS.labels(agent.name).set(len(index.chunks))
            for problem in problems:
                log.warning("knowledge of agent %s: %s", agent.name, problem)
            log.info("agent %s: indexed %d chunks", agent.name, len(index.chunks))

    def _signature(self, bundle: AgentBundle, agent: BundledAgent) -> tuple[Any, ...]:
        context = agent.spec.context
        parts: list[Any] = [
            agent.hash,
            agent.revision,
            context.model_dump_json() if context else "",
        ]
        for source in _sources(agent):
            if source.config_map_ref is not None:
                parts.append(stat_signature(self.folder(bundle, source.config_map_ref.name)))
            elif source.url:
                fetched = self._urls.get((source.url, _settings(agent).max_document_bytes))
                parts.append(fetched.at if fetched else None)
        return tuple(parts)

    def _documents(
        self, bundle: AgentBundle, agent: BundledAgent
    ) -> tuple[list[Document], list[str]]:
        limit = _settings(agent).max_document_bytes
        documents: list[Document] = []
        problems: list[str] = []
        for source in _sources(agent):
            if source.config_map_ref is not None:
                found, trouble = read_config_map(
                    self.folder(bundle, source.config_map_ref.name), limit
                )
                documents += [Document(source.name, key, text) for key, text in found]
                problems += [f"source {source.name}: {p}" for p in trouble]
            elif source.url:
                fetched = self._urls.get((source.url, limit))
                if fetched and fetched.text is not None:
                    documents.append(Document(source.name, source.url, fetched.text))
                if fetched and fetched.problem:
                    problems.append(f"source {source.name}: {fetched.problem}")
        return documents, problems

    async def _fetch_urls(self, urls: set[tuple[str, int]]) -> None:
        now = time.monotonic()
        due = [
            key
            for key in urls
            if key not in self._urls
            or (self._urls[key].retry and now - self._urls[key].at >= URL_RETRY)
        ]
        if due and self._session is not None:
            session = self._session
            await asyncio.gather(*(self._fetch(session, url, limit) for url, limit in due))

    async def _fetch(self, session: aiohttp.ClientSession, url: str, limit: int) -> None:
        key = (url, limit)
        try:
            text, cut = await fetch_url(session, url, limit, allow_link_local=self.allow_link_local)
        except DestinationNotAllowed as exc:
            # Refused for good: the same URL is refused again until the agent changes.
            self._urls[key] = _Fetched(None, f"url refused: {exc}", time.monotonic(), False)
            return
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            reason = str(exc) or exc.__class__.__name__
            failure = f"url not fetched ({reason}); retried every {URL_RETRY:.0f}s"
            self._urls[key] = _Fetched(None, failure, time.monotonic(), True)
            return
        problem = f"url cut at maxDocumentBytes ({limit} bytes)" if cut else None
        self._urls[key] = _Fetched(text, problem, time.monotonic(), False)

    # ------------------------------------------------------------------ requests

    def retrieve(self, agent: str, messages: list[dict[str, Any]]) -> Retrieval:
        """The chunks of ``agent``'s knowledge most relevant to the latest user message
        (with a retrieval span and the latency metric)."""
        index = self.indexes.get(agent)
        if index is None:
            return NOTHING
        started = time.perf_counter()
        with tracing.retrieval_span(agent, index.top_k) as span:
            found = index.search(latest_user_text(messages))
            span.retrieved(found.sources())
        metrics.RETRIEVAL_LATENCY.labels(agent).observe(time.perf_counter() - started)
        return found

    def readiness(self) -> dict[str, dict[str, Any]]:
        """For /readyz: per agent with knowledge, its chunks and what went wrong."""
        return {
            agent: {"chunks": len(index.chunks), "problems": self.problems.get(agent, [])}
            for agent, index in sorted(self.indexes.items())
        }


def _sources(agent: BundledAgent) -> list[KnowledgeSource]:
    context = agent.spec.context
    return list(context.knowledge or []) if context else []


def _settings(agent: BundledAgent) -> RetrievalSpec:
    context = agent.spec.context
    return (context.retrieval if context else None) or RetrievalSpec()
