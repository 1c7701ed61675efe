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

from importlib import import_module

import torch  # noqa: F401

#: What a first `from_pretrained` imports, heaviest first; a module a transformers version does not have
#: (names move between versions) is skipped — this only moves imports earlier, it never decides them.
MODULES = (
    "transformers.modeling_utils",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.tokenization_utils_tokenizers",  # transformers 5 (4.x: tokenization_utils_fast)
    "transformers.tokenization_utils_fast",
    "transformers.generation.utils",
)

for _name in MODULES:
    try:
        import_module(_name)
    except ImportError:
        pass
