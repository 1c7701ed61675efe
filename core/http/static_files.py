"""Files the endpoint serves itself — the dashboard's page, script and style sheet; the API docs'
Swagger UI and ReDoc — so that no page of the API loads anything from another host.

Why this module exists: a page that pulls its code from a CDN stays blank behind a firewall or offline,
and tells a third party about every visit. The dashboard's files ship with this package (package data,
`core/http/static/`), the docs' with an installed package; both are read once, answered with headers
that stop a browser from guessing their type, and — where an image ships the code without them — a
missing file is a JSON 503 in the API's error shape, never a crash at start-up.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi.responses import JSONResponse, Response

from core.http.error_shape import error_body

#: The dashboard's own files.
STATIC = Path(__file__).with_name("static")
#: Media types by suffix (the only kinds of file served).
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".png": "image/png"}
#: On every file: the declared type is the type, and no page sends where it came from.
NO_SNIFF = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@lru_cache(maxsize=16)
def read_text(path: Path) -> str:
    """A file's text, read once (the files do not change while the server runs)."""
    return path.read_text(encoding="utf-8")


@lru_cache(maxsize=16)
def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


def missing(path: Path) -> JSONResponse:
    """The answer for a file this installation lacks."""
    return JSONResponse(error_body("asset_missing", f"{path.name} is not installed with this server"), status_code=503)


def file_response(path: Path, cache: str = "no-cache", headers: dict[str, str] | None = None) -> Response:
    """`path` as it is, with its media type (by suffix); a 503 in the error shape when it is missing."""
    try:
        body = read_bytes(path)
    except OSError:
        return missing(path)
    return Response(body, media_type=MEDIA_TYPES[path.suffix], headers={**NO_SNIFF, "Cache-Control": cache, **(headers or {})})
