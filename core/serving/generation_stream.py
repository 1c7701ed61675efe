"""One prompt's generation, handed out piece by piece as the model makes it, stopped on request.

Why this module exists: transformers' `generate` runs to its end in one call; a streamed answer needs
each new token as it is made, decoded only once it reads as text (a word's pieces, a character's
bytes), and a way to end the call early when the client has gone. A `TextStreamer` whose finished
text goes to `emit` does the first, a stopping criterion that reads `stop` the second. It runs on the
inference thread, like any forward pass.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

from core.serving.parameters import TextGenerationParams
from core.serving.streaming import Emit


class _Emitter(TextStreamer):
    """Sends each piece of finished text to `emit` (TextStreamer prints it)."""

    def __init__(self, tokenizer: Any, emit: Emit):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._emit = emit

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self._emit(text)


class _StopWhen(StoppingCriteria):
    """Ends the generation once `stop` is set (checked after every new token)."""

    def __init__(self, stop: threading.Event):
        self._stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self._stop.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_generation(model: Any, tokenizer: Any, prompt: str, params: TextGenerationParams, emit: Emit,
                      stop: threading.Event) -> tuple[str, int]:
    """Generate greedily from `prompt` (as the non-streamed path does), each piece of text to `emit` as
    it is made; the whole text (prompt included) and the number of tokens generated."""
    batch = tokenizer([prompt], return_tensors="pt").to(model.device)
    with torch.inference_mode():
        out = model.generate(
            **batch, max_new_tokens=params.max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            streamer=_Emitter(tokenizer, emit), stopping_criteria=StoppingCriteriaList([_StopWhen(stop)]),
        )
    new_tokens = out[0, batch["input_ids"].shape[1]:]
    return prompt + tokenizer.decode(new_tokens, skip_special_tokens=True), int(new_tokens.shape[0])
