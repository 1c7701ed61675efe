"""The `hybrid-serve` command line (Typer).

Why this module exists: one entry point for operators — inspect the effective configuration,
run the server, replay traces — with errors that name the bad variable and exit with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from core import plugins
from core.auth import mode_line
from core.bench_cli import bench
from core.cli_common import fail, settings_or_exit
from core.experiments_cli import experiments_app
from core.settings import allowed, env_name, setting_sources

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Per-experiment keep-warm model serving.",
                  rich_markup_mode=None)  # plain help: it reads at 80 columns
app.add_typer(experiments_app, name="experiments")
app.command()(bench)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"hybrid-serve {version('hybrid-serve')}")
        except PackageNotFoundError:  # a checkout run without installing it
            typer.echo("hybrid-serve (not installed: version unknown)")
        raise typer.Exit()


@app.callback()
def _root(
    _version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                  help="Print hybrid-serve's version and exit."),
) -> None:
    """Per-experiment keep-warm model serving: Modal in production, Ray Serve locally."""


@app.command()
def config() -> None:
    """Print the authentication mode, every effective setting (core's and each installed backend's) with its
    source and allowed range, and the windows it implies."""
    settings = settings_or_exit()
    sources = setting_sources(settings_cls=type(settings))
    typer.echo(mode_line(settings))
    values = settings.public_dict()
    width = max(len(name) for name in values)
    typer.echo(f"{'setting'.ljust(width)}  {'value'.ljust(12)}  {'source'.ljust(20)}  allowed")
    for field in type(settings).model_fields.values():
        name = env_name(field)
        shown = "-" if values[name] is None else str(values[name])
        typer.echo(f"{name.ljust(width)}  {shown.ljust(12)}  {sources[name].ljust(20)}  {allowed(field)}")
    typer.echo(
        f"scaledown window after an isolated request (idle): {settings.idle_window_s} s\n"
        f"scaledown window after a request with another one in the last {settings.activity_window} s "
        f"(active): {settings.active_window_s} s"
    )


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    backend: str = typer.Option(
        "ray", help="ray: Ray Serve emulating Modal's per-experiment containers; inprocess: this process runs the models."
    ),
    name: str = typer.Option("hybrid-serve", help="ray: the Serve application's name (two instances on one cluster need two)."),
    verbose: bool = typer.Option(False, "--verbose", help="ray: show Ray's and Serve's own log lines too."),
    log_requests: bool = typer.Option(False, "--log-requests",
                                      help="A console line per request too (default: HYBRID_LOG_REQUESTS)."),
) -> None:
    """Run the HTTP API; prints the address and a ready-to-paste curl once it accepts requests, then a
    line per cold start, pre-warm, scale-down and registry change."""
    settings = settings_or_exit()
    typer.echo(mode_line(settings))
    backends = plugins.entry_points("hybrid_serve.backends")
    if backend != "inprocess" and backend not in backends:
        typer.echo(f"error: unknown backend {backend!r}; available: inprocess, {', '.join(sorted(backends))}", err=True)
        raise typer.Exit(code=2)
    _create_missing_registry(settings.registry_path)
    if backend == "inprocess":
        from core.event_console import events_on_console
        from core.http.app import build_inprocess_app
        from core.http.runner import ready_message, run_uvicorn
        from core.serving.live_registry import LiveRegistry
        from core.serving.registry import RegistryError

        try:
            registry = LiveRegistry.from_file(settings.registry_path, settings.registry_poll_s, settings.mlflow_poll_s)
        except RegistryError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
        demo = registry.first_id()
        with events_on_console(settings, log_requests or settings.log_requests) as settings:
            app_ = build_inprocess_app(settings, registry)
            run_uvicorn(app_, host, port, on_ready=lambda: typer.echo(ready_message(host, port, demo, backend)))
        return
    raise typer.Exit(code=plugins.load(backends[backend])(settings=settings, host=host, port=port, name=name,
                                                          verbose=verbose, log_requests=log_requests) or 0)


def _create_missing_registry(path: Path | None) -> None:
    """A HYBRID_REGISTRY file that does not exist yet starts empty — created now, and said so — so the
    server starts and `hybrid-serve experiments add` (or the admin API) fills it while it runs."""
    if path is None or path.exists() or not path.parent.is_dir():
        return  # the shipped demo registry, an existing file, or a folder that is not there (said at load)
    try:
        with open(path, "x", encoding="utf-8") as created:  # never over a file written meanwhile (an `add`)
            created.write("# hybrid-serve's experiment registry: `hybrid-serve experiments add ID --source ... "
                          "--task ...`\n[experiments]\n")
    except FileExistsError:
        return
    except OSError as exc:  # a read-only folder, ...: said as the load would say it
        fail(f"{path}: registry file not found, and it cannot be created there: {exc.strerror or type(exc).__name__}")
    typer.echo(f"note: {path} did not exist: created it empty — no experiment is served (the shipped demo "
               f"experiment is not in it) until `hybrid-serve experiments add` writes one there")


@app.command()
def deploy(
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and print the plan; send nothing to Modal."),
    dev: bool = typer.Option(False, "--dev", help="`modal serve` under <app>-dev (its own Dict and Volume) instead of deploying."),
) -> None:
    """Deploy to Modal: prints the mode line and the checked plan, then runs `modal deploy` with the
    tokens from the settings (environment or .env)."""
    settings = settings_or_exit()
    deployers = plugins.entry_points("hybrid_serve.deployers")
    raise typer.Exit(code=plugins.load(deployers["modal"])(settings, dry_run=dry_run, dev=dev))


@app.command()
def simulate(
    trace: Path = typer.Option(..., "--trace", help="Trace file (Azure Functions 2019, Azure LLM 2023, or timestamp,experiment_id CSV)."),
    trace_format: Optional[str] = typer.Option(None, "--format", help="azure-functions-2019 | azure-llm-2023 | csv (default: from the header)."),
    mode: str = typer.Option("minute", help="minute: the published per-minute method; fine: per-request times, durations, containers."),
    policy: list[str] = typer.Option([], "--policy", help="fixed:SECONDS, hybrid, hybrid:PRESET, adaptive[:KAPPA], histogram (Shahrad et al.), oracle (repeatable)."),
    sweep: bool = typer.Option(False, help="Also fixed windows 1–240 min, the three presets, the adaptive policy's κ sweep and the Shahrad et al. policy, with a two-panel Pareto plot (total cold starts and p75 per-experiment cold-start rate, each with the oracle's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on standard output."),
    gpu_price_per_hour: float = typer.Option(0.59, help="GPU price per hour for the idle cost column."),
    out: Path = typer.Option(Path("simulation-results"), help="Folder for simulation.json, simulation.md (and sweep.png)."),
    cold_start_s: float = typer.Option(0.0, help="Fine mode: seconds a cold start adds before the request runs."),
    default_duration_ms: float = typer.Option(1000.0, help="Fine mode: execution time when the trace gives none."),
    concurrent_inputs: Optional[int] = typer.Option(
        None, min=1, max=1000, help="Fine mode: requests one container takes at once (default: MODAL_CONCURRENT_INPUTS)."),
    warm: list[str] = typer.Option([], "--warm", help="Fine mode: a warm schedule every experiment keeps, 'DAYS HH:MM-HH:MM [xN] [TIMEZONE]' (e.g. 'mon-fri 09:00-18:00 x1 UTC'; repeatable)."),
    trace_start: Optional[str] = typer.Option(None, "--trace-start", help="With --warm: the wall-clock time of the trace's time 0 (ISO 8601; default 2019-07-15T00:00Z, a Monday)."),
) -> None:
    """Replay a trace through keep-warm policies: cold starts vs idle container-minutes."""
    import json as json_module

    from core.sim import campaign

    settings = settings_or_exit()
    if concurrent_inputs is not None:
        settings = settings.model_copy(update={"modal_concurrent_inputs": concurrent_inputs})
    try:
        rows, artefacts = campaign.run(
            settings, trace, trace_format, mode, policy, sweep, gpu_price_per_hour, out, cold_start_s, default_duration_ms / 1000,
            warm, trace_start)
    except campaign.UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(json_module.dumps(rows, indent=2))
    else:
        from core.sim.report import terminal_report

        typer.echo(terminal_report(rows, mode), nl=False)
    typer.echo("wrote " + ", ".join(str(p) for p in artefacts), err=True)


@app.command()
def recommend(
    source_url: Optional[str] = typer.Option(None, "--from", help="A running endpoint's URL: reads its GET /traffic."),
    recording: Optional[Path] = typer.Option(None, "--recording", help="A traffic recording's folder (default: HYBRID_TRAFFIC_DIR)."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="A trace file, as `simulate --trace` reads."),
    days: Optional[float] = typer.Option(None, "--days", min=0, help="Only the last DAYS of recorded traffic."),
    max_cold_start_pct: Optional[float] = typer.Option(None, min=0, max=100, help="Target: cold starts at most this % of requests."),
    budget_per_day: Optional[float] = typer.Option(None, min=0, help="Target: idle cost at most this many dollars per day."),
    plot: Path = typer.Option(Path("recommend.png"), help="Where the trade-off plot (PNG) goes."),
    as_json: bool = typer.Option(False, "--json", help="Print the advice as JSON on standard output."),
    cold_start_s: float = typer.Option(0.0, min=0, help="Seconds a cold start adds before the request runs."),
) -> None:
    """Replay your own traffic through the keep-warm settings and advise one: cold-start % and idle
    cost per day for the current setting, the presets, fixed windows and the adaptive policy, overall
    and per experiment. Without a target: the cheapest with no more cold starts than now."""
    import json as json_module
    import time as time_module

    from core.sim import traffic_sources
    from core.sim.advice_report import render, tradeoff_plot
    from core.sim.recommend import Target, advise

    settings = settings_or_exit()
    if sum(x is not None for x in (source_url, recording, trace)) > 1:
        fail("choose one of --from, --recording and --trace")
    since = None if days is None else time_module.time() - days * 86400
    try:
        if source_url is not None:
            token = settings.api_token.get_secret_value() if settings.api_token is not None else None
            traffic = traffic_sources.from_endpoint(source_url, token, since)
        elif trace is not None:
            traffic = traffic_sources.from_trace(trace)
        else:
            traffic = traffic_sources.from_recording((recording or settings.traffic_dir).expanduser(), since)
    except traffic_sources.SourceError as exc:
        fail(str(exc))
    if not traffic.requests:
        fail(f"{traffic.source}: no answered request to replay (send some traffic first, or widen --days)")
    price = settings.price()
    advice = advise(traffic.requests, settings, price, Target(max_cold_start_pct, budget_per_day), cold_start_s)
    tradeoff_plot(plot, advice)
    if as_json:
        typer.echo(json_module.dumps({"source": traffic.source, "price": {"gpu": price.gpu, "per_second": price.per_second},
                                      **advice.to_json(settings), "plot": str(plot)}, indent=2))
    else:
        typer.echo(render(advice, settings, traffic.source, traffic.requests[0].time_s, price.gpu, price.per_second))
    typer.echo(f"wrote {plot}", err=True)


@app.command("export-requests")
def export_requests_command(
    events: Path = typer.Option(None, "--events", help="A scaling event log (HYBRID_EVENT_LOG) or a traffic "
                                "recording's folder (default: HYBRID_TRAFFIC_DIR, where requests are recorded)."),
) -> None:
    """Print the recorded requests as `timestamp,experiment_id[,duration_ms]` CSV, ready for `simulate --trace`."""
    from core.events import export_requests

    if events is None:
        events = settings_or_exit().traffic_dir.expanduser()
    if not events.exists():
        typer.echo(f"error: {events}: no such event log or traffic recording", err=True)
        raise typer.Exit(code=2)
    count = export_requests(events, sys.stdout)
    typer.echo(f"{count} requests", err=True)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="hybrid-serve")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
