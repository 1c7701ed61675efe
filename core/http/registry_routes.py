"""The admin routes that change the registry: `PUT` and `DELETE /experiments/{experiment_id}`.

Why this module exists: changing what a server serves is an operator's act, not a user's; these
routes exist only behind a bearer token (403 without one configured, 401 without the right one,
checked before the body is even read, so a refused caller learns nothing) and hand the change to
the request path, which writes it where the registry lives and serves it at once.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.http.error_shape import documented_errors
from core.serving.errors import AdminDisabled
from core.serving.registry import EXPERIMENT_ID_PATTERN
from core.serving.request_path import RequestPath


class ExperimentBody(BaseModel):
    """A registry entry, as in the registry file's `[experiments.<id>]` table."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="package:PKG/DIR, a Hugging Face repo id, or mlflow:models:/NAME/VERSION | @ALIAS | runs:/…")
    task: str = Field(description="feature-extraction | text-classification | text-generation")
    revision: str | None = Field(default=None, description="Hugging Face sources: a branch, tag or commit.")
    sha256: str | None = Field(default=None, description="The weights file must hash to this.")
    gpu: str | None = Field(default=None, description="Modal only: this experiment's GPU (default MODAL_GPU).")
    dtype: str | None = Field(default=None, description="float32 | bfloat16 | float16: the precision its model "
                                                         "loads in (default: the checkpoint's).")
    warm: list[dict[str, Any]] | None = Field(default=None, description="A warm schedule: windows of days, hours "
                                              "(HH:MM-HH:MM), containers (default 1) and timezone (default UTC).")


async def _experiment_body(request: Request) -> ExperimentBody:
    """The PUT body, validated as FastAPI validates a body parameter (same 422 shape), but only once
    the route's dependencies (the admin check) have passed."""
    raw = await request.body()
    try:
        return ExperimentBody.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]) from None


def add_registry_routes(app: FastAPI, path: RequestPath) -> None:
    """`PUT` and `DELETE /experiments/{experiment_id}`, changing `path`'s registry."""

    def _admin() -> None:
        if path.settings.api_token is None:  # with a token, BearerToken has already checked it
            raise AdminDisabled("registry changes over HTTP need a bearer token: set HYBRID_API_TOKEN "
                                "(or use `hybrid-serve experiments` on the server's machine)")

    @app.put("/experiments/{experiment_id}", responses=documented_errors(401, 403, 409, 422, 503),
             dependencies=[Depends(_admin)],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": ExperimentBody.model_json_schema()}}}})
    async def put_experiment(
        request: Request,
        experiment_id: Annotated[str, Path(pattern=EXPERIMENT_ID_PATTERN, description="The experiment's id.")],
    ) -> JSONResponse:
        """Register an experiment, or change its model (its old containers drain, the next request
        cold-starts the new model); 201 when it is new. Needs the bearer token."""
        body = await _experiment_body(request)  # read after the admin check: a refused caller learns nothing
        experiment, change = await path.admin.register(experiment_id, body.model_dump(exclude_none=True))
        outcome = ("added" if change.added else "changed" if change.changed
                   else "rescheduled" if change.rescheduled else "unchanged")
        return JSONResponse({"experiment": experiment.describe(), "change": outcome},
                            status_code=201 if change.added else 200)

    @app.delete("/experiments/{experiment_id}", responses=documented_errors(401, 403, 404, 409, 503),
                dependencies=[Depends(_admin)])
    async def delete_experiment(
        experiment_id: Annotated[str, Path(pattern=EXPERIMENT_ID_PATTERN, description="The experiment's id.")],
    ) -> dict[str, Any]:
        """Retire an experiment: later requests get 404; requests in flight finish. Needs the bearer token."""
        await path.admin.retire(experiment_id)
        return {"removed": experiment_id}
