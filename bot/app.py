"""The aiohttp app: verify a webhook, deduplicate it, enqueue it, answer in milliseconds (no GitHub calls here)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from bot.feedback import Feedback
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store import EventQueue, Keys, connect


log = logging.getLogger("drbot.web")

#: the events drbot acts on; any other verified delivery gets 204 and is not queued
HANDLED_EVENTS = frozenset({"pull_request", "issue_comment"})

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", aioredis.Redis)
QUEUE = web.AppKey("queue", EventQueue)
METRICS = web.AppKey("metrics", Metrics)


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether `X-Hub-Signature-256` is the HMAC-SHA256 of the raw body; a missing or sha1-only header fails."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header.removeprefix("sha256="), expected)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def receive_webhook(request: web.Request) -> web.Response:
    settings, queue, metrics = request.app[SETTINGS], request.app[QUEUE], request.app[METRICS]
    event = request.headers.get("X-GitHub-Event", "")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        metrics.deliveries.labels(event or "unknown", "rejected").inc()
        return _error(413, f"payload over {settings.max_body_bytes} bytes")
    if not verify_signature(settings.webhook_secret, body, request.headers.get("X-Hub-Signature-256")):
        metrics.deliveries.labels(event or "unknown", "rejected").inc()
        return _error(401, "missing or wrong X-Hub-Signature-256")
    delivery = request.headers.get("X-GitHub-Delivery", "")
    if not event or not delivery:
        metrics.deliveries.labels(event or "unknown", "rejected").inc()
        return _error(400, "X-GitHub-Event and X-GitHub-Delivery are required")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        metrics.deliveries.labels(event, "rejected").inc()
        return _error(400, f"malformed JSON: {error}")
    if not isinstance(payload, dict):
        metrics.deliveries.labels(event, "rejected").inc()
        return _error(400, "malformed payload: not a JSON object")
    if event == "ping":
        metrics.deliveries.labels(event, "ignored").inc()
        return web.json_response({"pong": True})
    if event not in HANDLED_EVENTS:
        metrics.deliveries.labels(event, "ignored").inc()
        return web.Response(status=204)
    try:
        message_id = await queue.accept(
            delivery, event, body, settings.delivery_ttl_s, request.headers["X-Hub-Signature-256"]
        )
    except (RedisError, OSError) as error:
        # GitHub keeps the delivery and it can be redelivered; nothing accepted earlier is affected
        log.error("redis unavailable, delivery %s refused: %s", delivery, error)
        metrics.deliveries.labels(event, "error").inc()
        return _error(503, "queue unavailable, redeliver later")
    if message_id is None:
        metrics.deliveries.labels(event, "duplicate").inc()
        return web.json_response({"status": "duplicate", "delivery": delivery}, status=200)
    metrics.deliveries.labels(event, "accepted").inc()
    return web.json_response({"status": "queued", "delivery": delivery, "id": message_id}, status=202)


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[REDIS].ping()
    except (RedisError, OSError) as error:
        return web.json_response({"status": "unhealthy", "redis": str(error)}, status=503)
    return web.json_response({"status": "ok", "redis": "ok"})


async def metrics_view(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    try:
        metrics.queue_depth.set(await request.app[QUEUE].depth())
        for code, counts in (await Feedback(request.app[REDIS], request.app[QUEUE].keys).all()).items():
            for kind in ("posted", "ignored"):
                metrics.rule_feedback.labels(code, kind).set(counts.get(kind, 0))
    except (RedisError, OSError):
        pass  # the last known values stay; /healthz reports Redis
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def make_app(
    settings: Settings, redis: aioredis.Redis | None = None, metrics: Metrics | None = None, *, webhook: bool = True
) -> web.Application:
    """The web app; it owns a Redis client it creates, and closes it on shutdown. `webhook=False` serves only
    /healthz and /metrics (a worker-only process)."""
    # one byte over the limit makes aiohttp raise 413 while reading, before the body is buffered whole
    app = web.Application(client_max_size=settings.max_body_bytes)
    owns_redis = redis is None
    redis = redis or connect(settings.redis_url)
    app[SETTINGS] = settings
    app[REDIS] = redis
    app[QUEUE] = EventQueue(redis, Keys(settings.key_prefix), visibility_timeout_s=settings.visibility_timeout_s)
    app[METRICS] = metrics or Metrics()
    if webhook:
        app.router.add_post("/webhook", receive_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)

    async def close_redis(app: web.Application) -> None:
        if owns_redis:
            await redis.aclose()

    app.on_cleanup.append(close_redis)
    return app
