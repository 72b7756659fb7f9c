"""Hypothesis strategies generated from the CRDs' structural schemas.

Covers exactly the constructs our generator emits (objects, arrays, strings with
patterns/enums/bounds/date-time, integers, numbers, booleans, int-or-string
quantities, maps and free-form objects); anything else fails loudly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

# Text a YAML/JSON client can send: no control characters, no lone surrogates.
TEXT = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
JSON_LEAF = st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(TEXT, max_size=8)
FREE_FORM = st.dictionaries(
    st.text(TEXT, min_size=1, max_size=8),
    st.recursive(
        JSON_LEAF,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(TEXT, min_size=1, max_size=5), inner, max_size=3)
        ),
        max_leaves=6,
    ),
    max_size=3,
)
SMALL_LIST = 3


def _string(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("format") == "date-time":
        return st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ).map(lambda d: d.replace(microsecond=0).isoformat().replace("+00:00", "Z"))
    min_size = schema.get("minLength", 0)
    max_size = min(schema.get("maxLength", 40), 40)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: min_size <= len(s) <= schema.get("maxLength", 10**9)
        )
    return st.text(TEXT, min_size=min_size, max_size=max(max_size, min_size))


def strategy(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for values that satisfy ``schema``'s OpenAPI constraints (not its CEL)."""
    if schema.get("x-kubernetes-int-or-string"):
        return st.integers(0, 10_000) | st.from_regex(r"^[0-9]{1,4}(m|Mi|Gi|k)?$", fullmatch=True)
    kind = schema.get("type")
    if kind == "object":
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return FREE_FORM
        if "additionalProperties" in schema:
            return st.dictionaries(
                st.from_regex(r"^[a-z][a-z0-9./-]{0,20}$", fullmatch=True),
                strategy(schema["additionalProperties"]),
                max_size=min(schema.get("maxProperties", SMALL_LIST), SMALL_LIST),
            )
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: strategy(v) for k, v in props.items() if k in required},
            optional={k: strategy(v) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(
            strategy(schema["items"]),
            min_size=schema.get("minItems", 0),
            max_size=min(
                schema.get("maxItems", SMALL_LIST), max(SMALL_LIST, schema.get("minItems", 0))
            ),
        )
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if kind == "number":
        return st.floats(schema.get("minimum", -1e9), schema.get("maximum", 1e9), allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    raise ValueError(f"no strategy for schema {schema}")
