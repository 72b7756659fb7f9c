#!/usr/bin/env python3
"""Benchmark: what knowledge retrieval adds to a request, by index size.

    python bench/knowledge_retrieval.py [--chunks 100,1000,5000,20000,50000] [--queries 400]

For each size, builds the gateway's BM25 index (kaizen_gateway.knowledge.build_index,
bm25s with English stemming) over that many synthetic chunks of about 150 words drawn
from a 20,000-word Zipf vocabulary (seeded: the same corpus every run), then times
``--queries`` searches of 8 words taken from random chunks, as one request's
retrieval does (top 4). Prints the build time, p50 and p99 per search, and p50 as a
ratio of the smallest index's p50 (the baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "api"), str(ROOT / "gateway")]

from kaizen_api.v1alpha1.agent import RetrievalSpec  # noqa: E402
from kaizen_gateway.knowledge import Document, build_index  # noqa: E402

VOCABULARY = 20_000
CHUNK_WORDS = 150


def corpus(chunks: int, rng: random.Random) -> list[str]:
    """``chunks`` paragraphs of Zipf-distributed pseudo-words (one paragraph = one chunk)."""
    words = [f"w{i}x" for i in range(VOCABULARY)]
    weights = [1 / (rank + 1) for rank in range(VOCABULARY)]
    return [" ".join(rng.choices(words, weights, k=CHUNK_WORDS)) for _ in range(chunks)]


def measure(chunks: int, queries: int) -> tuple[float, float, float]:
    rng = random.Random(chunks)  # noqa: S311 - a reproducible corpus, not a secret
    paragraphs = corpus(chunks, rng)
    started = time.perf_counter()
    index, _ = build_index(
        [Document("bench", "corpus.txt", "\n\n".join(paragraphs))],
        RetrievalSpec(top_k=4, max_chunks=chunks),
    )
    build = time.perf_counter() - started
    asks = [" ".join(rng.sample(rng.choice(paragraphs).split(), 8)) for _ in range(queries)]
    for ask in asks[:20]:  # warm-up
        index.search(ask)
    times = []
    for ask in asks:
        t0 = time.perf_counter()
        index.search(ask)
        times.append(time.perf_counter() - t0)
    times.sort()
    return build, statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--chunks", default="100,1000,5000,20000,50000")
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()
    sizes = [int(n) for n in args.chunks.split(",")]
    print(f"{'chunks':>8} {'build s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p50 / baseline':>15}")
    baseline = None
    for size in sizes:
        build, p50, p99 = measure(size, args.queries)
        baseline = baseline or p50
        print(
            f"{size:>8} {build:>9.2f} {p50 * 1000:>8.3f} {p99 * 1000:>8.3f} {p50 / baseline:>15.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
