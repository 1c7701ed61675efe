"""`hybrid-serve bench`'s single-request probes against a scripted server: the first token of a stream,
a server that does not stream, the cold start's split, and refusals said in words."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Callable

import httpx
import pytest

from core.bench.plan import Auth, BenchError, Plan
from core.bench.probes import cold_round, experiment_row, first_token, time_to_first_token

SSE = ['event: start', 'data: {"cold_load": false}', '', 'event: token', 'data: {"text": "a"}', '',
       'event: token', 'data: {"text": "b"}', '', 'event: end', 'data: {"tokens": 2}', '']


async def lines(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        yield item


def test_the_first_token_is_the_first_data_event_after_the_start_event() -> None:
    first, count = asyncio.run(first_token(lines(SSE), sent=0.0))
    assert first is not None and first > 0 and count == 2
    assert asyncio.run(first_token(lines(["data: x", "", "data: y", ""]), 0.0))[1] == 2  # unnamed events are tokens
    assert asyncio.run(first_token(lines(SSE[:3] + SSE[-3:]), 0.0)) == (None, 0)  # start and end only: no token


def client(handler: Callable[[httpx.Request], httpx.Response], plan: Plan) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://bench.test",
                             headers=plan.auth.headers())


def run(coro: Any) -> Any:
    async def go() -> Any:
        async with coro[0] as http:
            return await coro[1](http)
    return asyncio.run(go())


def test_a_server_that_answers_422_for_stream_does_not_stream() -> None:
    plan = Plan("gen")
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(422, json={"error": {"type": "validation", "message": "stream: extra inputs"}})

    out = run((client(handler, plan), lambda http: time_to_first_token(http, plan)))
    assert out == {"available": False, "note": "not available (server does not stream)"}
    assert sent == [{"inputs": plan.input, "parameters": {"max_new_tokens": 16}, "stream": True}]


def test_a_streaming_server_gives_five_samples() -> None:
    plan = Plan("gen")
    body = "\n".join(SSE).encode()
    out = run((client(lambda r: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}), plan),
               lambda http: time_to_first_token(http, plan)))
    assert out["available"] is True and len(out["samples_ms"]) == 5 and out["token_events"] == [2] * 5
    assert 0 < out["p50_ms"] <= max(out["total_ms"])


def test_the_cold_start_split_comes_from_the_experiments_row() -> None:
    plan = Plan("mine", auth=Auth("t"))
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if request.method == "POST":
            return httpx.Response(200, json={"cold_load": True, "timing": {"load_ms": 7500.0}})
        return httpx.Response(200, json={"task": "feature-extraction", "state": "warm", "model": {
            "last_cold_start": {"replica_start_s": 3.25, "model_load_s": 4.0, "total_s": 7.5}}})

    cold = run((client(handler, plan), lambda http: cold_round(http, plan, "feature-extraction")))
    assert (cold.cold, cold.server_wait_s, cold.container_start_s, cold.model_load_s) == (True, 7.5, 3.25, 4.0)
    assert cold.client_s > 0 and seen == ["Bearer t", "Bearer t"]


def test_refusals_are_said_in_words_with_exit_2() -> None:
    plan = Plan("mine", url="https://example.test")
    for status, words in ((404, "unknown experiment 'mine'"), (401, "answered 401"), (403, "--modal-key")):
        with pytest.raises(BenchError) as refused:
            run((client(lambda r, s=status: httpx.Response(s, json={}), plan), lambda http: experiment_row(http, plan)))
        assert refused.value.exit_code == 2 and words in str(refused.value)
    with pytest.raises(BenchError) as failed:
        run((client(lambda r: httpx.Response(500, text="boom"), plan), lambda http: experiment_row(http, plan)))
    assert failed.value.exit_code == 1 and "answered 500" in str(failed.value) and "boom" in str(failed.value)


def test_a_local_server_that_does_not_come_up_is_said_with_its_last_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    from contextlib import contextmanager

    import core.bench.local as local

    @contextmanager
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("server did not start:\n" + "".join(f"line {i}\n" for i in range(50)) + "error: boom")
        yield

    monkeypatch.setattr(local, "served", broken)
    said: list[str] = []
    with pytest.raises(BenchError) as failed:
        with local.local_server(Plan("mine", backend="inprocess"), said.append):
            pass
    message = str(failed.value)
    assert failed.value.exit_code == 1 and "did not come up" in message and message.endswith("error: boom")
    assert "line 31" in message and "line 30" not in message  # its last 20 lines, not all of them
    assert said == ["starting hybrid-serve serve --backend inprocess (the local emulator)"]
