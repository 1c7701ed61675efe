"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), with every file they load
served by the endpoint itself at `/docs/assets/…`.

Why this module exists: FastAPI's own pages load Swagger UI and ReDoc from a CDN (ReDoc also Google's
fonts): offline or behind a firewall they stay blank, and every visit is announced to a third party.
The files come from an installed package that ships them (`fastapi-offline`'s `static` folder: Swagger
UI 5, which reads the OpenAPI 3.1 this app writes, and ReDoc); the pages are FastAPI's own, pointed at
them, with Swagger UI's online validator off. They hold no data (the OpenAPI document describes the
routes, never an experiment), so — like the dashboard's page — they open without the bearer token,
which a browser cannot send when it loads a page; when a token is set the document declares it, and
Swagger UI's *Authorize* sends it on every call tried from the page.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

from core.http.static_files import file_response

DOCS_PAGE = "/docs"
REDOC_PAGE = "/redoc"
ASSET_PREFIX = "/docs/assets/"
#: The package whose `static` folder holds the files, and the files served from it.
ASSET_PACKAGE = "fastapi_offline"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
OPENAPI = "/openapi.json"
#: What answers a GET without the token: the pages, their files and the OpenAPI document.
PUBLIC_PATHS: tuple[str, ...] = (DOCS_PAGE, REDOC_PAGE, OPENAPI, *(ASSET_PREFIX + name for name in ASSETS))


def asset_folder() -> Path:
    """Where the installed package keeps the files (a path that does not exist when it is missing:
    the assets then answer 503, and the server still starts)."""
    spec = importlib.util.find_spec(ASSET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return Path(ASSET_PACKAGE) / "not-installed"
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def add_docs_routes(app: FastAPI, bearer: bool) -> None:
    """`/docs`, `/redoc` and their assets (the app is made with `docs_url=None, redoc_url=None`);
    `bearer`: every route but the public ones needs a token, which the document then declares."""
    folder = asset_folder()
    openapi_url = app.openapi_url or OPENAPI
    if bearer:
        _declare_bearer(app)

    def root(request: Request) -> str:
        return str(request.scope.get("root_path") or "")

    @app.get(DOCS_PAGE, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        assets = root(request) + ASSET_PREFIX
        return get_swagger_ui_html(openapi_url=root(request) + openapi_url, title=f"{app.title} - Swagger UI",
                                   swagger_js_url=assets + "swagger-ui-bundle.js", swagger_css_url=assets + "swagger-ui.css",
                                   swagger_favicon_url=assets + "favicon.png", oauth2_redirect_url=None,
                                   swagger_ui_parameters={"validatorUrl": None})

    @app.get(REDOC_PAGE, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        assets = root(request) + ASSET_PREFIX
        return get_redoc_html(openapi_url=root(request) + openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=assets + "redoc.standalone.js", redoc_favicon_url=assets + "favicon.png",
                              with_google_fonts=False)

    @app.get(ASSET_PREFIX + "{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, f"the API docs have no asset {name!r}")
        return file_response(folder / name, cache="public, max-age=3600")


def _declare_bearer(app: FastAPI) -> None:
    """The OpenAPI document says every operation takes `Authorization: Bearer <token>`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "HYBRID_API_TOKEN"}}
            schema["security"] = [{"bearer": []}]
        return app.openapi_schema  # type: ignore[return-value]  (build() cached it)

    app.openapi = openapi  # type: ignore[method-assign]
