"""GitHub App auth, and a gidgethub client that retries 5xx and rate limits and paces content writes."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import aiohttp
import jwt
from gidgethub import sansio
from gidgethub.aiohttp import GitHubAPI

from bot.metrics import Metrics


log = logging.getLogger("drbot.github")

USER_AGENT = "drbot (+https://github.com/huggingface/diffusers/issues/13656)"
#: methods that create or change content: GitHub's secondary limits count these, so they are paced
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
#: longest wait drbot accepts inside one event; past it the event fails and is retried from the queue
MAX_WAIT_S = 120.0


def app_jwt(app_id: str, private_key: str, now: float | None = None) -> str:
    """The App's JWT: RS256, `iat` 60 s in the past (clock drift), `exp` 9 minutes ahead (GitHub allows 10)."""
    now = int(time.time() if now is None else now)
    return jwt.encode({"iat": now - 60, "exp": now + 540, "iss": str(app_id)}, private_key, algorithm="RS256")


@dataclass
class _Token:
    value: str
    expires_at: float


class AppAuth:
    """Installation tokens, each narrowed to one repository and the permissions its caller needs, and cached
    until 5 minutes before it expires (one cache entry per installation, repository and permission set)."""

    REFRESH_MARGIN_S = 300.0

    def __init__(self, app_id: str, private_key: str, api_url: str, session: aiohttp.ClientSession, clock=time.time):
        self.app_id = app_id
        self.private_key = private_key
        self.api_url = api_url
        self.session = session
        self.clock = clock
        self._tokens: dict[tuple, _Token] = {}
        self._locks: dict[tuple, asyncio.Lock] = {}

    async def token(
        self, installation_id: int, repository: str | None = None, permissions: Mapping[str, str] | None = None
    ) -> str:
        """A token for `installation_id`; with `repository` (`owner/name` or `name`) it reaches that repository
        only, with `permissions` ({"checks": "write", ...}) nothing more (least privilege: a leaked token of one
        event can neither touch another repository nor do what the event never needed)."""
        name = repository.split("/")[-1] if repository else None
        scope = tuple(sorted((permissions or {}).items()))
        key = (installation_id, name, scope)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one refresh per scope, however many events want it at once
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at - self.REFRESH_MARGIN_S > self.clock():
                return cached.value
            gh = GitHubAPI(self.session, USER_AGENT, base_url=self.api_url)
            body: dict = {}
            if name:
                body["repositories"] = [name]
            if permissions:
                body["permissions"] = dict(permissions)
            data = await gh.post(
                "/app/installations/{installation_id}/access_tokens",
                url_vars={"installation_id": str(installation_id)},
                data=body or b"",
                jwt=app_jwt(self.app_id, self.private_key),
            )
            expires = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00")).timestamp()
            self._tokens[key] = _Token(data["token"], expires)
            return data["token"]


class Pacer(Protocol):
    """Serializes and spaces the content writes of one installation: `async with pacer.slot(installation): ...`."""

    def slot(self, key: object) -> AbstractAsyncContextManager[None]: ...


class WritePacer:
    """Serializes content writes per installation with a minimum spacing (shared by all clients of a process)."""

    def __init__(self, spacing_s: float = 1.0, clock=time.monotonic, sleep=asyncio.sleep) -> None:
        self.spacing_s = spacing_s
        self.clock = clock
        self.sleep = sleep
        self._locks: dict[object, asyncio.Lock] = {}
        self._last: dict[object, float] = {}

    def slot(self, key: object) -> _Slot:
        return _Slot(self, key)


class _Slot:
    def __init__(self, pacer: WritePacer, key: object) -> None:
        self.pacer, self.key = pacer, key
        self.lock = pacer._locks.setdefault(key, asyncio.Lock())

    async def __aenter__(self) -> None:
        await self.lock.acquire()
        last = self.pacer._last.get(self.key)
        if last is not None:
            wait = last + self.pacer.spacing_s - self.pacer.clock()
            if wait > 0:
                await self.pacer.sleep(wait)

    async def __aexit__(self, *exc) -> None:
        self.pacer._last[self.key] = self.pacer.clock()
        self.lock.release()


class RedisWritePacer:
    """The same contract across processes: a Redis key per installation is held while a write is in flight and
    for `spacing_s` after it, so the writes of all replicas to one installation are serial and spaced."""

    # a holder that crashed (or lost Redis) mid-write frees the installation after this long; a write that takes
    # longer only lets the next one start early
    HOLD_MS = 10_000
    #: how often a waiter looks whether the write in flight has ended
    POLL_MS = 25

    def __init__(self, redis, prefix: str, spacing_s: float = 1.0, sleep=asyncio.sleep) -> None:
        self.redis, self.prefix, self.spacing_s, self.sleep = redis, prefix, spacing_s, sleep

    def slot(self, key: object) -> _RedisSlot:
        return _RedisSlot(self, f"{self.prefix}pace:{key}")


class _RedisSlot:
    def __init__(self, pacer: RedisWritePacer, key: str) -> None:
        self.pacer, self.key = pacer, key
        self.token = f"{id(self)}-{time.monotonic_ns()}"

    async def __aenter__(self) -> None:
        spacing_ms = self.pacer.spacing_s * 1000
        while not await self.pacer.redis.set(self.key, self.token, nx=True, px=self.pacer.HOLD_MS):
            wait_ms = await self.pacer.redis.pttl(self.key)
            if wait_ms > spacing_ms:
                # a write is in flight (its key lives HOLD_MS, for a crashed holder), and usually ends within
                # milliseconds: poll for its end instead of sleeping up to a second past it
                wait_ms = min(wait_ms - spacing_ms, self.pacer.POLL_MS)
            await self.pacer.sleep(min(max(wait_ms, 5), 1000) / 1000)

    async def __aexit__(self, *exc) -> None:
        # keep the key for the spacing after this write (only if it is still ours)
        if self.pacer.spacing_s > 0:
            await self.pacer.redis.pexpire(self.key, max(1, int(self.pacer.spacing_s * 1000)))
        else:
            await self.pacer.redis.delete(self.key)


def retry_delay(status: int, headers, body: bytes, attempt: int, now: float | None = None) -> float | None:
    """Seconds to wait before retrying a GitHub answer, or None when it is final.

    5xx: exponential backoff (1, 2, 4 … s). 403/429 with `retry-after`: that many seconds. A primary rate limit
    (`x-ratelimit-remaining: 0`): until `x-ratelimit-reset`. A secondary rate limit without either: one minute,
    as GitHub's documentation asks.
    """
    if status in (500, 502, 503, 504):
        after = _retry_after(headers)
        return after if after is not None else float(min(2**attempt, 30))
    if status not in (403, 429):
        return None
    after = _retry_after(headers)
    if after is not None:
        return after
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        now = time.time() if now is None else now
        return max(1.0, float(headers["x-ratelimit-reset"]) - now + 1)
    if status == 429 or b"secondary rate limit" in body.lower():
        return 60.0
    return None  # a plain 403 (no permission) is final


def _retry_after(headers) -> float | None:
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw)  # an HTTP date
        return max(0.0, parsed.timestamp() - time.time())


class DownloadTooLarge(Exception):
    """A download passed its size cap; final (the same resource is as large next time), so never retried."""

    def __init__(self, url: str, limit: int, size: int | None = None) -> None:
        self.url, self.limit, self.size = url, limit, size
        told = f" ({size:,} bytes)" if size is not None else ""
        super().__init__(f"{url} is larger than the {limit:,}-byte download limit{told}")


async def _save(response: aiohttp.ClientResponse, path: str | os.PathLike, max_bytes: int, url: str) -> None:
    """Write the body to `path` in chunks, stopping (and removing the file) once it passes `max_bytes`."""
    if response.content_length is not None and response.content_length > max_bytes:
        raise DownloadTooLarge(url, max_bytes, response.content_length)  # said up front: nothing is read
    written = 0
    try:
        with open(path, "wb") as handle:
            async for chunk in response.content.iter_chunked(1 << 16):
                written += len(chunk)
                if written > max_bytes:
                    raise DownloadTooLarge(url, max_bytes)
                handle.write(chunk)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


class GitHub(GitHubAPI):
    """gidgethub's aiohttp client with drbot's manners: retries, pacing of writes, metrics."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token: str | None = None,
        api_url: str,
        installation_id: int | None = None,
        pacer: Pacer | None = None,
        metrics: Metrics | None = None,
        max_retries: int = 5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(session, USER_AGENT, oauth_token=token, base_url=api_url)
        self.installation_id = installation_id
        self.pacer = pacer or WritePacer()
        self.metrics = metrics or Metrics()
        self.max_retries = max_retries
        self._pause = sleep  # gidgethub's own `sleep` is a method; tests pass a fake clock here
        self.waited: list[float] = []  # the waits this client took (logs and tests read them)

    async def _request(self, method: str, url: str, headers, body: bytes = b""):
        for attempt in range(self.max_retries + 1):
            if method in WRITE_METHODS:
                async with self.pacer.slot(self.installation_id):
                    status, response_headers, content = await super()._request(method, url, headers, body)
            else:
                status, response_headers, content = await super()._request(method, url, headers, body)
            self.metrics.github_calls.labels(method, str(status)).inc()
            remaining = response_headers.get("x-ratelimit-remaining")
            if remaining is not None:
                self.metrics.rate_limit_remaining.labels(str(self.installation_id)).set(float(remaining))
            delay = retry_delay(status, response_headers, content, attempt)
            if delay is None or attempt == self.max_retries or delay > MAX_WAIT_S:
                return status, response_headers, content
            log.warning("GitHub answered %s to %s %s; retrying in %.1f s", status, method, url, delay)
            self.waited.append(delay)
            await self._pause(delay)
        raise AssertionError("unreachable")

    async def download(
        self, url: str, path: str | os.PathLike, max_bytes: int, *, accept: str = "application/vnd.github+json"
    ) -> int:
        """Stream a GET (a tarball; GitHub redirects it to codeload) into the file `path`, never more than
        `max_bytes` of it, with this client's auth, retries and metrics. Returns the final HTTP status: the file
        holds the body only when it is 200. Past the cap the partial file is removed and DownloadTooLarge raised."""
        full = sansio.format_url(url, {}, base_url=self.base_url)
        headers = sansio.create_headers(self.requester, accept=accept, oauth_token=self.oauth_token)
        for attempt in range(self.max_retries + 1):
            # aiohttp follows the redirect, and drops the Authorization header when it leaves the API's origin
            async with self._session.get(full, headers=headers, allow_redirects=True) as response:
                self.metrics.github_calls.labels("GET", str(response.status)).inc()
                for hop in (*response.history, response):
                    remaining = hop.headers.get("x-ratelimit-remaining")
                    if remaining is not None:
                        self.metrics.rate_limit_remaining.labels(str(self.installation_id)).set(float(remaining))
                if response.status == 200:
                    await _save(response, path, max_bytes, url)
                    return 200
                status, response_headers = response.status, response.headers
                body = await response.content.read(64 * 1024)  # enough to tell a secondary rate limit
            delay = retry_delay(status, response_headers, body, attempt)
            if delay is None or attempt == self.max_retries or delay > MAX_WAIT_S:
                return status
            log.warning("GitHub answered %s to GET %s; retrying in %.1f s", status, full, delay)
            self.waited.append(delay)
            await self._pause(delay)
        raise AssertionError("unreachable")

    async def raw(self, url: str, *, accept: str = "application/vnd.github.raw") -> tuple[int, bytes]:
        """GET a non-JSON resource (raw file content, a tarball) with this client's auth, retries and metrics."""
        full = sansio.format_url(url, {}, base_url=self.base_url)
        headers = sansio.create_headers(self.requester, accept=accept, oauth_token=self.oauth_token)
        status, _, content = await self._request("GET", full, headers)
        return status, content
