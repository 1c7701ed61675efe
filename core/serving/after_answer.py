"""Bookkeeping after the answer: work a request must do, but not before its client has the answer.

Why this module exists: a request's metrics, traffic record and the end of its busy time in the cost
ledger are the server's business, not the client's; done at the event loop's next turn they run
after the answer written in this turn went out (and, for a client that sends its next request, while
it reads this one), and before anything the loop takes up next — the next request, a scrape of
/metrics, /health — so every reader still sees them. Each caller takes its own timestamps first.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable


def after_answer(fn: Callable[..., None], *args: Any) -> None:
    """`fn(*args)` at the running event loop's next turn — after the answer being sent in this turn went
    out — or now, where no loop runs."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        fn(*args)
        return
    loop.call_soon(fn, *args)
