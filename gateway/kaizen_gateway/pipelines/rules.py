"""The pure rules of the patterns (no I/O): how Parallel outputs are concatenated, how an
Ensemble votes, and which route a Router picks. Each follows the field descriptions of
kaizen_api.v1alpha1.pipeline word for word."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from typing import Any

from kaizen_api.v1alpha1.pipeline import Route, RouteMatch

_PATH_PART = re.compile(r"\.([a-zA-Z0-9_-]+)|\[([0-9]+)\]")
_EDGES = string.punctuation + string.whitespace


def labelled(outputs: Sequence[tuple[str, str]]) -> str:
    """Outputs, each under a ``## <step>`` heading, in the order given (step order)."""
    return "\n\n".join(f"## {name}\n\n{output}" for name, output in outputs)


def normalise(answer: str) -> str:
    """An answer as a vote: lowercase, whitespace collapsed, surrounding punctuation
    dropped."""
    return " ".join(answer.lower().split()).strip(_EDGES)


def majority(answers: Sequence[tuple[str, str]]) -> tuple[str, str, int] | None:
    """The winning answer of (step, answer) pairs in step order: the normalised answer
    most members give; a tie goes to the earliest step among the tied answers. Returns
    (the winning answer as its earliest step wrote it, that step, votes); None when
    there are no answers."""
    counts: dict[str, int] = {}
    first: dict[str, tuple[int, str, str]] = {}
    for index, (step, answer) in enumerate(answers):
        key = normalise(answer)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, (index, step, answer))
    if not counts:
        return None
    best = max(counts, key=lambda k: (counts[k], -first[k][0]))
    _, step, answer = first[best]
    return answer, step, counts[best]


def _json_value(document: Any, path: str) -> tuple[bool, Any]:
    """(found, value) of a ``$.a.b[0]`` path in a parsed JSON document."""
    value = document
    for key, index in _PATH_PART.findall(path[1:]):
        if key:
            if not isinstance(value, dict) or key not in value:
                return False, None
            value = value[key]
        else:
            if not isinstance(value, list) or int(index) >= len(value):
                return False, None
            value = value[int(index)]
    return True, value


def _as_text(value: Any) -> str:
    """A JSON value compared as text: strings as they are, the rest as JSON writes them."""
    return value if isinstance(value, str) else json.dumps(value)


def matches(match: RouteMatch, text: str) -> bool:
    """Whether every condition set in ``match`` holds for the input."""
    if match.keywords is not None and not any(
        re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE)
        for word in match.keywords
    ):
        return False
    if match.regex is not None and re.search(match.regex, text) is None:
        return False
    if match.json_path is not None:
        try:
            document = json.loads(text)
        except ValueError:
            return False  # never holds on an input that is not JSON
        found, value = _json_value(document, match.json_path)
        if not found:
            return False
        if match.equals is not None and _as_text(value) != match.equals:
            return False
    return True


def first_route(routes: Sequence[Route], text: str) -> Route | None:
    """The first route, in order, whose match holds (routes without one never do)."""
    return next((r for r in routes if r.match is not None and matches(r.match, text)), None)


def classified_route(routes: Sequence[Route], answer: str) -> Route | None:
    """The route a classifier's answer names (trimmed, case-insensitive)."""
    wanted = answer.strip().lower()
    return next((r for r in routes if r.name.lower() == wanted), None)
