"""The model stack a container imports before its first model: torch, and the parts of transformers
that would otherwise load lazily inside the first `from_pretrained`.

Why this module exists: transformers imports its model, tokenizer and generation machinery on first
use — about 1,400 modules, 2.2 s of CPU here — so the first model a fresh process loads took 2.3 s
where the same load later takes 0.1 s. Inside a cold start that time was counted as the model's load,
and on a warm Ray worker (backends/local_ray/warm_workers.py) it was the one import still left to
the cold start. A container imports this module before its model: a warm worker ahead of time, a
replica in its constructor (where it is reported as imports, not as model load).
"""

from __future__ import annotations

import torch  # noqa: F401
import transformers.generation.utils  # noqa: F401
import transformers.modeling_utils  # noqa: F401
import transformers.models.auto.modeling_auto  # noqa: F401
import transformers.models.auto.tokenization_auto  # noqa: F401
import transformers.tokenization_utils_fast  # noqa: F401
