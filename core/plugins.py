"""Entry points: how core finds what the installed backends provide, without importing them.

Why this module exists: core never imports a backend (`backends.*`); a backend declares its runner,
deployer, registry store and settings under the `hybrid_serve.*` entry-point groups of the package,
and core looks them up here by group and name. One module for it keeps the command line, the
experiments commands and the settings from each reading entry points (or each other) on their own.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import EntryPoint
from importlib.metadata import entry_points as installed_entry_points
from typing import Any, Iterable


def entry_points(group: str) -> dict[str, str]:
    """`name -> "module:attribute"` of every installed entry point of `group`."""
    return {ep.name: ep.value for ep in installed_entry_points(group=group)}


def installed(group: str) -> list[EntryPoint]:
    """The installed entry points of `group`, in a stable (name) order."""
    return sorted(installed_entry_points(group=group), key=lambda ep: ep.name)


def load(target: str) -> Any:
    """The object an entry point's value (`"module:attribute"`) names."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"entry point target {target!r}: allowed: 'module:attribute'")
    return getattr(import_module(module_name), attr)


def load_all(points: Iterable[EntryPoint]) -> list[tuple[str, Any]]:
    """`(name, object)` of each entry point, loaded in the given order."""
    return [(ep.name, load(ep.value)) for ep in points]
