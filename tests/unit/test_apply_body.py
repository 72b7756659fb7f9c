"""Server-side apply bodies survive the apiserver's YAML parser with any text in them
(emoji in a prompt once made a Gateway's bundle unappliable)."""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from kaizen_operator.kube import apply_body

# Any Unicode scalar value a Kubernetes string can hold (no lone surrogates).
TEXT = st.text(st.characters(exclude_categories=("Cs",)))
OBJECTS = st.dictionaries(TEXT, TEXT | st.lists(TEXT, max_size=3), max_size=4)


@given(OBJECTS)
def test_apply_body_reads_back_the_same_as_json_and_as_yaml(obj: dict[str, Any]) -> None:
    body = apply_body(obj)
    assert json.loads(body) == obj
    assert yaml.safe_load(body.decode()) == obj


def test_characters_outside_the_bmp_are_written_raw_not_as_surrogate_escapes() -> None:
    body = apply_body({"systemPrompt": "Be kind 😀"})
    assert "😀".encode() in body and b"\\ud83d" not in body
