"""Every endpoint in the OpenAPI document, fuzzed: no 5xx, every refusal an ARM-shaped 4xx.

The document is read from the running server, so a new route is fuzzed as soon as it
exists. Hypothesis draws path, query and body values from each operation's schema
(plus the ``api-version`` values the routes declare); the server must answer each one
with a success or with a 4xx whose body is ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import os
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from arm import SUB, Arm
from servers import TOKEN

EXAMPLES = int(os.environ.get("PYHOTPATCH_FUZZ_EXAMPLES", "25"))
#: routes whose answers are not JSON by design
NOT_JSON = {"/metadata/endpoints"}


def _operations(arm: Arm) -> list[Any]:
    with arm.http() as client:
        document = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    return [result.ok() for result in schema.get_all_operations()]


def _check(case: Any, response: requests.Response) -> None:
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if response.status_code >= 400 and case.method.upper() != "HEAD":  # HEAD answers carry no body
        body = response.json()
        assert set(body) == {"error"}, where
        assert isinstance(body["error"]["code"], str) and body["error"]["code"], where
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], where


@pytest.mark.slow
def test_no_endpoint_fails_or_answers_outside_arm_shape(arm: Arm) -> None:
    arm.token("Owner", SUB)
    operations = _operations(arm)
    assert len(operations) >= 10
    session = requests.Session()
    calls: dict[str, int] = {}
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @hypothesis.given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            response = case.call(
                base_url=arm.url,
                session=session,
                headers={"Authorization": f"Bearer {TOKEN}"},
                verify=str(arm.ca),
            )
            _check(case, response)
            label = case.operation.label
            calls[label] = calls.get(label, 0) + 1

        fuzz()
    session.close()
    assert set(calls) == {operation.label for operation in operations}
    assert sum(calls.values()) >= 2 * len(operations)
