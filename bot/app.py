"""The aiohttp app: verify a webhook, deduplicate it, enqueue it, answer in milliseconds (no GitHub calls here)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from bot.dashboard import add_routes as add_dashboard
from bot.feedback import KINDS, Feedback, rule_codes
from bot.metrics import OTHER_EVENT, UNVERIFIED, Metrics
from bot.settings import Settings
from bot.store import EventQueue, Keys, connect


log = logging.getLogger("drbot.web")

#: the events drbot acts on; any other verified delivery gets 204 and is not queued
HANDLED_EVENTS = frozenset({"pull_request", "issue_comment"})
#: the `event` label values of verified deliveries; every other event is counted as OTHER_EVENT
LABELLED_EVENTS = HANDLED_EVENTS | {"ping"}
#: GitHub's payloads nest about ten levels; deeper ones are refused before anything walks them recursively
MAX_JSON_DEPTH = 64
#: /healthz and the /metrics refresh give Redis this long before answering without it
REDIS_TIMEOUT_S = 2.0

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
QUEUE = web.AppKey("queue", EventQueue)
METRICS = web.AppKey("metrics", Metrics)


class PayloadError(ValueError):
    """A verified body that is not a JSON object GitHub could have sent; answered 400."""


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether `X-Hub-Signature-256` is the HMAC-SHA256 of the raw body; a missing or sha1-only header fails."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header.removeprefix("sha256="), expected)


def _refuse_constant(name: str) -> None:
    raise PayloadError(f"malformed JSON: {name} is not JSON")


def parse_payload(body: bytes) -> dict:
    """The JSON object in a webhook body; PayloadError for what GitHub never sends: not UTF-8, not JSON, NaN or
    Infinity, integers past Python's digit limit, nesting past MAX_JSON_DEPTH, anything but an object."""
    try:
        # decoded here, not by json.loads: given bytes, that also accepts UTF-16 and UTF-32
        payload = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise PayloadError(f"malformed payload: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except PayloadError:
        raise
    except ValueError as error:  # UnicodeDecodeError, JSONDecodeError, and the int digit limit's ValueError
        raise PayloadError(f"malformed JSON: {str(error)[:200]}") from None
    if not isinstance(payload, dict):
        raise PayloadError("malformed payload: not a JSON object")
    # walked without recursion: the parser's own limit is the interpreter's, and code that walks the payload
    # later (a handler, json.dumps) may have less stack left than the parser had
    stack: list[tuple[dict | list, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise PayloadError(f"malformed payload: nested deeper than {MAX_JSON_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return payload


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send `response` and close the connection: aiohttp would otherwise keep reading what is left of the body
    (its lingering time) for a client that is still trickling it in."""
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


async def receive_webhook(request: web.Request) -> web.Response:
    settings, queue, metrics = request.app[SETTINGS], request.app[QUEUE], request.app[METRICS]
    try:
        body = await asyncio.wait_for(request.read(), settings.read_timeout_s)
    except asyncio.TimeoutError:
        # GitHub sends the whole body at once; one that trickles in holds a connection open for nothing
        metrics.deliveries.labels(UNVERIFIED, "timeout").inc()
        return await _answer_and_close(request, _error(408, f"body not received in {settings.read_timeout_s:g} s"))
    except web.HTTPRequestEntityTooLarge:
        metrics.deliveries.labels(UNVERIFIED, "rejected").inc()
        return _error(413, f"payload over {settings.max_body_bytes} bytes")
    signature = request.headers.get("X-Hub-Signature-256")
    if not verify_signature(settings.webhook_secret, body, signature):
        # nothing of an unverified request becomes a label: its headers are whatever the sender chose
        metrics.deliveries.labels(UNVERIFIED, "rejected").inc()
        return _error(401, "missing or wrong X-Hub-Signature-256")
    event = request.headers.get("X-GitHub-Event", "")
    label = event if event in LABELLED_EVENTS else OTHER_EVENT
    delivery = request.headers.get("X-GitHub-Delivery", "")
    if not event or not delivery:
        metrics.deliveries.labels(label, "rejected").inc()
        return _error(400, "X-GitHub-Event and X-GitHub-Delivery are required")
    try:
        parse_payload(body)
    except PayloadError as error:
        metrics.deliveries.labels(label, "rejected").inc()
        return _error(400, str(error))
    if event == "ping":
        metrics.deliveries.labels(label, "ignored").inc()
        return web.json_response({"pong": True})
    if event not in HANDLED_EVENTS:
        metrics.deliveries.labels(label, "ignored").inc()
        return web.Response(status=204)
    try:
        message_id = await queue.accept(delivery, event, body, settings.delivery_ttl_s, signature or "")
    except (RedisError, OSError) as error:
        # GitHub keeps the delivery and it can be redelivered; nothing accepted earlier is affected
        log.error("redis unavailable, delivery %s refused: %s", delivery, settings.redact(str(error)))
        metrics.deliveries.labels(label, "error").inc()
        return _error(503, "queue unavailable, redeliver later")
    if message_id is None:
        metrics.deliveries.labels(label, "duplicate").inc()
        return web.json_response({"status": "duplicate", "delivery": delivery}, status=200)
    metrics.deliveries.labels(label, "accepted").inc()
    return web.json_response({"status": "queued", "delivery": delivery, "id": message_id}, status=202)


async def healthz(request: web.Request) -> web.Response:
    # the answer says only whether Redis answers: an error's text names the host and port, and it is public
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), REDIS_TIMEOUT_S)
    except (RedisError, OSError, asyncio.TimeoutError) as error:
        log.warning("healthz: redis unavailable: %s", request.app[SETTINGS].redact(str(error) or type(error).__name__))
        return web.json_response({"status": "unhealthy", "redis": "unavailable"}, status=503)
    return web.json_response({"status": "ok", "redis": "ok"})


class RedisGauges:
    """The /metrics gauges read from Redis (queue depth, per-rule feedback), refreshed at most once per `ttl_s` and
    by one request at a time: however many ask, and however much Redis holds, a window costs one bounded read."""

    def __init__(self, queue: EventQueue, feedback: Feedback, metrics: Metrics, ttl_s: float) -> None:
        self.queue, self.feedback, self.metrics, self.ttl_s = queue, feedback, metrics, ttl_s
        self._lock = asyncio.Lock()
        self._fresh_until = float("-inf")

    async def refresh(self) -> None:
        if time.monotonic() < self._fresh_until:
            return
        async with self._lock:
            if time.monotonic() < self._fresh_until:
                return  # refreshed by the request this one waited for
            try:
                depth, counts = await asyncio.wait_for(self._read(), REDIS_TIMEOUT_S)
            except (RedisError, OSError, asyncio.TimeoutError):
                pass  # the last known values stay; /healthz reports Redis
            else:
                self.metrics.queue_depth.set(depth)
                for code, row in counts.items():
                    for kind in KINDS:
                        self.metrics.rule_feedback.labels(code, kind).set(row[kind])
            finally:
                self._fresh_until = time.monotonic() + self.ttl_s

    async def _read(self) -> tuple[int, dict[str, dict[str, int]]]:
        return await self.queue.depth(), await self.feedback.counts(rule_codes())


GAUGES = web.AppKey("gauges", RedisGauges)


async def metrics_view(request: web.Request) -> web.Response:
    await request.app[GAUGES].refresh()
    body, content_type = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def make_app(
    settings: Settings, redis: aioredis.Redis | None = None, metrics: Metrics | None = None, *, webhook: bool = True
) -> web.Application:
    """The web app; it owns a Redis client it creates, and closes it on shutdown. `webhook=False` serves only
    /healthz and /metrics (a worker-only process)."""
    app = web.Application(
        # one byte over the limit makes aiohttp raise 413 while reading, before the body is buffered whole
        client_max_size=settings.max_body_bytes,
        # connection deadlines, for whichever runner serves the app: aiohttp's keep-alive timer also runs while a
        # request's headers are incomplete, so it closes a slowloris; lingering (reading the unread rest of a
        # body after the answer) is cut to the body's own deadline
        handler_args={"keepalive_timeout": settings.header_timeout_s, "lingering_time": settings.read_timeout_s},
    )
    owns_redis = redis is None
    redis = redis or connect(settings.redis_url)
    app[SETTINGS] = settings
    app[REDIS] = redis
    app[QUEUE] = EventQueue(redis, Keys(settings.key_prefix), visibility_timeout_s=settings.visibility_timeout_s)
    app[METRICS] = metrics or Metrics()
    app[GAUGES] = RedisGauges(app[QUEUE], Feedback(redis, app[QUEUE].keys), app[METRICS], settings.metrics_cache_s)
    if webhook:
        app.router.add_post("/webhook", receive_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    add_dashboard(app, redis, app[QUEUE].keys, settings.dashboard_repos, settings.dashboard_cache_s)

    async def log_settings(app: web.Application) -> None:
        log.info("%s", settings)  # secrets masked and URL passwords redacted by Settings.__repr__

    async def close_redis(app: web.Application) -> None:
        if owns_redis:
            await redis.aclose()

    app.on_startup.append(log_settings)
    app.on_cleanup.append(close_redis)
    return app
