"""Model sources in an MLflow Model Registry: `mlflow:models:/NAME/VERSION`, `mlflow:models:/NAME@ALIAS`
and `mlflow:runs:/RUN_ID/ARTIFACT_PATH`, for models logged with MLflow's transformers flavour.

Why this module exists: teams that track their experiments in MLflow promote a model by moving an
alias (`@champion`) to a new version; serving should follow the registry instead of a copied folder.
The work is split in three steps that are used separately:

- `parse` only checks the syntax (no MLflow import, no network), so the registry refuses a bad
  source when it is loaded;
- `resolve` asks the MLflow client, in one call, which concrete model a source points at *now*
  (an alias becomes the version it names); its `identity` is what a server polls to notice that an
  alias moved;
- `download` fetches that concrete model once into a local cache (atomically: a killed or concurrent
  download never leaves a half model that is later used) and returns a directory that transformers'
  `from_pretrained` reads: the flavour keeps the weights and config in `model/` and the tokenizer in
  `components/tokenizer/`, so the two are joined (hard links) in one folder.

The tracking server (and the model registry) come from MLflow's own `MLFLOW_TRACKING_URI` (and
`MLFLOW_REGISTRY_URI`, which defaults to it). MLflow is an optional dependency, imported only here and
only when an MLflow source is used: `pip install 'hybrid-serve[mlflow]'`. Every failure becomes
`ModelUnavailable` naming the source and the reason, with any credential scrubbed from it (MLflow
names the URL it called, user and password included).

A tracking server that accepts a connection and never answers would hold a caller for minutes
(MLflow's defaults: 120 s per request, 7 retries). So every MLflow call runs on a daemon thread of
its own (core.serving.detached): `resolve` is given up after `HYBRID_MLFLOW_TIMEOUT_S`, MLflow's own
per-request timeout is set to it and its retries to 0 unless `MLFLOW_HTTP_REQUEST_TIMEOUT` /
`MLFLOW_HTTP_REQUEST_MAX_RETRIES` are set (a failed resolution is retried at the next poll or
request), and the main job's Ctrl-C releases whoever waits for one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.serving.detached import CallAbandoned, CallTimedOut, DetachedCalls
from core.serving.errors import ModelUnavailable
from core.serving.scrub import reason

MLFLOW_PREFIX = "mlflow:"
DEFAULT_CACHE_ROOT = Path("~/.cache/hybrid-serve/mlflow")
INSTALL_HINT = "pip install 'hybrid-serve[mlflow]'"
ACCEPTED_FORMS = "mlflow:models:/NAME/VERSION, mlflow:models:/NAME@ALIAS or mlflow:runs:/RUN_ID/ARTIFACT_PATH"

#: In a cache entry: the artifacts as downloaded, the folder `from_pretrained` reads, and the marker
#: written last (inside the temporary folder, before the rename that publishes the entry).
ARTIFACTS_DIR = "artifacts"
MODEL_DIR = "model"
COMPLETE_MARKER = "complete.json"
PARTIAL_PREFIX = ".partial-"

_NAME = r"[^/@\s](?:[^/@]*[^/@\s])?"  # a registered model name: no "/" or "@", not blank at either end
_MODEL_VERSION = re.compile(rf"^models:/(?P<name>{_NAME})/(?P<version>[1-9][0-9]*)$")
_MODEL_ALIAS = re.compile(rf"^models:/(?P<name>{_NAME})@(?P<alias>[A-Za-z0-9_-]+)$")
_RUN = re.compile(r"^runs:/(?P<run_id>[A-Za-z0-9_-]+)/(?P<path>[^\s].*)$")

RefKind = Literal["version", "alias", "run"]

#: MLflow's own bounds on each HTTP request, set from HYBRID_MLFLOW_TIMEOUT_S unless the user set them.
REQUEST_TIMEOUT_VARIABLE = "MLFLOW_HTTP_REQUEST_TIMEOUT"
REQUEST_RETRIES_VARIABLE = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"

#: Every MLflow client call of this process (stopped by the main job on Ctrl-C).
MLFLOW_CALLS = DetachedCalls("mlflow")
_SET_HERE: dict[str, str] = {}  # the values this module gave MLflow's variables (not the user's)


@dataclass(frozen=True)
class MlflowRef:
    """A parsed MLflow source: a registered model version, a registered model alias, or a run's artifact."""

    kind: RefKind
    name: str = ""
    version: str = ""
    alias: str = ""
    run_id: str = ""
    path: str = ""

    @property
    def uri(self) -> str:
        """The MLflow URI this reference spells (without the `mlflow:` prefix)."""
        if self.kind == "version":
            return f"models:/{self.name}/{self.version}"
        if self.kind == "alias":
            return f"models:/{self.name}@{self.alias}"
        return f"runs:/{self.run_id}/{self.path}"

    @property
    def moves(self) -> bool:
        """True when the model behind this reference can change (an alias); only those need polling."""
        return self.kind == "alias"


@dataclass(frozen=True)
class Resolved:
    """The concrete model an `MlflowRef` points at when it was resolved."""

    ref: MlflowRef
    #: Stable name of the concrete model, e.g. `models:/NAME/3` or `runs:/RUN/PATH`: when it changes,
    #: the source points at another model.
    identity: str
    #: The URI `download` fetches.
    download_uri: str
    #: The tracking or registry store it was resolved against (part of the cache key; may hold
    #: credentials, hence never shown).
    store_uri: str = field(default="", repr=False)


# --- syntax ------------------------------------------------------------------------------------
def is_mlflow_source(source: str) -> bool:
    return source.startswith(MLFLOW_PREFIX)


def parse(source: str) -> MlflowRef:
    """Check an `mlflow:` source's syntax; raise ValueError naming the accepted forms. Pure: no MLflow, no network."""
    if not is_mlflow_source(source):
        raise ValueError(f"{source!r} is not an MLflow source; accepted: {ACCEPTED_FORMS}")
    uri = source.removeprefix(MLFLOW_PREFIX)
    if match := _MODEL_VERSION.match(uri):
        return MlflowRef("version", name=match["name"], version=match["version"])
    if match := _MODEL_ALIAS.match(uri):
        return MlflowRef("alias", name=match["name"], alias=match["alias"])
    if match := _RUN.match(uri):
        path = match["path"].rstrip("/")
        parts = path.split("/")
        if path and not path.startswith("/") and ".." not in parts and "" not in parts:
            return MlflowRef("run", run_id=match["run_id"], path=path)
    raise ValueError(
        f"{source!r} is not a valid MLflow source; accepted: {ACCEPTED_FORMS} "
        "(VERSION a number ≥ 1, ALIAS letters, digits, '_' or '-', ARTIFACT_PATH relative)"
    )


# --- MLflow access -----------------------------------------------------------------------------
def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ModelUnavailable(f"MLflow sources need the mlflow extra: {INSTALL_HINT}") from None
    return mlflow


def _unavailable(ref: MlflowRef, action: str, exc: BaseException) -> ModelUnavailable:
    return ModelUnavailable(f"{MLFLOW_PREFIX}{ref.uri}: {action} failed: {reason(exc)}")


def timeout_s() -> float:
    """HYBRID_MLFLOW_TIMEOUT_S (environment or `.env`)."""
    from core.settings import load_settings

    return load_settings().mlflow_timeout_s


def _bound_requests(bound_s: float) -> None:
    """MLflow's per-request timeout = the bound, no retries — unless the user set them (the user's win)."""
    for name, value in ((REQUEST_TIMEOUT_VARIABLE, str(max(1, math.ceil(bound_s)))), (REQUEST_RETRIES_VARIABLE, "0")):
        if os.environ.get(name) in (None, _SET_HERE.get(name)):
            os.environ[name] = _SET_HERE[name] = value


def _no_answer(ref: MlflowRef, action: str, bound_s: float | None) -> ModelUnavailable:
    return ModelUnavailable(f"{MLFLOW_PREFIX}{ref.uri}: {action} failed: no answer from MLflow within "
                            f"{bound_s:g}s (HYBRID_MLFLOW_TIMEOUT_S)")


def _timed_out(exc: BaseException) -> bool:
    """MLflow's own per-request timeout (set to the bound) fired: a timeout somewhere in the chain.
    MLflow wraps the HTTP library's exception in its own, so the type is looked for along the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError) or type(seen).__name__ in ("ReadTimeout", "ReadTimeoutError", "ConnectTimeout"):
            return True
        seen = seen.__cause__ or seen.__context__
    return "ReadTimeoutError" in str(exc)


def _detached(ref: MlflowRef, action: str, call: Any, bound_s: float | None, key: Any = None) -> Any:
    """`call()` on a thread of its own, given up after `bound_s` or when the process stops."""
    try:
        return MLFLOW_CALLS.call(call, bound_s, key)
    except CallTimedOut:
        raise _no_answer(ref, action, bound_s) from None
    except CallAbandoned:
        raise ModelUnavailable(f"{MLFLOW_PREFIX}{ref.uri}: {action} stopped: the server is shutting down",
                               retry_after_s=1) from None


def resolve(ref: MlflowRef) -> Resolved:
    """Which concrete model `ref` points at now (one client call): for an alias, the version it names.

    Cheap enough to poll: compare `identity` with the loaded model's to notice an alias that moved.
    Concurrent resolutions of one source against one store share one call."""
    mlflow = _mlflow()
    if not mlflow.is_tracking_uri_set():
        raise ModelUnavailable(f"{MLFLOW_PREFIX}{ref.uri}: MLFLOW_TRACKING_URI is not set (the MLflow tracking server "
                               "or store that holds the model)")
    bound_s = timeout_s()
    _bound_requests(bound_s)
    tracking_uri, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    store_uri = tracking_uri if ref.kind == "run" else registry_uri

    def ask() -> Resolved:
        try:
            client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
            if ref.kind == "run":
                client.get_run(ref.run_id)
                return Resolved(ref, identity=ref.uri, download_uri=ref.uri, store_uri=store_uri)
            if ref.kind == "alias":
                version = client.get_model_version_by_alias(ref.name, ref.alias)
            else:
                version = client.get_model_version(ref.name, ref.version)
        except Exception as exc:  # unknown model/alias/run, unreachable store: all mean "cannot load now"
            if _timed_out(exc):  # MLflow's request timeout and the bound are one (they race under load)
                raise _no_answer(ref, "resolving", bound_s) from None
            raise _unavailable(ref, "resolving", exc) from None
        concrete = f"models:/{ref.name}/{version.version}"
        return Resolved(ref, identity=concrete, download_uri=concrete, store_uri=store_uri)

    return _detached(ref, "resolving", ask, bound_s, key=("resolve", tracking_uri, registry_uri, ref))


# --- the local cache ---------------------------------------------------------------------------
def default_cache_root() -> Path:
    """HYBRID_MLFLOW_CACHE when set (environment or `.env`), else ~/.cache/hybrid-serve/mlflow."""
    from core.settings import load_settings

    return Path(load_settings().mlflow_cache or DEFAULT_CACHE_ROOT).expanduser()


def cache_entry(resolved: Resolved, cache_root: Path) -> Path:
    """The cache folder of one concrete model: readable identity plus a hash of store and identity."""
    digest = hashlib.sha256(f"{resolved.store_uri}\n{resolved.identity}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", resolved.identity).strip("-.")[:80]
    return Path(cache_root) / f"{slug}-{digest}"


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (copy where links are impossible) every file of `src` into `dst`, keeping files already there."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)


def _compose(resolved: Resolved, artifacts: Path, target: Path) -> None:
    """Join the transformers flavour's model folder and its components (tokenizer, ...) in `target`."""
    mlflow = _mlflow()
    where = MLFLOW_PREFIX + resolved.ref.uri
    if resolved.identity != resolved.ref.uri:
        where += f" ({resolved.identity})"
    if not (artifacts / "MLmodel").is_file():
        raise ModelUnavailable(f"{where}: no MLflow model there (no MLmodel file); log one with mlflow.transformers.log_model")
    flavors = mlflow.models.Model.load(str(artifacts / "MLmodel")).flavors
    flavor = flavors.get("transformers")
    if flavor is None:
        raise ModelUnavailable(f"{where}: not a transformers model (flavours: {', '.join(sorted(flavors)) or 'none'}); "
                               "log it with mlflow.transformers.log_model")
    binary = artifacts / str(flavor.get("model_binary") or "model")
    if not (binary / "config.json").is_file():
        raise ModelUnavailable(
            f"{where}: the transformers model holds no weights (logged with save_pretrained=False? it only names "
            f"{flavor.get('source_model_name')!r}); log it with the weights"
        )
    _link_tree(binary, target)
    for component in flavor.get("components") or []:
        if (artifacts / "components" / component).is_dir():
            _link_tree(artifacts / "components" / component, target)


def download(resolved: Resolved, cache_root: Path | None = None) -> Path:
    """The local folder (config, weights, tokenizer) of `resolved`, downloaded once per concrete model.

    A download goes to a temporary folder beside the entry and is published by one rename, so a
    killed process leaves only an ignored `.partial-*` folder and two processes never see half a model."""
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root()
    entry = cache_entry(resolved, root)
    if (entry / COMPLETE_MARKER).is_file():
        return entry / MODEL_DIR
    mlflow = _mlflow()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a progress bar per load is log noise
    _bound_requests(timeout_s())
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=root))

    def fetch() -> str:
        try:
            return str(mlflow.artifacts.download_artifacts(artifact_uri=resolved.download_uri,
                                                           dst_path=str(partial / ARTIFACTS_DIR)))
        except Exception as exc:
            raise _unavailable(resolved.ref, f"downloading {resolved.identity}", exc) from None

    try:
        # No bound on the whole download (a large model takes minutes), only on each of MLflow's requests.
        fetched = _detached(resolved.ref, f"downloading {resolved.identity}", fetch, None)
        _compose(resolved, Path(fetched), partial / MODEL_DIR)
        (partial / COMPLETE_MARKER).write_text(json.dumps(
            {"source": MLFLOW_PREFIX + resolved.ref.uri, "identity": resolved.identity, "downloaded_at": time.time()}
        ))
        if entry.exists() and not (entry / COMPLETE_MARKER).is_file():
            shutil.rmtree(entry, ignore_errors=True)  # not published by this code: never trusted
        try:
            partial.rename(entry)
        except OSError:
            if not (entry / COMPLETE_MARKER).is_file():  # not a concurrent download that finished first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return entry / MODEL_DIR


def model_dir(source: str, cache_root: Path | None = None) -> Path:
    """Parse, resolve and download an `mlflow:` source: the folder `from_pretrained` reads."""
    try:
        ref = parse(source)
    except ValueError as exc:
        raise ModelUnavailable(str(exc)) from None
    return download(resolve(ref), cache_root)
