"""The files a Modal container will see, as the Modal client itself describes an image's uploads.

Why this module exists: what reaches a container is decided by the client's mount rules
(`add_local_python_source` ships only `.py` files; `add_local_file` puts a file at one path), and a
container that reads a file its image does not carry dies at start-up. `uploads` lists, from the
image object, every (local file, container path) the client would upload; `lay_out` copies them
under a folder, container paths kept, so the dry run checks the layout and tests run the container
code in it.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any


def uploads(image: Any) -> list[tuple[Path, PurePosixPath]]:
    """(local file, container path) of every file the image's local-file layers upload."""
    from modal._utils.async_utils import synchronizer
    from modal.mount import _Mount, _select_files

    found: set[tuple[Path, PurePosixPath]] = set()
    seen: set[int] = set()

    def walk(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        deps = obj._deps() if callable(getattr(obj, "_deps", None)) else []
        for dep in deps:
            if isinstance(dep, _Mount):
                found.update((Path(local), PurePosixPath(remote)) for local, remote in _select_files(dep.entries))
            else:
                walk(dep)

    walk(synchronizer._translate_in(image))
    return sorted(found, key=lambda pair: str(pair[1]))


def lay_out(image: Any, root: Path) -> list[PurePosixPath]:
    """Copy the image's uploads under `root` (container path /a/b → root/a/b); returns the paths."""
    paths = []
    for local, remote in uploads(image):
        target = root / str(remote).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
        paths.append(remote)
    return paths


def in_layout(root: Path, container_path: str) -> Path:
    """Where a container path lies in a layout made by `lay_out`."""
    return root / container_path.lstrip("/")
