"""Step input templates: a small fill-in syntax, never evaluated, with mistakes refused
when the Pipeline is validated."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kaizen_api.v1alpha1.pipeline import (
    PipelineSpec,
    TemplateError,
    render_template,
    template_references,
)

pytestmark = pytest.mark.unit


def test_fields_are_filled_with_the_input_and_earlier_outputs() -> None:
    text = render_template(
        "Q: {{input}}\nDraft: {{ steps.draft }}\nLast: {{previous}}",
        input="why?",
        previous="edited",
        steps={"draft": "because"},
    )
    assert text == "Q: why?\nDraft: because\nLast: edited"


def test_values_are_inserted_verbatim_not_parsed_again() -> None:
    # An agent answering with template syntax must not reach other steps' outputs.
    text = render_template(
        "{{previous}}", input="secret input", previous="{{input}} {{steps.a}}", steps={"a": "x"}
    )
    assert text == "{{input}} {{steps.a}}"


def test_unknown_fields_are_refused_with_the_allowed_ones_named() -> None:
    with pytest.raises(TemplateError, match=r"unknown template field \{\{os.environ\}\}"):
        template_references("{{ os.environ }}")
    assert template_references("{{input}} {{steps.a-b_1}} {{outputs}}") == [
        "input",
        "steps.a-b_1",
        "outputs",
    ]


def _spec(pattern: str, steps: list[dict[str, Any]], **extra: Any) -> PipelineSpec:
    return PipelineSpec.model_validate({"pattern": pattern, "steps": steps, **extra})


def test_a_sequential_step_may_only_name_earlier_steps() -> None:
    _spec(
        "Sequential",
        [
            {"name": "a", "agentRef": {"name": "x"}},
            {"name": "b", "agentRef": {"name": "x"}, "input": "{{steps.a}} {{input}}"},
        ],
    )
    with pytest.raises(ValidationError, match=r"\{\{steps.b\}\} must name an earlier step"):
        _spec(
            "Sequential",
            [
                {"name": "a", "agentRef": {"name": "x"}, "input": "{{steps.b}}"},
                {"name": "b", "agentRef": {"name": "x"}},
            ],
        )


def test_previous_only_exists_in_sequential_pipelines() -> None:
    with pytest.raises(ValidationError, match="only exists in Sequential pipelines"):
        _spec(
            "Parallel",
            [
                {"name": "a", "agentRef": {"name": "x"}, "input": "{{previous}}"},
                {"name": "b", "agentRef": {"name": "x"}},
            ],
        )


def test_outputs_is_for_aggregators() -> None:
    steps = [{"name": "a", "agentRef": {"name": "x"}}, {"name": "b", "agentRef": {"name": "y"}}]
    aggregator = {"name": "merge", "agentRef": {"name": "z"}, "input": "Merge:\n{{outputs}}"}
    spec = _spec("Parallel", steps, parallel={"merge": "Aggregate", "aggregator": aggregator})
    assert [s.name for s in spec.targets()] == ["a", "b", "merge"]
    with pytest.raises(ValidationError, match="only exists in aggregators"):
        _spec("Parallel", [{**steps[0], "input": "{{outputs}}"}, steps[1]])
