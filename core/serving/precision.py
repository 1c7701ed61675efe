"""The precision a model runs in: the registry's `dtype`, or float32 where the device cannot run it.

Why this module exists: an experiment may ask for bfloat16 or float16 (half the memory, faster on a
GPU), but not every device runs every precision for every layer (float16 on some CPUs: an operation
missing, or numbers that overflow). The rule, the same on every backend: the model is loaded in the
requested dtype, then one tiny forward pass of its own task runs on its device; if that pass raises,
or gives a value that is not finite, the model falls back to float32, says so in one log line, and
the note travels to `/experiments` (`dtype_in_use`, `dtype_note`). float32 (or no dtype) is never
probed. A model moved to another device (a memory snapshot's CPU → GPU) is decided again there.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from core.serving.registry import Dtype

log = logging.getLogger("hybrid_serve.serving.precision")

TORCH_DTYPES: dict[Dtype, torch.dtype] = {
    Dtype.FLOAT32: torch.float32,
    Dtype.BFLOAT16: torch.bfloat16,
    Dtype.FLOAT16: torch.float16,
}


@dataclass(frozen=True)
class Precision:
    """What the registry asked for (None: the checkpoint's own), what runs, and why they differ."""

    requested: Dtype | None
    in_use: str
    note: str | None = None

    @property
    def fell_back(self) -> bool:
        return self.requested is not None and self.in_use != self.requested.value


def dtype_name(module: torch.nn.Module) -> str:
    """The dtype of a model's floating-point weights, as the registry spells it ("float32", ...)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return str(parameter.dtype).removeprefix("torch.")
    return "float32"


def settle(module: torch.nn.Module, requested: Dtype | None, device: str, probe: Callable[[], Any],
           experiment_id: str = "") -> Precision:
    """Cast `module` (already on `device`) to `requested` and run `probe` (one tiny forward pass);
    float32 instead, with a note and a log line, when the pass raises or answers a non-finite number."""
    if requested is None or requested is Dtype.FLOAT32:
        if requested is Dtype.FLOAT32:
            module.to(torch.float32)
        return Precision(requested, dtype_name(module))
    module.to(TORCH_DTYPES[requested])
    try:
        with torch.inference_mode():
            outputs = probe()
        problem = None if finite(outputs) else "its test pass gave non-finite values"
    except Exception as exc:  # an operation not implemented for this dtype on this device, ...
        problem = f"its test pass failed ({type(exc).__name__}: {str(exc)[:120]})"
    if problem is None:
        return Precision(requested, requested.value)
    module.to(torch.float32)
    kind = device.split(":")[0]
    note = f"{requested.value} is not supported on {kind} here: running float32 ({problem})"
    log.warning("%s: %s", experiment_id or "model", note)
    return Precision(requested, "float32", note)


def finite(value: Any) -> bool:
    """Every number in a task's outputs (lists, dicts, floats) is finite; text is not checked."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(finite(v) for v in value)
    return True


def load_kwargs(requested: Dtype | None) -> dict[str, Any]:
    """`from_pretrained`'s argument that loads the weights in `requested` at once (no float32 copy
    first): `dtype` in recent transformers, `torch_dtype` before 4.56."""
    if requested is None:
        return {}
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": TORCH_DTYPES[requested]}
