"""What a backend answers for one request, and the `Predictor` interface every backend implements.

Why this module exists: the request path and the HTTP layer need the shape of an answer and of a
backend, not the machinery that runs models. Keeping them here — no torch, no transformers — lets
an ingress that only forwards requests (Ray's, Modal's) import the serving path without the model
stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Collection, Protocol

from core.keepwarm.ledger import UsageRecord
from core.serving.live_registry import RegistryChange
from core.serving.model_status import ModelStatus
from core.serving.registry import Experiment, Registry



@dataclass(frozen=True)
class ColdStart:
    """This request waited for a container (Ray replica, Modal container) to start: where the time went."""

    replica_start_s: float  # from the request's arrival until the container (replica) ran our code
    model_load_s: float
    total_s: float  # from the request's arrival until the container was ready
    first: bool  # the container's first answer: counts the container's start once
    #: Part of `replica_start_s`: importing the model stack (torch …) in the container, where it says (None: not).
    imports_s: float | None = None

    @property
    def start_s(self) -> float:
        """How long a start of this container takes, as far as measured: the request's wait, or the
        container's own imports and model load where longer (a pre-warmed container still starting when
        the request came: the request waited for part of its start only)."""
        return max(self.total_s, self.model_load_s + (self.imports_s or 0.0))


@dataclass(frozen=True)
class Prediction:
    """One request's outputs and where its time went."""

    outputs: list[Any]
    cold_load: bool
    load_ms: float
    queue_ms: float
    inference_ms: float
    batch_inputs: int
    replica: str | None = None
    #: Set by backends that start containers, when this request waited for one to start.
    cold_start: ColdStart | None = None
    #: The model was loaded for this request (not for a concurrent one it waited for), where it runs.
    loaded: bool = False
    #: Set by backends whose models run elsewhere: the precision the container's model runs in
    #: (`dtype_in_use`, `dtype_note`), for /experiments.
    precision: dict[str, str | None] | None = None


@dataclass
class StreamingPrediction:
    """A streamed generation under way: how it started (cold or warm, the wait, the container; no outputs),
    then its items — `Token`s and a `StreamEnd` (core.serving.streaming) — which, closed early, stop it."""

    start: Prediction
    items: AsyncIterator[Any] = field(repr=False)


class Predictor(Protocol):
    """What the request path needs from a backend to serve predictions and describe model state."""

    async def predict(self, experiment: Experiment, inputs: list[str], params: Any) -> Prediction:
        """Run the experiment's model (its pool's window is the controller's business, not the request's)."""

    async def stream(self, experiment: Experiment, prompt: str, params: Any) -> StreamingPrediction:
        """Generate from `prompt` token by token (text generation): returns once the generation has
        started, with how it started and its items (core.serving.streaming)."""

    async def model_status(self) -> dict[str, ModelStatus]:
        """Each experiment the backend knows of, and its model's state (one with none is cold)."""

    async def cached_models(self) -> list[str]: ...

    async def usage(self, only: Collection[str] | None = None) -> dict[str, UsageRecord] | None:
        """Each experiment's container-seconds by state (the cost ledger) — at least those of `only` when
        given (a page of them); None (the default of a class that subclasses this protocol): not measured
        on this backend."""
        return None

    def begin_shutdown(self) -> None:
        """Refuse requests that wait, and new ones (503); those running finish."""

    async def registry_changed(self, change: RegistryChange, registry: Registry) -> None:
        """Experiments were added, removed or changed while serving: drop what a removed or changed
        one holds (in-flight requests finish on the old model; the next one loads the new)."""

    async def close(self) -> None: ...
