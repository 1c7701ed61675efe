"""What one `hybrid-serve bench` run measures and against what: the plan, the target and its auth.

Why this module exists: the command line, the run and the report all read the same choices (clients,
duration, cold starts, the input), and the two targets — the local emulator started by the bench, a
running or deployed endpoint — differ only in where the URL and the credentials come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_INPUT = "The quick brown fox jumps over the lazy dog."
#: Streamed generation requests timed for the time to first token (one after the other, warm).
TTFT_REQUESTS = 5
#: The phrase the report shows where the server reports no separate import time.
IMPORTS_INCLUDED = "included in container start"
BATCHING_GAIN_DEFINITION = ("throughput with CLIENTS concurrent clients ÷ throughput with 1 client, "
                            "same server and input (how much concurrent requests gain from batching)")


class BenchError(Exception):
    """A run that cannot go on, said in words; `exit_code` 2 for what the user asked (an unknown
    experiment, missing credentials), 1 for a server that failed."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Auth:
    """The credentials a request carries: a bearer token and/or Modal's proxy auth token pair."""

    token: str | None = None
    modal_key: str | None = None
    modal_secret: str | None = None

    def headers(self) -> dict[str, str]:
        out = {}
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        if self.modal_key:
            out["Modal-Key"] = self.modal_key
        if self.modal_secret:
            out["Modal-Secret"] = self.modal_secret
        return out

    def describe(self) -> str:
        """Which credentials are sent (never their values)."""
        parts = (["bearer token"] if self.token else []) + (["Modal proxy auth"] if self.modal_key else [])
        return " and ".join(parts) or "none"


@dataclass(frozen=True)
class Plan:
    """One run's choices."""

    experiment: str
    clients: int = 8
    duration_s: float = 20.0
    cold_starts: int = 1
    input: str = DEFAULT_INPUT
    max_new_tokens: int = 16
    #: None: start the local emulator; else the endpoint's base URL.
    url: str | None = None
    backend: str = "ray"
    auth: Auth = field(default_factory=Auth)

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise BenchError(f"--clients {self.clients}: allowed: 1 or more", 2)
        if self.duration_s <= 0:
            raise BenchError(f"--duration {self.duration_s:g}: allowed: seconds > 0", 2)
        if self.cold_starts < 0:
            raise BenchError(f"--cold-starts {self.cold_starts}: allowed: 0 or more", 2)

    @property
    def target(self) -> str:
        """Where the bench runs, in words."""
        return self.url if self.url is not None else f"local emulator ({self.backend})"

    def payload(self, task: str, stream: bool = False) -> dict[str, object]:
        """The body of one prediction request for an experiment of `task`."""
        body: dict[str, object] = {"inputs": self.input}
        if task == "text-generation":
            body["parameters"] = {"max_new_tokens": self.max_new_tokens}
        if stream:
            body["stream"] = True
        return body
