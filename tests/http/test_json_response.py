"""The prediction's JSON answer: the same values as the standard library's JSON, and `null` for a value that is
not finite (where the standard library would have failed the request)."""

from __future__ import annotations

import json
import math

from core.http.json_response import FastJSONResponse


def test_the_answer_is_the_json_the_standard_library_would_give() -> None:
    answer = {"experiment_id": "fe", "outputs": [[0.1, -2.5e-07, 3.0], [{"label": "é ✓", "score": 0.99}]],
              "cold_load": False, "replica": None, "timing": {"total_ms": 1.234}, "batch_inputs": 2}
    body = FastJSONResponse(answer).body
    assert json.loads(body) == answer  # every float read back exactly (its text may differ: 2.5e-7, not 2.5e-07)
    assert "é ✓".encode() in body  # UTF-8, as the standard library's answer was


def test_a_value_that_is_not_finite_is_null() -> None:
    body = FastJSONResponse({"outputs": [[math.nan, math.inf, -math.inf, 1.5]]}).body
    assert json.loads(body) == {"outputs": [[None, None, None, 1.5]]}
