"""Task parameters of a request (`normalize`, `top_k`, `max_new_tokens`), validated before anything runs.

Why this module exists: a bad parameter is the client's error (422), found on the request path
before the request is recorded or sent to a model — so the ingress validates without importing the
model stack (this module needs only pydantic).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.serving.errors import InvalidInput
from core.serving.registry import Task


class TaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureExtractionParams(TaskParams):
    normalize: bool = True


class TextClassificationParams(TaskParams):
    top_k: int = Field(1, ge=1)


class TextGenerationParams(TaskParams):
    max_new_tokens: int = Field(20, ge=1)


PARAMS_BY_TASK: dict[Task, type[TaskParams]] = {
    Task.FEATURE_EXTRACTION: FeatureExtractionParams,
    Task.TEXT_CLASSIFICATION: TextClassificationParams,
    Task.TEXT_GENERATION: TextGenerationParams,
}
#: Each task's parameters when a request gives none (most requests): validated once, shared (frozen).
DEFAULTS: dict[Task, TaskParams] = {task: params() for task, params in PARAMS_BY_TASK.items()}


def parse_parameters(task: Task, raw: dict[str, Any] | None, max_new_tokens: int) -> TaskParams:
    """Validate a request's `parameters` for the task; `InvalidInput` says which key is wrong and why."""
    try:
        params = PARAMS_BY_TASK[task].model_validate(raw) if raw else DEFAULTS[task]
    except ValidationError as exc:
        reasons = "; ".join(f"parameters.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid parameters for task {task.value}: {reasons}") from None
    if isinstance(params, TextGenerationParams) and params.max_new_tokens > max_new_tokens:
        raise InvalidInput(f"parameters.max_new_tokens: {params.max_new_tokens} exceeds the limit {max_new_tokens}")
    return params
