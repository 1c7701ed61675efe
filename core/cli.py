"""The `hybrid-serve` command line (Typer).

Why this module exists: one entry point for operators — inspect the effective configuration,
run the server, replay traces — with errors that name the bad variable and exit with status 2.
"""

from __future__ import annotations

import sys

import typer

from core.auth import mode_line
from core.settings import Settings, SettingsError, env_name, load_settings, setting_sources

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Per-experiment keep-warm model serving.")


@app.callback()
def _root() -> None:
    """Per-experiment keep-warm model serving: Modal in production, Ray Serve locally."""


def settings_or_exit() -> Settings:
    """Load the settings, or print the error and exit 2 (the code Typer uses for bad usage)."""
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


@app.command()
def config() -> None:
    """Print the authentication mode, every effective setting with its source, and the windows it implies."""
    settings = settings_or_exit()
    sources = setting_sources()
    typer.echo(mode_line(settings))
    values = settings.public_dict()
    width = max(len(name) for name in values)
    typer.echo(f"{'setting'.ljust(width)}  {'value'.ljust(12)}  source")
    for field in Settings.model_fields.values():
        name = env_name(field)
        shown = "-" if values[name] is None else str(values[name])
        typer.echo(f"{name.ljust(width)}  {shown.ljust(12)}  {sources[name]}")
    typer.echo(
        f"scaledown window after an isolated request (idle): {settings.idle_window_s} s\n"
        f"scaledown window after a request with another one in the last {settings.activity_window} s "
        f"(active): {settings.active_window_s} s"
    )


def main() -> None:
    """Console-script entry point."""
    app(prog_name="hybrid-serve")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
