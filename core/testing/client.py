"""A small client of a running endpoint: predictions, its state views and its scaling event log.

Why this module exists: a user's test should read like the behaviour it checks — `predict`, then
look at `experiment(...)["replicas"]` or the cold starts seen — not like HTTP plumbing. Each call is
real HTTP against the endpoint; a refused prediction fails with the status and the server's error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from core.events import SCALING_EVENTS, EventName, read_events
from core.settings import Settings



class EndpointClient:
    def __init__(self, url: str, settings: Settings, timeout_s: float = 300.0):
        self.url = url
        self.settings = settings
        token = settings.api_token.get_secret_value() if settings.api_token is not None else None
        #: The raw HTTP client (base URL and bearer token set) for what the helpers do not cover.
        self.http = httpx.Client(base_url=url, timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {token}"} if token else None)

    def close(self) -> None:
        self.http.close()

    # --- the API ----------------------------------------------------------------------------------
    def predict(self, experiment: str, inputs: str | list[str] = "hello world", **parameters: Any) -> dict[str, Any]:
        """POST /predict/{experiment}; the answer's body (`outputs`, `cold_load`, `scaledown_window_s`, ...)."""
        response = self.http.post(f"/predict/{experiment}", json={"inputs": inputs, "parameters": parameters})
        if response.status_code != 200:
            raise AssertionError(f"POST /predict/{experiment} answered {response.status_code}: {response.text[:2000]}")
        return response.json()

    def health(self) -> dict[str, Any]:
        """GET /health: the windows in force per experiment, activity, the configuration."""
        return self._get("/health")

    def experiments(self) -> list[dict[str, Any]]:
        """GET /experiments: every registered experiment with its state, replicas, window and idle time."""
        return self._get("/experiments")

    def experiment(self, experiment: str) -> dict[str, Any]:
        """One experiment's entry of /experiments."""
        found = [e for e in self.experiments() if e["id"] == experiment]
        if not found:
            raise AssertionError(f"experiment {experiment!r} is not registered; registered: "
                                 f"{[e['id'] for e in self.experiments()]}")
        return found[0]

    def _get(self, path: str) -> Any:
        response = self.http.get(path)
        if response.status_code != 200:
            raise AssertionError(f"GET {path} answered {response.status_code}: {response.text[:2000]}")
        return response.json()

    # --- the event log ------------------------------------------------------------------------------
    @property
    def event_log(self) -> Path | None:
        return self.settings.event_log

    def events(self, experiment: str | None = None) -> list[dict[str, Any]]:
        """The scaling event log so far, in order (each: `time`, `experiment`, `event`, `window_s`, ...)."""
        path = self.event_log
        if path is None or not Path(path).exists():
            return []
        return [e for e in read_events(path) if experiment is None or e["experiment"] == experiment]

    def cold_starts(self, experiment: str | None = None) -> list[dict[str, Any]]:
        """The cold starts seen so far: containers started for a request (with their time split)."""
        return [e for e in self.events(experiment) if e["event"] is EventName.COLD_START]

    def scaling_events(self, experiment: str, kinds: tuple[EventName, ...] = SCALING_EVENTS) -> list[EventName]:
        """The experiment's scaling events in order, e.g. `["cold_start", "scale_to_zero"]`."""
        return [e["event"] for e in self.events(experiment) if e["event"] in kinds]
