"""Loading a registered model and running it for its task (feature extraction, classification, generation).

Why this module exists: it is the only code that touches transformers. A model is resolved to a
local directory (a package folder, a local folder, a Hugging Face snapshot, or a model downloaded from
an MLflow Model Registry by `mlflow_source`), its weights file is
checked against the registry's sha256 *before* anything is deserialised, and it is wrapped in a
`LoadedModel` whose `predict` takes a batch of strings and one set of task parameters. It runs in
the registry's `dtype` where its device can (core.serving.precision decides, and says why not).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from core.serving import mlflow_source
from core.serving.errors import InvalidInput, ModelUnavailable
from core.serving.parameters import FeatureExtractionParams, TextClassificationParams, TextGenerationParams
from core.serving.precision import Precision, load_kwargs, settle
from core.serving.registry import Dtype, Experiment, Task
from core.serving.weights import verify_weights

try:  # progress bars on every load are noise in a server log
    from transformers.utils import logging as _hf_logging

    _hf_logging.disable_progress_bar()
except ImportError:  # pragma: no cover
    pass



# --- resolving and verifying weights -----------------------------------------------------------
def resolve_model_dir(experiment: Experiment) -> Path:
    """The local directory holding the experiment's model (downloads a Hugging Face snapshot or an
    MLflow model if needed)."""
    if mlflow_source.is_mlflow_source(experiment.source):
        try:
            return mlflow_source.model_dir(experiment.source)
        except ModelUnavailable as exc:
            raise ModelUnavailable(f"{experiment.id}: {exc.message}") from None
    try:
        local = experiment.local_path()
    except FileNotFoundError as exc:
        raise ModelUnavailable(f"{experiment.id}: {exc}") from None
    if local is not None:
        if not local.is_dir():
            raise ModelUnavailable(f"{experiment.id}: model directory {experiment.source!r} does not exist")
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(experiment.source, revision=experiment.revision))
    except Exception as exc:  # offline, unknown repo, bad revision: all mean "cannot load now"
        raise ModelUnavailable(
            f"{experiment.id}: could not fetch {experiment.source!r}"
            f"{'@' + experiment.revision if experiment.revision else ''} from the Hugging Face Hub "
            f"({type(exc).__name__})"
        ) from None


# --- loaded models -----------------------------------------------------------------------------
RunFn = Callable[[list[str], Any], list[Any]]
CheckFn = Callable[[list[str], Any], None]


def _accepts_anything(inputs: list[str], params: Any) -> None:
    """Feature extraction and classification truncate inputs to the model's context: any text fits."""


@dataclass
class LoadedModel:
    """A model ready to serve: `predict(batch of strings, parameters) -> one output per string`."""

    experiment: Experiment
    size_bytes: int
    run: RunFn
    module: torch.nn.Module
    #: Raises InvalidInput, naming the input and the limit, for inputs this model cannot take.
    check: CheckFn = _accepts_anything
    #: The registry's dtype and the one in use (float32 where the device cannot run it).
    precision: Precision = Precision(None, "float32")
    #: One tiny forward pass (what decides the precision on a device).
    probe: Callable[[], Any] | None = None
    #: Text generation: `stream(prompt, params, emit, stop) -> (text, tokens)`, each new piece of text to
    #: `emit` as it is made (core.serving.generation_stream); None for tasks that do not stream.
    stream: Callable[[str, Any, Callable[[str], None], Any], tuple[str, int]] | None = None

    def predict(self, inputs: list[str], params: Any) -> list[Any]:
        with torch.inference_mode():
            return self.run(inputs, params)

    @property
    def device(self) -> str:
        return str(next(self.module.parameters()).device)

    def move_to(self, device: str) -> None:
        """Move the weights (the task code sends inputs to wherever the weights are); a model that fell
        back to float32 tries its registry's dtype again on the new device."""
        self.module.to(device)
        if self.precision.fell_back and self.probe is not None:
            self.precision = settle(self.module, self.precision.requested, device, self.probe, self.experiment.id)


def best_device() -> str:
    """The GPU when this container has one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _size_bytes(model: torch.nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _max_length(tokenizer: Any, model: Any) -> int:
    limits = [getattr(tokenizer, "model_max_length", 512), getattr(model.config, "max_position_embeddings", 512)]
    return int(min(x for x in limits if isinstance(x, int) and x > 0))


def _feature_extraction(model_dir: Path, dtype: Dtype | None = None) -> tuple[torch.nn.Module, RunFn, CheckFn]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, **load_kwargs(dtype)).eval()
    max_length = _max_length(tokenizer, model)

    def run(inputs: list[str], params: FeatureExtractionParams) -> list[list[float]]:
        batch = tokenizer(inputs, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(model.device)
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # mean pooling
        if params.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().tolist()

    return model, run, _accepts_anything


def _text_classification(model_dir: Path, dtype: Dtype | None = None) -> tuple[torch.nn.Module, RunFn, CheckFn]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, **load_kwargs(dtype)).eval()
    max_length = _max_length(tokenizer, model)
    labels = model.config.id2label

    def run(inputs: list[str], params: TextClassificationParams) -> list[list[dict[str, Any]]]:
        batch = tokenizer(inputs, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(model.device)
        probs = model(**batch).logits.float().softmax(dim=-1)
        k = min(params.top_k, probs.shape[-1])
        scores, indices = probs.topk(k, dim=-1)
        return [
            [{"label": labels[int(i)], "score": float(s)} for s, i in zip(row_s, row_i)]
            for row_s, row_i in zip(scores.cpu().tolist(), indices.cpu().tolist())
        ]

    return model, run, _accepts_anything


def _text_generation(model_dir: Path, dtype: Dtype | None = None) -> tuple[torch.nn.Module, RunFn, CheckFn]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, **load_kwargs(dtype)).eval()

    def run(inputs: list[str], params: TextGenerationParams) -> list[dict[str, str]]:
        batch = tokenizer(inputs, padding=True, return_tensors="pt").to(model.device)
        out = model.generate(
            **batch, max_new_tokens=params.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [{"generated_text": prompt + text} for prompt, text in zip(inputs, texts)]

    context = _max_length(tokenizer, model)
    # A tokenizer of its own: a fast tokenizer must not be used from two threads at once ("Already
    # borrowed"), and checks run on the request's thread while the inference thread generates.
    counting = AutoTokenizer.from_pretrained(model_dir)

    def check(inputs: list[str], params: TextGenerationParams) -> None:
        for i, prompt in enumerate(inputs):
            tokens = len(counting(prompt, verbose=False)["input_ids"])
            if tokens + params.max_new_tokens > context:
                raise InvalidInput(f"inputs[{i}]: a prompt of {tokens} tokens + max_new_tokens {params.max_new_tokens} "
                                   f"exceeds the model's context of {context} tokens")

    return model, run, check


_BUILDERS = {
    Task.FEATURE_EXTRACTION: _feature_extraction,
    Task.TEXT_CLASSIFICATION: _text_classification,
    Task.TEXT_GENERATION: _text_generation,
}
#: The precision probe: one short input, the task's cheapest parameters.
_PROBE_PARAMS: dict[Task, Any] = {
    Task.FEATURE_EXTRACTION: FeatureExtractionParams(),
    Task.TEXT_CLASSIFICATION: TextClassificationParams(),
    Task.TEXT_GENERATION: TextGenerationParams(max_new_tokens=1),
}


def load_model(experiment: Experiment, device: str | None = None) -> LoadedModel:
    """Resolve, verify and load the experiment's model onto `device` (default: the best one here);
    `ModelUnavailable` says why when it cannot."""
    model_dir = resolve_model_dir(experiment)
    verify_weights(experiment, model_dir)
    device = device or best_device()
    try:
        model, run, check = _BUILDERS[experiment.task](model_dir, experiment.dtype)
        model.to(device)

        def probe() -> list[Any]:
            return run(["hello world"], _PROBE_PARAMS[experiment.task])

        precision = settle(model, experiment.dtype, device, probe, experiment.id)
    except ModelUnavailable:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"{experiment.id}: loading {experiment.task.value} model failed: {type(exc).__name__}: {exc}") from None
    return LoadedModel(experiment=experiment, size_bytes=_size_bytes(model), run=run, module=model, check=check,
                       precision=precision, probe=probe, stream=_streaming(experiment, model_dir, model))


def _streaming(experiment: Experiment, model_dir: Path, model: torch.nn.Module) -> Callable[..., tuple[str, int]] | None:
    """A text-generation model's streamed generation (with a tokenizer of its own, used on the inference
    thread only)."""
    if experiment.task is not Task.TEXT_GENERATION:
        return None
    from transformers import AutoTokenizer

    from core.serving.generation_stream import stream_generation

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return partial(stream_generation, model, tokenizer)
