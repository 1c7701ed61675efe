"""What the command-line modules share: loading the settings or exiting with status 2.

Why this module exists: `core.cli` (the `hybrid-serve` app) mounts `core.experiments_cli`, and both
need the same settings loader and error exit; kept here, neither module imports the other's
functions, so the two never form an import cycle.
"""

from __future__ import annotations

from typing import NoReturn

import typer

from core.settings import Settings, SettingsError, load_settings


def fail(message: str) -> NoReturn:
    """Print `error: message` on standard error and exit 2 (the code Typer uses for bad usage)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def settings_or_exit() -> Settings:
    """Load the settings, or print the error and exit 2."""
    try:
        return load_settings()
    except SettingsError as exc:
        fail(str(exc))
