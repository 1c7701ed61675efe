"""The dashboard: `GET /dashboard` (the page), its script and style sheet under `/dashboard/assets/`, and
`GET /dashboard/data` (one page of experiments, JSON).

Why this module exists: an operator watches each experiment's state, replicas, window and cost move in
a browser, with nothing but the endpoint — every file the page needs is served here. The page and its
two assets hold no data (they are the same on every server), and a browser cannot send a bearer token
when it loads a page, so they answer without the token (`PUBLIC_PATHS`, which the token middleware lets
through); the data answers only with it: the page asks for the token, keeps it in the tab's
sessionStorage, and sends it as `Authorization: Bearer` on each fetch. A strict Content-Security-Policy
keeps the page to its own files and its own data.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from core.http.dashboard_view import MAX_LIMIT, DashboardView
from core.http.error_shape import documented_errors
from core.http.static_files import NO_SNIFF, STATIC, file_response, missing, read_text
from core.http.views import StateViews

PAGE = "/dashboard"
ASSET_PREFIX = "/dashboard/assets/"
#: The page's own files, by the name it asks for them.
ASSETS = ("dashboard.js", "dashboard.css")
#: What answers a GET (or HEAD) without the token: the page and its assets, which hold no data.
PUBLIC_PATHS: tuple[str, ...] = (PAGE, *(ASSET_PREFIX + name for name in ASSETS))
#: The page may load its own script, style sheet and data, and nothing else; nobody may frame it.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def add_dashboard_routes(app: FastAPI, views: StateViews) -> None:
    """`/dashboard`, its assets and `/dashboard/data`, built from `views`."""
    dashboard = DashboardView(views)
    needs_token = views.path.settings.api_token is not None

    @app.api_route(PAGE, methods=["GET", "HEAD"], include_in_schema=False)
    async def page(request: Request) -> Response:
        try:
            template = read_text(STATIC / "dashboard.html")
        except OSError:
            return missing(STATIC / "dashboard.html")
        root = html.escape(str(request.scope.get("root_path") or ""), quote=True)
        text = template.replace("{{root}}", root).replace("{{auth}}", "bearer" if needs_token else "none")
        return HTMLResponse(text, headers={**NO_SNIFF, "Cache-Control": "no-cache",
                                           "Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @app.api_route(ASSET_PREFIX + "{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            raise HTTPException(404, f"the dashboard has no asset {name!r}")
        return file_response(STATIC / name)

    @app.get(PAGE + "/data", responses=documented_errors(401))
    async def data(offset: Annotated[int, Query(ge=0)] = 0,
                   limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
                   q: Annotated[str, Query(max_length=200)] = "") -> JSONResponse:
        """The dashboard's data: the experiments matching `q` (in the id or the task), `limit` of them
        from `offset` (registry order), each with its state, replicas, window and why, time left before
        scale-down, last cold start, today's cost and its last hour a minute a point; `total` and
        `matched` count every registered and every matching experiment."""
        body: dict[str, Any] = await dashboard.page(offset, limit, q)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})
