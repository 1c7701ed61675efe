"""The prediction route: `POST /predict/{experiment_id}`.

Why this module exists: it is the route every user calls, and the only one on the hot path; it
parses the body (`PredictRequest`, 422 on a bad shape), hands the inputs to the request path (which
validates, decides the window and predicts) and renders the answer with its timing — nothing more.
"""

from __future__ import annotations

from typing import Annotated, Any

import asyncio

from fastapi import FastAPI, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from core.http.disconnect import unless_disconnected
from core.http.error_shape import documented_errors
from core.http.event_stream import EventStream
from core.http.json_response import FastJSONResponse
from core.serving.registry import EXPERIMENT_ID_PATTERN
from core.serving.request_path import RequestPath


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(description="One input, or a list of inputs (one output each).")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Task parameters, e.g. top_k, max_new_tokens.")
    stream: bool = Field(False, description="Text generation only: answer with server-sent events, token by token "
                                             "(`start`, `token`…, then `end` or `error`).")


def add_predict_routes(app: FastAPI, path: RequestPath) -> None:
    """`POST /predict/{experiment_id}`, served by `path`."""

    @app.post("/predict/{experiment_id}", response_model=None, responses={
        **documented_errors(401, 404, 408, 413, 422, 500, 503, 504),
        200: {"description": "The outputs, or with `stream`: server-sent events", "content": {"text/event-stream": {}}}})
    async def predict(
        request: Request,
        experiment_id: Annotated[str, Path(pattern=EXPERIMENT_ID_PATTERN, description="A registered experiment id.")],
        body: PredictRequest,
    ) -> FastJSONResponse | EventStream:
        """Run the experiment's model on the inputs; reports timing and whether this request paid a cold load.
        With `"stream": true` (text generation, one input): server-sent events, token by token."""
        if body.stream:
            arrived = asyncio.get_running_loop().time()
            streaming = await unless_disconnected(request, path.streams.stream(experiment_id, body.inputs, body.parameters))
            return EventStream(streaming, arrived)
        answer = await unless_disconnected(request, path.predict(experiment_id, body.inputs, body.parameters))
        prediction = answer.prediction
        # The outputs are already JSON types: FastAPI's encoder walk is skipped, pydantic-core renders them.
        return FastJSONResponse({
            "experiment_id": experiment_id,
            "task": answer.experiment.task.value,
            "outputs": prediction.outputs,
            "cold_load": prediction.cold_load,
            "timing": {
                "queue_ms": round(prediction.queue_ms, 3),
                "load_ms": round(prediction.load_ms, 3),
                "inference_ms": round(prediction.inference_ms, 3),
                "total_ms": round(answer.total_s * 1000, 3),
            },
            "batch_inputs": prediction.batch_inputs,
            "replica": prediction.replica,
            "scaledown_window_s": answer.plan.window_s,
            "window_reason": answer.plan.reason.value,
        })
