"""GET /dashboard: the pattern dashboard of the known-findings registry, read-only, for anyone (docs/dashboard.md).

The page is `drbot dashboard --registry REPO`'s, drawn from Redis: one HGETALL per repository and cache window,
however many ask (the rendered page, data.json and tracking.md are kept for `dashboard_cache_s`). It shows what
the registry holds (codes, paths, scopes, statuses, tracking issues) and nothing else; only the repositories named
in `dashboard_repos` are served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiohttp import web
from redis.exceptions import RedisError

from analyzers import dashboard
from bot.known import KnownRegistry


log = logging.getLogger("drbot.dashboard")
#: where the page loads plotly.js from, relative to /dashboard (so that a proxy's path prefix keeps working)
SCRIPT_SRC = f"dashboard/{dashboard.PLOTLY_JS}"
HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class Rendered:
    html: str
    data: str
    tracking: str


class DashboardCache:
    """The rendered dashboard per repository, read from the registry at most once per `ttl_s` (one reader at a
    time: a burst of requests costs one read)."""

    def __init__(self, redis, keys, ttl_s: float) -> None:
        self.redis, self.keys, self.ttl_s = redis, keys, ttl_s
        self._lock = asyncio.Lock()
        self._pages: dict[str, tuple[float, Rendered]] = {}

    async def get(self, repo: str) -> Rendered:
        cached = self._pages.get(repo)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        async with self._lock:
            cached = self._pages.get(repo)
            if cached is not None and time.monotonic() < cached[0]:
                return cached[1]
            entries = await KnownRegistry(self.redis, self.keys, repo).all()
            data = dashboard.from_registry(entries, repo=repo)
            page = Rendered(
                dashboard.index_html(data, SCRIPT_SRC), dashboard.data_json(data), dashboard.tracking_markdown(data)
            )
            self._pages[repo] = (time.monotonic() + self.ttl_s, page)
            return page


DASHBOARD = web.AppKey("dashboard", DashboardCache)
REPOS = web.AppKey("dashboard_repos", tuple)


async def _rendered(request: web.Request) -> Rendered:
    repos = request.app[REPOS]
    repo = request.query.get("repo") or (repos[0] if repos else "")
    if repo not in repos:
        raise web.HTTPNotFound(text="no dashboard for this repository\n")
    try:
        return await request.app[DASHBOARD].get(repo)
    except (RedisError, OSError):
        # the error's text names the Redis host; the page is public
        log.warning("dashboard: the registry of %s is unavailable", repo, exc_info=True)
        raise web.HTTPServiceUnavailable(text="the registry is unavailable, try again later\n") from None


async def page_view(request: web.Request) -> web.Response:
    page = await _rendered(request)
    return web.Response(text=page.html, content_type="text/html", headers=HEADERS)


async def data_view(request: web.Request) -> web.Response:
    page = await _rendered(request)
    return web.Response(text=page.data, content_type="application/json", headers=HEADERS)


async def tracking_view(request: web.Request) -> web.Response:
    page = await _rendered(request)
    return web.Response(text=page.tracking, content_type="text/markdown", headers=HEADERS)


async def plotly_view(request: web.Request) -> web.StreamResponse:
    try:
        path = dashboard.plotly_js_path()
    except FileNotFoundError:
        raise web.HTTPServiceUnavailable(text="plotly is not installed on this server\n") from None
    return web.FileResponse(path, headers={"Content-Type": "text/javascript", "Cache-Control": "max-age=86400"})


def add_routes(app: web.Application, redis, keys, repos: tuple[str, ...], ttl_s: float) -> None:
    """Serve the dashboard (/dashboard, /dashboard/data.json, /dashboard/tracking.md, plotly.js) from `app`."""
    app[DASHBOARD] = DashboardCache(redis, keys, ttl_s)
    app[REPOS] = tuple(repos)
    app.router.add_get("/dashboard", page_view)
    app.router.add_get("/dashboard/data.json", data_view)
    app.router.add_get("/dashboard/tracking.md", tracking_view)
    app.router.add_get(f"/dashboard/{dashboard.PLOTLY_JS}", plotly_view)
