"""Streamed generation over real HTTP (in-process backend, a tiny real GPT-2): `"stream": true` answers
server-sent events token by token; bad requests get a clear 422 before any event; a client that hangs
up stops the generation and frees the model; the request is in flight until its last token."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from core.http.app import create_app
from core.serving.engine import InferenceEngine
from core.serving.models import LoadedModel, load_model
from core.serving.registry import Registry
from core.serving.request_path import RequestPath
from tests.conftest import activity_of, make_settings, wait_until
from tests.live import live_server
from tests.sse import read_sse

PROMPT = "the keep-warm window"


class Generations:
    """The real loader; records, per streamed generation, how many pieces it emitted and whether it was
    told to stop. `pace_s` spaces the pieces out, as a model larger than the tiny one would."""

    def __init__(self) -> None:
        self.pace_s = 0.0
        self.finished: list[dict[str, Any]] = []
        self.done = threading.Event()

    def __call__(self, experiment):  # type: ignore[no-untyped-def]
        model: LoadedModel = load_model(experiment)
        real = model.stream
        if real is None:
            return model

        def stream(prompt: str, params: Any, emit: Any, stop: threading.Event) -> tuple[str, int]:
            pieces = 0

            def counted(text: str) -> None:
                nonlocal pieces
                pieces += 1
                emit(text)
                time.sleep(self.pace_s)

            try:
                return real(prompt, params, counted, stop)
            finally:
                self.finished.append({"pieces": pieces, "stopped": stop.is_set(), "max": params.max_new_tokens})
                self.done.set()

        model.stream = stream
        return model


@pytest.fixture
def served(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, RequestPath, Generations]]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    generations = Generations()
    settings = make_settings(registry_path=registry_file)
    path = RequestPath(settings, Registry.load(registry_file), InferenceEngine(settings, loader=generations))
    with live_server(create_app(path)) as url:
        yield url, path, generations


def test_a_stream_sends_start_then_each_token_then_the_whole_text(served: tuple[str, RequestPath, Generations]) -> None:
    url, _, _ = served
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 12}}
    with httpx.stream("POST", f"{url}/predict/gen", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(read_sse(response))
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "end" and set(names[1:-1]) == {"token"}, names
    start, end = events[0][1], events[-1][1]
    assert start["cold_load"] is True and start["experiment_id"] == "gen" and start["task"] == "text-generation"
    assert start["scaledown_window_s"] == 900 and start["window_reason"] == "isolated"
    assert start["timing"]["load_ms"] > 0
    tokens = "".join(data["text"] for name, data in events if name == "token")
    assert end["generated_text"] == PROMPT + tokens  # the pieces are the whole generation, in order
    assert 0 < end["tokens"] <= 12 and end["timing"]["first_token_ms"] <= end["timing"]["total_ms"]
    plain = httpx.post(f"{url}/predict/gen", json=body, timeout=60).json()  # greedy: the same text
    assert plain["outputs"][0]["generated_text"] == end["generated_text"] and plain["cold_load"] is False
    again = httpx.post(f"{url}/predict/gen", json={**body, "stream": True}, timeout=60)
    assert '"cold_load":false' in again.text.split("\n\n")[0] and '"window_reason":"recent-activity"' in again.text


@pytest.mark.parametrize("experiment, body, fragment", [
    ("fe", {"inputs": "x"}, "only text-generation experiments stream"),
    ("gen", {"inputs": ["a", "b"]}, "a streamed request takes one input"),
    ("gen", {"inputs": "x", "parameters": {"max_new_tokens": 0}}, "max_new_tokens"),
    ("gen", {"inputs": "x", "parameters": {"temperature": 1}}, "temperature"),
])
def test_a_bad_streamed_request_is_a_clear_422_before_any_event(served: tuple[str, RequestPath, Generations],
                                                                experiment: str, body: dict[str, Any], fragment: str) -> None:
    url, _, _ = served
    response = httpx.post(f"{url}/predict/{experiment}", json={**body, "stream": True}, timeout=60)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert fragment in response.json()["error"]["message"]
    bad_flag = httpx.post(f"{url}/predict/gen", json={"inputs": "x", "stream": "sometimes"}, timeout=60)
    assert bad_flag.status_code == 422 and "stream" in bad_flag.text


def test_a_client_that_hangs_up_stops_the_generation_and_frees_the_model(served: tuple[str, RequestPath, Generations]) -> None:
    url, path, generations = served
    httpx.post(f"{url}/predict/gen", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 1}}, timeout=60)  # loaded
    generations.pace_s = 0.1  # 100 tokens: 10 s unless stopped
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 100}, "stream": True}
    with httpx.stream("POST", f"{url}/predict/gen", json=body, timeout=60) as response:
        events = read_sse(response)
        assert next(events)[0] == "start"
        assert next(events)[0] == "token"
        assert activity_of(path.tracker, "gen").in_flight == 1  # in flight while it streams
    # the client is gone: the generation stops at its next token, well before its 100th
    assert generations.done.wait(30), "the generation did not end"
    finished = generations.finished[-1]
    assert finished["stopped"] is True and finished["pieces"] < finished["max"] // 2, finished
    wait_until(lambda: activity_of(path.tracker, "gen").in_flight == 0, 10, "the stream no longer in flight")
    answer = httpx.post(f"{url}/predict/gen", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2}}, timeout=60)
    assert answer.status_code == 200 and answer.json()["batch_inputs"] == 1
    metrics = httpx.get(f"{url}/metrics").text
    assert 'hybrid_requests_total{experiment="gen",status="499"} 1.0' in metrics


def test_a_stream_is_in_flight_until_its_last_token(served: tuple[str, RequestPath, Generations]) -> None:
    url, path, _ = served
    seen: list[int] = []
    with httpx.stream("POST", f"{url}/predict/gen", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 8},
                                                          "stream": True}, timeout=60) as response:
        for name, _ in read_sse(response):
            if name != "end":
                seen.append(activity_of(path.tracker, "gen").in_flight)
    assert seen and all(n == 1 for n in seen), seen
    wait_until(lambda: activity_of(path.tracker, "gen").in_flight == 0, 10, "the stream no longer in flight")
    metrics = httpx.get(f"{url}/metrics").text
    assert 'hybrid_requests_total{experiment="gen",status="200"} 1.0' in metrics


def test_streams_beyond_the_queue_bound_are_refused_with_a_retry(registry_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HYBRID_MAX_QUEUE bounds the streams open per experiment, as it bounds a batcher's queue: one more
    gets 503 + Retry-After before any event; once one ends, a new one is taken."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    generations = Generations()
    generations.pace_s = 0.05
    settings = make_settings(registry_path=registry_file, max_queue=1)
    path = RequestPath(settings, Registry.load(registry_file), InferenceEngine(settings, loader=generations))
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 40}, "stream": True}
    with live_server(create_app(path)) as url:
        with httpx.stream("POST", f"{url}/predict/gen", json=body, timeout=60) as first:
            events = read_sse(first)  # held: a reader dropped would close the stream
            assert next(events)[0] == "start"
            second = httpx.post(f"{url}/predict/gen", json=body, timeout=60)
            assert second.status_code == 503 and "HYBRID_MAX_QUEUE" in second.json()["error"]["message"]
            assert second.headers["retry-after"]
        wait_until(lambda: activity_of(path.tracker, "gen").in_flight == 0, 10, "the first stream closed")
        third = httpx.post(f"{url}/predict/gen", json={**body, "parameters": {"max_new_tokens": 2}}, timeout=60)
        assert third.status_code == 200 and "event: end" in third.text


def test_a_response_cancelled_before_its_first_event_still_closes_the_stream() -> None:
    """The server may cancel a streamed response before it sent anything (its client gone while the
    headers waited on the socket): the stream is closed all the same — else its request would stay in
    flight, and a stopping server would wait for it."""
    import asyncio

    from core.http.event_stream import EventStream
    from core.keepwarm.controller import PoolPlan
    from core.serving.prediction import Prediction
    from core.serving.registry import Experiment
    from core.serving.stream_path import StreamAnswer
    from core.serving.streaming import Guarded

    async def scenario() -> list[BaseException | None]:
        ended: list[BaseException | None] = []

        async def tokens() -> Any:
            yield "never read"

        async def on_end(error: BaseException | None) -> None:
            ended.append(error)

        start = Prediction([], cold_load=False, load_ms=0, queue_ms=0, inference_ms=0, batch_inputs=1)
        answer = StreamAnswer(Experiment(id="gen", source="./x", task="text-generation"), start,
                              PoolPlan.__new__(PoolPlan), Guarded(tokens(), on_end))
        stuck = asyncio.Event()

        async def send(message: Any) -> None:
            await stuck.wait()  # the headers never leave: the socket is full

        async def receive() -> Any:
            await asyncio.Event().wait()

        response = asyncio.create_task(EventStream(answer, 0.0)({"type": "http"}, receive, send))
        await asyncio.sleep(0.05)
        response.cancel()
        await asyncio.gather(response, return_exceptions=True)
        return ended

    ended = asyncio.run(scenario())
    assert len(ended) == 1 and isinstance(ended[0], GeneratorExit)
