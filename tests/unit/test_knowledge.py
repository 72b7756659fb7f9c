"""Knowledge: chunking, BM25 retrieval (bm25s), what the model and the caller are given,
and reading a mounted ConfigMap folder as the kubelet lays it out."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaizen_api.v1alpha1.agent import RetrievalSpec
from kaizen_gateway.knowledge import (
    CHUNK_WORDS,
    Document,
    build_index,
    chunk_text,
    html_text,
    latest_user_text,
    read_config_map,
    stat_signature,
)
from tests.support.mounts import write_config_map_volume

pytestmark = pytest.mark.unit

DOCS = [
    Document(
        "policies",
        "refunds.md",
        "# Refunds\n\nCustomers may return any item within 30 days for a full refund. "
        "Refunds are paid to the original card within five business days.",
    ),
    Document(
        "policies",
        "shipping.md",
        "# Shipping\n\nOrders ship from the Porto warehouse. Standard shipping takes three "
        "business days; express shipping arrives the next day.",
    ),
    Document(
        "office",
        "contact.txt",
        "The office is in Lisbon, Rua Augusta 12, open Monday to Friday from 9 to 17. "
        "Call +351 21 000 0000 for the front desk.",
    ),
]


def test_the_source_holding_the_fact_ranks_first() -> None:
    index, dropped = build_index(DOCS, RetrievalSpec(top_k=2))
    assert dropped == 0
    cases = {
        "How many days do I have to return an item for a refund?": ("policies", "refunds.md"),
        "when does express shipping arrive": ("policies", "shipping.md"),
        "Where is your office located?": ("office", "contact.txt"),
    }
    for question, (source, document) in cases.items():
        hits = index.search(question).hits
        assert (hits[0].chunk.source, hits[0].chunk.document) == (source, document), question
        assert len(hits) <= 2


def test_stemming_matches_other_word_forms() -> None:
    index, _ = build_index(DOCS, RetrievalSpec())
    hits = index.search("refunding returned items").hits
    assert hits[0].chunk.document == "refunds.md"


def test_a_query_sharing_no_term_retrieves_nothing() -> None:
    index, _ = build_index(DOCS, RetrievalSpec())
    assert index.search("quantum chromodynamics").hits == ()
    assert index.search("   ").hits == ()


def test_long_paragraphs_are_cut_into_overlapping_windows() -> None:
    words = [f"w{i}" for i in range(CHUNK_WORDS * 2 + 7)]
    chunks = chunk_text(" ".join(words))
    assert len(chunks) == 3
    assert all(len(c.split()) <= CHUNK_WORDS for c in chunks)
    # every word is in some chunk, and consecutive windows share words
    assert set(words) == {w for c in chunks for w in c.split()}
    assert set(chunks[0].split()) & set(chunks[1].split())


def test_short_paragraphs_are_packed_together_up_to_the_chunk_size() -> None:
    text = "\n\n".join(f"Paragraph {i} has five words." for i in range(100))
    chunks = chunk_text(text)
    assert 1 < len(chunks) < 100
    assert chunks[0].startswith("Paragraph 0 has")
    assert all(len(c.split()) <= CHUNK_WORDS for c in chunks)


def test_max_chunks_bounds_the_index_and_says_how_many_were_left_out() -> None:
    text = "\n\n".join(" ".join(["word"] * CHUNK_WORDS) for _ in range(10))
    index, dropped = build_index([Document("big", "a.txt", text)], RetrievalSpec(max_chunks=4))
    assert len(index.chunks) == 4
    assert dropped == 6


def test_the_context_message_follows_the_prompt_and_names_its_sources() -> None:
    index, _ = build_index(DOCS, RetrievalSpec(top_k=1))
    found = index.search("where is the office")
    messages = [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "where is the office"},
    ]
    sent = found.apply(messages)
    assert [m["role"] for m in sent] == ["system", "system", "user"]
    assert sent[0]["content"] == "You help."
    assert "[source: office/contact.txt#0]" in sent[1]["content"]
    assert "Rua Augusta 12" in sent[1]["content"]
    assert found.sources() == [
        {
            "name": "office",
            "document": "contact.txt",
            "chunk": 0,
            "score": found.sources()[0]["score"],
        }
    ]
    assert found.header() == "office/contact.txt#0"
    assert messages[1]["role"] == "user" and len(messages) == 2  # the caller's list is untouched


def test_the_latest_user_message_is_the_query() -> None:
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url"}]},
        {"role": "tool", "content": "tool output"},
    ]
    assert latest_user_text(messages) == "second"
    assert latest_user_text([{"role": "system", "content": "x"}]) == ""


def test_html_is_reduced_to_its_visible_text() -> None:
    text = html_text(
        "<html><head><style>p{}</style><script>var secret=1</script></head>"
        "<body><h1>Refunds</h1><p>Within 30 days.</p></body></html>"
    )
    assert "Refunds" in text and "Within 30 days." in text
    assert "secret" not in text and "p{}" not in text


def test_a_mounted_config_map_is_read_and_its_update_changes_the_signature(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "handbook"
    write_config_map_volume(folder, {"a.md": "alpha", "b.md": "beta"})
    documents, problems = read_config_map(folder, 1024)
    assert documents == [("a.md", "alpha"), ("b.md", "beta")]
    assert problems == []
    before = stat_signature(folder)
    write_config_map_volume(folder, {"a.md": "alpha, edited", "b.md": "beta"})
    assert stat_signature(folder) != before
    assert read_config_map(folder, 1024)[0][0] == ("a.md", "alpha, edited")


def test_a_document_over_the_cap_is_cut_and_reported(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "huge.txt").write_text("x" * 5000)
    documents, problems = read_config_map(folder, 1024)
    assert len(documents[0][1]) == 1024
    assert problems == ["big/huge.txt: cut at maxDocumentBytes (1024 bytes)"]


def test_a_missing_config_map_is_a_problem_not_an_error(tmp_path: Path) -> None:
    documents, problems = read_config_map(tmp_path / "absent", 1024)
    assert documents == []
    assert problems == ["ConfigMap absent is not mounted (does it exist?)"]
