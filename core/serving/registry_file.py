"""A registry file that running servers read and several processes change at once.

Why this module exists: experiments come and go while servers run. A change is read-modify-write of
one TOML file, so it happens under an exclusive lock (a sidecar `<file>.lock`: the file itself is
replaced, so a lock on it would be on an old inode), and the new text is written to a temporary
file beside it, flushed to disk and renamed over it: a reader — a server polling the file, a
process killed mid-change — sees the old registry or the new one, never half of one. The new text is
read back from the temporary file and must give exactly the registry that was meant before it
replaces the old file: a value the writer cannot round-trip is refused and the file stays as it was.
Servers notice a change by the file's stamp (inode, size, modification time), one `stat` per poll.
A file that vanished is an error, never an empty registry: only a writer that means to create the
file (the CLI's first `add`) starts one.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import tomllib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import tomli_w

from core.serving.registry import DEFAULT_REGISTRY, Registry, RegistryError, read_registry_text

Stamp = tuple[int, int, int]


class ReadOnlyRegistry(RegistryError):
    """This registry cannot be changed (the shipped demo registry, ...)."""


class RegistryFile:
    def __init__(self, path: Path | None):
        self.shipped = path is None
        self.path = Path(path) if path is not None else DEFAULT_REGISTRY

    @property
    def base_dir(self) -> Path:
        """Relative local sources are resolved against the file's folder."""
        return self.path.parent.resolve()

    def stamp(self) -> Stamp | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self) -> tuple[Stamp | None, Registry]:
        """The stamp and the registry it belongs to (read under the lock when the file can be changed,
        so the two match)."""
        if self.shipped:
            return self.stamp(), Registry.load(self.path)
        with self._locked():
            return self.stamp(), Registry.load(self.path)

    def change(self, edit: Callable[[Registry], Registry], create: bool = False) -> tuple[Registry, Registry]:
        """Apply `edit` to the current registry under the lock and write the result atomically;
        (before, after). `create`: a missing file counts as an empty registry (else it is an error)."""
        self._writable()
        with self._locked():
            if create and not self.path.exists():
                before = Registry({})
            else:
                before = Registry.load(self.path)
            after = edit(before)
            if after != before:
                self._write(after)
            return before, after

    def remove(self, experiment_id: str) -> bool:
        """Remove one entry; False when there is none of that id. Works on the file's tables, so an
        entry that no longer validates (edited by hand, written by an older version) can be removed
        too — as long as the rest of the file is a valid registry."""
        self._writable()
        with self._locked():
            text = read_registry_text(self.path)
            try:
                table = tomllib.loads(text).get("experiments")
            except tomllib.TOMLDecodeError:
                table = None
            if not isinstance(table, dict) or experiment_id not in table:
                Registry.parse(text, self.base_dir, str(self.path))  # a broken file says what is wrong
                return False
            rest = {k: v for k, v in table.items() if k != experiment_id}
            self._write(Registry.parse(tomli_w.dumps({"experiments": rest}), self.base_dir, str(self.path)))
            return True

    def _writable(self) -> None:
        if self.shipped:
            raise ReadOnlyRegistry(
                f"{self.path}: the shipped demo registry is not changed; set HYBRID_REGISTRY to a registry file "
                "of your own (e.g. HYBRID_REGISTRY=experiments.toml — `experiments add` creates it)")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, registry: Registry) -> None:
        """Write `registry` to a temporary file, read it back, and only when it reads back as the same
        registry rename it over the file."""
        try:
            text = registry.to_toml()
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"{self.path}: not written, a value cannot be written as TOML: {exc}") from None
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            written = Registry.parse(read_registry_text(Path(temp)), self.base_dir, str(self.path))
            if written.entries() != registry.entries():
                raise RegistryError(f"{self.path}: not written, the new text did not read back as the registry meant")
            if self.path.exists():
                os.chmod(temp, self.path.stat().st_mode & 0o777)
            else:
                os.chmod(temp, 0o644)
            os.replace(temp, self.path)
        except UnicodeEncodeError as exc:  # a lone surrogate (refused by validation before it gets here)
            Path(temp).unlink(missing_ok=True)
            raise RegistryError(f"{self.path}: not written, a value is not valid text: {exc.reason}") from None
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
