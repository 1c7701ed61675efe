"""`hybrid-serve bench EXPERIMENT`: cold start, warm latency, throughput, batching gain and time to first
token of the user's own experiment, on the local emulator or a running endpoint.

Why this module exists: the command's options and its errors (exit 2 for what the user asked, 1 for
a server that failed) in one place; `core.cli` only registers it, and the measuring lives in
`core.bench`, imported when the command runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from core import plugins
from core.bench.plan import DEFAULT_INPUT
from core.cli_common import fail, settings_or_exit


def bench(
    experiment: str = typer.Argument(..., help="The registered experiment to measure."),
    url: Optional[str] = typer.Option(None, "--url", help="A running or deployed endpoint's base URL (default: "
                                      "start the local emulator with your registry and settings)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Local emulator only: ray (default) or inprocess."),
    clients: int = typer.Option(8, "--clients", help="Concurrent closed-loop clients of the warm load."),
    duration: float = typer.Option(20.0, "--duration", help="Seconds of each warm load (CLIENTS clients, then 1)."),
    cold_starts: int = typer.Option(1, "--cold-starts", help="Cold starts to measure (locally: a fresh server each; "
                                    "with --url: waits for scale to zero before each); 0: none."),
    text: str = typer.Option(DEFAULT_INPUT, "--input", help="The input of every request."),
    max_new_tokens: int = typer.Option(16, "--max-new-tokens", help="Text generation: tokens per request."),
    token: Optional[str] = typer.Option(None, "--token", help="Bearer token (default: HYBRID_API_TOKEN)."),
    modal_key: Optional[str] = typer.Option(None, "--modal-key", envvar="MODAL_PROXY_KEY",
                                            help="Modal proxy auth: the Modal-Key header."),
    modal_secret: Optional[str] = typer.Option(None, "--modal-secret", envvar="MODAL_PROXY_SECRET",
                                               help="Modal proxy auth: the Modal-Secret header."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write every figure to this JSON file."),
) -> None:
    """Measure one experiment: cold start (container start, imports, model load), warm latency p50 / p95 /
    p99 and throughput at CLIENTS clients, the batching gain and, for text generation, the time to first
    token. Progress goes to standard error, the table to standard output."""
    from core.bench.plan import Auth, BenchError, Plan
    from core.bench.report import render, write_json
    from core.bench.run import run

    settings = settings_or_exit()
    if url is not None and backend is not None:
        fail("--backend is for the local emulator; with --url the endpoint runs on its own backend")
    known = {"inprocess", *plugins.entry_points("hybrid_serve.backends")}
    if backend is not None and backend not in known:
        fail(f"--backend {backend!r}: allowed: {', '.join(sorted(known))}")
    if url is not None and not url.startswith(("http://", "https://")):
        fail(f"--url {url!r}: allowed: an http:// or https:// address")
    token = token or (settings.api_token.get_secret_value() if settings.api_token is not None else None)
    started = time.monotonic()

    def say(line: str) -> None:
        typer.echo(f"[{time.monotonic() - started:6.1f} s] {line}", err=True)

    try:
        plan = Plan(experiment, clients, duration, cold_starts, text, max_new_tokens,
                    url.rstrip("/") if url else None, backend or "ray", Auth(token, modal_key, modal_secret))
        result = run(plan, settings.registry_path, say)
    except BenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=exc.exit_code) from None
    typer.echo(render(result), nl=False)
    if json_path is not None:
        write_json(json_path, result)
        typer.echo(f"wrote {json_path}", err=True)
