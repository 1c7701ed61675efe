"""Micro-batcher: shared forward passes, grouping by parameters, size limits, errors to every caller."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from core.serving.batching import MicroBatcher


class Recorder:
    """A batch function that records each call's inputs and echoes them upper-cased."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[list[str], Any]] = []
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def __call__(self, inputs: list[str], params: Any) -> list[str]:
        time.sleep(self.delay_s)
        with self._lock:
            self.calls.append((list(inputs), params))
        return [f"{params}:{text.upper()}" for text in inputs]


async def gather(batcher: MicroBatcher, items: list[tuple[list[str], Any]]) -> list[Any]:
    return await asyncio.gather(*(batcher.submit(inputs, params) for inputs, params in items))


def test_concurrent_submissions_share_a_call_and_get_their_own_outputs() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=32, max_wait_s=0.05)
    results = asyncio.run(gather(batcher, [(["a"], "p"), (["b", "c"], "p"), (["d"], "p")]))
    assert [r.outputs for r in results] == [["p:A"], ["p:B", "p:C"], ["p:D"]]
    assert len(fn.calls) == 1 and fn.calls[0][0] == ["a", "b", "c", "d"]
    assert all(r.batch_inputs == 4 for r in results)


def test_requests_arriving_during_a_forward_pass_join_the_next_one_without_waiting() -> None:
    fn = Recorder(delay_s=0.1)
    batcher = MicroBatcher(fn, max_batch_size=32, max_wait_s=0.0)

    async def scenario() -> None:
        first = asyncio.create_task(batcher.submit(["first"], "p"))
        await asyncio.sleep(0.03)  # the first pass is running now
        rest = await gather(batcher, [([f"x{i}"], "p") for i in range(5)])
        await first
        assert all(r.batch_inputs == 5 for r in rest)

    asyncio.run(scenario())
    assert [len(inputs) for inputs, _ in fn.calls] == [1, 5]


def test_different_parameters_never_share_a_call() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=32, max_wait_s=0.05)
    results = asyncio.run(gather(batcher, [(["a"], 1), (["b"], 2), (["c"], 1)]))
    assert [r.outputs for r in results] == [["1:A"], ["2:B"], ["1:C"]]
    assert sorted((tuple(i), p) for i, p in fn.calls) == [(("a", "c"), 1), (("b",), 2)]


def test_batches_never_exceed_max_size_except_a_single_large_request() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch_size=4, max_wait_s=0.05)
    items = [([f"{i}a", f"{i}b"], "p") for i in range(5)] + [([f"big{i}" for i in range(6)], "p")]
    results = asyncio.run(gather(batcher, items))
    assert [len(r.outputs) for r in results] == [2, 2, 2, 2, 2, 6]
    sizes = sorted(len(inputs) for inputs, _ in fn.calls)
    assert sizes == [2, 4, 4, 6]


def test_a_poisoned_input_fails_only_its_own_caller() -> None:
    """A pass that fails is retried caller by caller: the neighbours of a bad input are served."""
    calls: list[list[str]] = []

    def picky(inputs: list[str], params: Any) -> list[str]:
        calls.append(list(inputs))
        if "poison" in inputs:
            raise TypeError("cannot encode")
        return [text.upper() for text in inputs]

    batcher = MicroBatcher(picky, max_batch_size=8, max_wait_s=0.05)

    async def scenario() -> list[Any]:
        return await asyncio.gather(batcher.submit(["a"], "p"), batcher.submit(["poison"], "p"),
                                    batcher.submit(["b", "c"], "p"), return_exceptions=True)

    first, poisoned, third = asyncio.run(scenario())
    assert first.outputs == ["A"] and third.outputs == ["B", "C"]
    assert isinstance(poisoned, TypeError)
    assert calls == [["a", "poison", "b", "c"], ["a"], ["poison"], ["b", "c"]]


def test_an_exception_reaches_a_lone_caller_and_the_batcher_survives() -> None:
    calls = {"n": 0}

    def flaky(inputs: list[str], params: Any) -> list[str]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return inputs

    batcher = MicroBatcher(flaky, max_batch_size=8)

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(["a"], "p")
        assert (await batcher.submit(["c"], "p")).outputs == ["c"]

    asyncio.run(scenario())


def test_the_wait_is_bounded() -> None:
    batcher = MicroBatcher(Recorder(delay_s=0.2), max_batch_size=1, max_queue=2)

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(batcher.submit([str(i)], "p") for i in range(4)), return_exceptions=True)

    results = asyncio.run(scenario())
    assert [type(r).__name__ for r in results] == ["BatchResult", "BatchResult", "BatchResult", "QueueFull"]


def test_a_caller_that_gave_up_is_never_run() -> None:
    fn = Recorder(delay_s=0.2)
    batcher = MicroBatcher(fn, max_batch_size=1)

    async def scenario() -> None:
        running = asyncio.ensure_future(batcher.submit(["first"], "p"))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.submit(["gone"], "p"))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client hung up while it waited
        await running
        assert (await batcher.submit(["last"], "p")).outputs == ["p:LAST"]

    asyncio.run(scenario())
    assert [inputs for inputs, _ in fn.calls] == [["first"], ["last"]]


class SlowEcho:
    """A model whose every pass takes 0.1 s and echoes its inputs."""

    def __call__(self, inputs: list[str], params: Any) -> list[str]:
        time.sleep(0.1)
        return inputs


def released(alive: Any) -> bool:
    """The object behind the weak reference is gone (nothing holds the model any more)."""
    import gc

    gc.collect()
    return alive() is None


def test_closing_refuses_the_waiting_and_releases_the_function() -> None:
    import weakref

    model = SlowEcho()
    alive = weakref.ref(model)
    batcher = MicroBatcher(model, max_batch_size=1)

    async def scenario() -> list[Any]:
        tasks = [asyncio.ensure_future(batcher.submit([str(i)], "p")) for i in range(3)]
        await asyncio.sleep(0.02)
        batcher.close()
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, *refused = asyncio.run(scenario())
    assert first.outputs == ["0"] and all(type(r).__name__ == "BatcherClosed" for r in refused)
    del model
    assert released(alive)


@pytest.mark.parametrize("drain_at_s", [0.03, 0.15])  # B waits behind A's pass / B's own pass runs
def test_draining_finishes_every_request_taken_or_waiting_then_releases_the_function(drain_at_s: float) -> None:
    """A model swapped or evicted under load drains its batcher: the requests it holds must all be
    answered (found under load: a drain cancelled the worker in the middle of a pass, or while it held
    a request for the next one, and those requests never got an answer)."""
    import weakref

    from core.serving.batching import BatcherClosed

    model = SlowEcho()
    alive = weakref.ref(model)
    batcher = MicroBatcher(model, max_batch_size=1)

    async def scenario() -> list[Any]:
        tasks = [asyncio.ensure_future(batcher.submit([name], "p")) for name in ("A", "B")]
        await asyncio.sleep(drain_at_s)
        batcher.drain()
        with pytest.raises(BatcherClosed):
            await batcher.submit(["late"], "p")
        return await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)

    results = asyncio.run(scenario())
    assert [r.outputs for r in results] == [["A"], ["B"]]
    del model
    assert released(alive)


def test_closing_right_after_a_pass_answers_the_request_the_worker_already_took() -> None:
    """Found in review: a request the worker had taken while another caller's pass ran was never
    answered when `close()` came between the end of that pass and the worker taking the lock."""
    from core.serving.batching import BatcherClosed

    batcher = MicroBatcher(SlowEcho(), max_batch_size=1)

    async def scenario() -> tuple[Any, list[Any]]:
        async def first() -> Any:
            result = await batcher.submit(["A"], "p")  # runs at once, in this task
            batcher.close()  # before the worker, which holds B, resumes
            return result

        a = asyncio.ensure_future(first())
        await asyncio.sleep(0)
        b = asyncio.ensure_future(batcher.submit(["B"], "p"))
        return await a, await asyncio.wait_for(asyncio.gather(b, return_exceptions=True), timeout=5)

    a, (b,) = asyncio.run(scenario())
    assert a.outputs == ["A"] and isinstance(b, BatcherClosed)


def test_queue_time_is_reported() -> None:
    fn = Recorder(delay_s=0.05)
    batcher = MicroBatcher(fn, max_batch_size=1, max_wait_s=0.0)
    results = asyncio.run(gather(batcher, [(["a"], "p"), (["b"], "p")]))
    assert results[1].queue_s >= 0.04 > results[0].queue_s
    assert results[0].inference_s == pytest.approx(0.05, abs=0.04)


class ThreadRecorder(Recorder):
    """A Recorder that also notes which thread ran each call."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s)
        self.threads: list[str] = []

    def __call__(self, inputs: list[str], params: Any) -> list[str]:
        self.threads.append(threading.current_thread().name)
        return super().__call__(inputs, params)


def test_a_short_lone_pass_runs_on_the_event_loop_once_the_model_is_known_to_be_short() -> None:
    from core.serving.inference_thread import InferenceThread

    fn = ThreadRecorder()
    batcher = MicroBatcher(fn, max_batch_size=32, executor=InferenceThread())

    async def scenario() -> list[Any]:
        return [await batcher.submit([f"x{i}"], "p") for i in range(3)]

    results = asyncio.run(scenario())
    assert [r.outputs for r in results] == [["p:X0"], ["p:X1"], ["p:X2"]]
    # The first pass is measured on the inference thread; the short ones after it skip the hand-off.
    assert fn.threads[0].startswith("inference") and fn.threads[1:] == [threading.current_thread().name] * 2
    # A request with more inputs than the measured lone pass goes to the thread again.
    asyncio.run(batcher.submit(["a", "b", "c"], "p"))
    assert fn.threads[-1].startswith("inference")


def test_a_slow_model_keeps_the_inference_thread() -> None:
    from core.serving.inference_thread import INLINE_MAX_S, InferenceThread

    fn = ThreadRecorder(delay_s=INLINE_MAX_S * 2)
    batcher = MicroBatcher(fn, max_batch_size=32, executor=InferenceThread())

    async def scenario() -> None:
        for i in range(3):
            await batcher.submit([f"x{i}"], "p")

    asyncio.run(scenario())
    assert all(name.startswith("inference") for name in fn.threads) and len(fn.threads) == 3


def test_requests_that_arrive_together_still_batch_on_the_thread_when_lone_passes_are_short() -> None:
    from core.serving.inference_thread import InferenceThread

    fn = ThreadRecorder()
    batcher = MicroBatcher(fn, max_batch_size=32, executor=InferenceThread())

    async def scenario() -> list[Any]:
        await batcher.submit(["warm"], "p")  # measured: short
        return await gather(batcher, [([f"x{i}"], "p") for i in range(6)])

    results = asyncio.run(scenario())
    assert [r.outputs for r in results] == [[f"p:X{i}"] for i in range(6)]
    assert [len(inputs) for inputs, _ in fn.calls[1:]] == [6]  # one pass for all six, none alone on the loop
    assert fn.threads[1].startswith("inference")


def test_a_short_pass_waits_for_the_thread_busy_with_another_model() -> None:
    from core.serving.inference_thread import InferenceThread

    thread = InferenceThread()
    short, slow = ThreadRecorder(), ThreadRecorder(delay_s=0.2)
    quick, busy = MicroBatcher(short, executor=thread), MicroBatcher(slow, executor=thread)

    async def scenario() -> None:
        await quick.submit(["warm"], "p")  # measured: short
        running = asyncio.create_task(busy.submit(["long"], "p"))
        await asyncio.sleep(0.05)  # the other model's pass holds the thread now
        assert not thread.idle
        await quick.submit(["x"], "p")
        await running

    asyncio.run(scenario())
    assert short.threads[1].startswith("inference")  # it queued behind the other pass, never beside it
    assert short.calls[1][0] == ["x"]


async def _short_batcher(fn: ThreadRecorder) -> MicroBatcher:
    from core.serving.inference_thread import InferenceThread

    batcher = MicroBatcher(fn, max_batch_size=32, executor=InferenceThread())
    await batcher.submit(["warm"], "p")  # measured: short, so the next lone callers give a turn first
    return batcher


def test_callers_giving_a_turn_when_the_batcher_closes_are_refused_not_left_hanging() -> None:
    from core.serving.batching import BatcherClosed

    fn = ThreadRecorder()

    async def scenario() -> list[Any]:
        batcher = await _short_batcher(fn)
        callers = [asyncio.create_task(batcher.submit([f"x{i}"], "p")) for i in range(3)]
        await asyncio.sleep(0)  # each started and now gives the others a turn
        batcher.close()
        return await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 5)

    results = asyncio.run(scenario())
    assert all(isinstance(r, BatcherClosed) for r in results) and len(fn.calls) == 1


@pytest.mark.parametrize("callers", [1, 3])
def test_callers_giving_a_turn_when_the_batcher_drains_still_run_then_the_model_goes(callers: int) -> None:
    fn = ThreadRecorder()

    async def scenario() -> tuple[list[Any], MicroBatcher]:
        batcher = await _short_batcher(fn)
        tasks = [asyncio.create_task(batcher.submit([f"x{i}"], "p")) for i in range(callers)]
        await asyncio.sleep(0)
        batcher.drain()  # a registry change: those already waiting run on the old model
        return await asyncio.wait_for(asyncio.gather(*tasks), 5), batcher

    results, batcher = asyncio.run(scenario())
    assert [r.outputs for r in results] == [[f"p:X{i}"] for i in range(callers)]
    assert batcher._pass._fn is None  # then the model was let go


def test_a_pass_unlike_the_measured_one_keeps_the_thread() -> None:
    fn = ThreadRecorder()

    async def scenario() -> None:
        batcher = await _short_batcher(fn)
        await batcher.submit(["warm"], "other parameters")  # e.g. a larger max_new_tokens
        await batcher.submit(["a much longer input than the measured one"], "other parameters")

    asyncio.run(scenario())
    assert all(name.startswith("inference") for name in fn.threads)


def test_an_inline_pass_that_fails_fails_its_own_caller_only() -> None:
    from core.serving.inference_thread import InferenceThread

    def fragile(inputs: list[str], params: Any) -> list[str]:
        if "bad" in inputs:
            raise ValueError("poisoned input")
        return [text.upper() for text in inputs]

    async def scenario() -> tuple[Any, Any]:
        batcher = MicroBatcher(fragile, executor=InferenceThread())
        await batcher.submit(["ok"], "p")
        bad = await asyncio.gather(batcher.submit(["bad"], "p"), return_exceptions=True)
        return bad[0], await batcher.submit(["fine"], "p")

    bad, fine = asyncio.run(scenario())
    assert isinstance(bad, ValueError) and fine.outputs == ["FINE"]


def test_one_slow_lone_pass_among_short_ones_keeps_the_next_on_the_loop_and_a_run_of_slow_ones_does_not() -> None:
    from core.serving.inference_thread import INLINE_MAX_S, InferenceThread

    fn = ThreadRecorder()
    batcher = MicroBatcher(fn, max_batch_size=32, executor=InferenceThread())

    async def submit(delays: list[float]) -> None:
        for delay in delays:
            fn.delay_s = delay
            await batcher.submit(["x"], "p")

    on_loop = threading.current_thread().name
    asyncio.run(submit([0.0, 0.0, 0.0, INLINE_MAX_S * 3, 0.0]))  # a machine busy for one pass
    assert fn.threads[0].startswith("inference") and fn.threads[1:] == [on_loop] * 4
    asyncio.run(submit([INLINE_MAX_S * 3] * 3 + [0.0]))  # the model got slow: its passes go to the thread
    assert fn.threads[5:7] == [on_loop] * 2 and fn.threads[7:] == ["inference_0"] * 2
