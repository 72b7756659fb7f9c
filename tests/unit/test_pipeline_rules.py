"""The pure rules of the pipeline patterns: the Concatenate merge, the Ensemble vote, the
Router's matches and the step input templates, as the Pipeline field descriptions
document them."""

from __future__ import annotations

import pytest

from kaizen_api.v1alpha1.pipeline import Route, RouteMatch, TemplateError, render_template
from kaizen_gateway.pipelines.rules import (
    classified_route,
    first_route,
    labelled,
    majority,
    matches,
    normalise,
)


def test_concatenate_labels_each_output_in_the_order_given() -> None:
    assert labelled([("b", "two"), ("a", "one")]) == "## b\n\ntwo\n\n## a\n\none"
    assert labelled([]) == ""


@pytest.mark.parametrize(
    ("answer", "vote"),
    [
        ("  Paris. ", "paris"),
        ("PARIS", "paris"),
        ("'New   York!'", "new york"),
        ("(yes)", "yes"),
        ("a.b", "a.b"),  # only surrounding punctuation goes
        ("", ""),
    ],
)
def test_votes_are_normalised(answer: str, vote: str) -> None:
    assert normalise(answer) == vote


def test_majority_wins_and_keeps_the_earliest_wording() -> None:
    assert majority([("x", "Lyon"), ("y", "Paris."), ("z", "paris")]) == ("Paris.", "y", 2)


def test_a_tie_goes_to_the_earliest_step_among_the_tied_answers() -> None:
    assert majority([("x", "no"), ("y", "yes"), ("z", "YES"), ("w", "no")]) == ("no", "x", 2)
    assert (
        majority([("x", "maybe"), ("y", "yes"), ("z", "no"), ("w", "no"), ("v", "yes")])[1] == "y"
    )
    assert majority([]) is None


@pytest.mark.parametrize(
    ("match", "text", "holds"),
    [
        ({"keywords": ["invoice"]}, "My INVOICE is wrong", True),
        ({"keywords": ["invoice"]}, "two invoices", False),  # whole words only
        ({"keywords": ["c++"]}, "I write C++ daily", True),
        ({"keywords": ["refund", "invoice"]}, "a refund please", True),
        ({"regex": r"\border-\d+"}, "where is order-42?", True),
        ({"regex": r"^\d+$"}, "12a", False),
        (
            {"jsonPath": "$.ticket.priority", "equals": "high"},
            '{"ticket":{"priority":"high"}}',
            True,
        ),
        (
            {"jsonPath": "$.ticket.priority", "equals": "high"},
            '{"ticket":{"priority":"low"}}',
            False,
        ),
        ({"jsonPath": "$.items[1]"}, '{"items": [1, 2]}', True),
        ({"jsonPath": "$.items[2]"}, '{"items": [1, 2]}', False),
        ({"jsonPath": "$.vip", "equals": "true"}, '{"vip": true}', True),
        ({"jsonPath": "$.n", "equals": "3"}, '{"n": 3}', True),
        ({"jsonPath": "$.a"}, "not json at all", False),
        ({"keywords": ["vip"], "jsonPath": "$.a"}, '{"a": "vip"}', True),  # every field holds
        ({"keywords": ["gold"], "jsonPath": "$.a"}, '{"a": "vip"}', False),
    ],
)
def test_route_matches(match: dict[str, object], text: str, holds: bool) -> None:
    assert matches(RouteMatch.model_validate(match), text) is holds


def test_routes_are_tried_in_order_and_a_classifier_names_one() -> None:
    routes = [
        Route.model_validate({"name": "first", "step": "a", "match": {"regex": "x"}}),
        Route.model_validate({"name": "second", "step": "b", "match": {"regex": "x|y"}}),
        Route.model_validate({"name": "Manual", "step": "c"}),
    ]
    assert first_route(routes, "x") is routes[0]
    assert first_route(routes, "y") is routes[1]
    assert first_route(routes, "z") is None  # a route without a match never holds
    assert classified_route(routes, "  manual\n") is routes[2]
    assert classified_route(routes, "the manual one") is None


def test_templates_fill_fields_verbatim() -> None:
    text = render_template(
        "{{ input }} / {{previous}} / {{steps.a}} / {{outputs}} / {{steps.missing}}",
        input="{{previous}}",
        previous="p",
        steps={"a": "A"},
        outputs="O",
    )
    assert text == "{{previous}} / p / A / O / "
    with pytest.raises(TemplateError):
        render_template("{{ secrets }}", input="")
