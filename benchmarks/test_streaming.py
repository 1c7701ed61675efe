"""Streamed generation (issue 24): time to first token and tokens per second, cold and warm, on a tiny
text-generation model served by the real `hybrid-serve serve` (in-process), beside the same request
answered whole — measured in one run, never asserted.

Cold: the first streamed request after the server starts (it loads the model). Warm: the next ones.
Tokens per second: tokens after the first over the time from the first token to the end event.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from core.testing import served
from tests.sse import read_sse

MAX_NEW_TOKENS = 48
PROMPT = "The keep-warm window of an experiment"
COLD_TRIALS = 3
WARM_TRIALS = 20


def _stream(url: str) -> dict[str, float]:
    """One streamed generation: seconds to the first token, to the end, and the tokens generated."""
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": MAX_NEW_TOKENS}, "stream": True}
    sent = time.perf_counter()
    first: float | None = None
    with httpx.stream("POST", f"{url}/predict/gen", json=body, timeout=300) as response:
        assert response.status_code == 200, response.read()
        for name, data in read_sse(response):
            if name == "token" and first is None:
                first = time.perf_counter() - sent
            if name == "end":
                end, tokens = time.perf_counter() - sent, data["tokens"]
    assert first is not None
    return {"ttft_s": first, "total_s": end, "tokens": tokens,
            "tokens_per_s": (tokens - 1) / (end - first) if end > first and tokens > 1 else float("nan")}


def _whole(url: str) -> float:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": MAX_NEW_TOKENS}}
    sent = time.perf_counter()
    response = httpx.post(f"{url}/predict/gen", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return time.perf_counter() - sent


def test_streaming_time_to_first_token_and_tokens_per_second(benchmark, tiny_models, summary, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry = tmp_path / "experiments.toml"
    registry.write_text(f'[experiments.gen]\nsource = "{tiny_models["text-generation"]}"\ntask = "text-generation"\n')
    env = {"HYBRID_REGISTRY": str(registry), "HYBRID_TRAFFIC_RECORD": "false"}
    cold: list[dict[str, float]] = []
    warm: list[dict[str, float]] = []
    whole: list[float] = []
    for trial in range(COLD_TRIALS):
        with served("inprocess", env=env) as server:
            cold.append(_stream(server.url))
            if trial == COLD_TRIALS - 1:
                for _ in range(WARM_TRIALS):  # alternated: streamed, then the same request answered whole
                    warm.append(_stream(server.url))
                    whole.append(_whole(server.url))
                benchmark.pedantic(_stream, args=(server.url,), rounds=3, iterations=1)

    def p50(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    name = "streaming"
    summary.add(name, "time to first token p50, warm (tiny GPT-2, in-process)", p50(warm, "ttft_s") * 1000, "ms", "",
                f"{WARM_TRIALS} streams of {MAX_NEW_TOKENS} tokens")
    summary.add(name, "whole answer p50, same request not streamed", statistics.median(whole) * 1000, "ms", "",
                "the floor a stream improves on")
    summary.add(name, "first token / whole answer, warm", p50(warm, "ttft_s") / statistics.median(whole), "×", "< 1")
    summary.add(name, "tokens per second p50, warm", p50(warm, "tokens_per_s"), "tokens/s")
    summary.add(name, "time to first token p50, cold (model load included)", p50(cold, "ttft_s") * 1000, "ms", "",
                f"{COLD_TRIALS} server starts")
    summary.add(name, "tokens per second p50, cold", p50(cold, "tokens_per_s"), "tokens/s")
