"""A child the apiserver refuses as invalid stalls its parent with the apiserver's
message instead of retrying forever."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from kaizen_operator.conditions import get_condition, rejected_status
from kaizen_operator.kube import ApiException, refusal

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_rejected_status_stalls_keeps_the_rest_and_observes_the_generation() -> None:
    gateway = {
        "metadata": {"generation": 4},
        "status": {"servedRevisions": [{"agent": "a", "revision": 2}], "observedGeneration": 3},
    }
    status = rejected_status(gateway, "a child was refused: bad image", NOW)
    assert status["servedRevisions"] == [{"agent": "a", "revision": 2}]
    assert status["observedGeneration"] == 4
    ready = get_condition(status["conditions"], "Ready")
    stalled = get_condition(status["conditions"], "Stalled")
    assert ready and ready["status"] == "False" and ready["reason"] == "ChildRejected"
    assert stalled and stalled["status"] == "True" and "bad image" in stalled["message"]


def test_only_invalid_requests_count_as_refusals() -> None:
    invalid = ApiException(status=422, reason="Unprocessable Entity")
    invalid.body = json.dumps({"message": 'Deployment "g" is invalid: spec.template: bad'})
    assert refusal(invalid) == 'Deployment "g" is invalid: spec.template: bad'
    garbled = ApiException(status=400, reason="Bad Request")
    garbled.body = "not json"
    assert refusal(garbled) == "refused with HTTP 400"
    for status in (403, 404, 409, 500, 503):
        assert refusal(ApiException(status=status, reason="x")) is None
