"""Webhook intake against the real local Redis: verify, deduplicate, enqueue, and fail closed."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from bot.app import make_app, verify_signature
from bot.settings import Settings, SettingsError
from bot.store import EventQueue, Keys


SECRET = "It's a Secret to Everybody"
PR_BODY = json.dumps({"action": "opened", "number": 1, "pull_request": {"number": 1}}).encode()


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers(body: bytes, event: str = "pull_request", delivery: str | None = None, **extra) -> dict:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body),
        "Content-Type": "application/json",
        **extra,
    }


@pytest.fixture
async def redis_client():
    client = aioredis.from_url("redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()


@pytest.fixture
async def app_client(redis_client):
    prefix = f"drbot-test-{uuid.uuid4().hex[:8]}:"
    settings = Settings(webhook_secret=SECRET, key_prefix=prefix, max_body_bytes=1024 * 1024)
    client = TestClient(TestServer(make_app(settings, redis=redis_client)))
    await client.start_server()
    client.keys = Keys(prefix)
    yield client
    await client.close()
    async for key in redis_client.scan_iter(match=f"{prefix}*"):
        await redis_client.delete(key)


def test_signature_check_is_constant_time_hmac_and_fails_closed():
    body = b'{"a": 1}'
    assert verify_signature(SECRET, body, sign(body))
    assert not verify_signature(SECRET, body, sign(body, "wrong"))
    assert not verify_signature(SECRET, body, None)
    assert not verify_signature(SECRET, body, "sha1=" + hashlib.sha1(body).hexdigest())
    assert not verify_signature(SECRET, body + b" ", sign(body))


def test_the_server_refuses_to_start_without_a_secret():
    with pytest.raises(SettingsError, match="GITHUB_WEBHOOK_SECRET"):
        Settings.from_env({})
    settings = Settings.from_env({"GITHUB_WEBHOOK_SECRET": "s", "DRBOT_PORT": "9000", "GITHUB_API_URL": "http://x/"})
    assert (settings.port, settings.api_url) == (9000, "http://x")
    with pytest.raises(SettingsError, match="DRBOT_PORT"):
        Settings.from_env({"GITHUB_WEBHOOK_SECRET": "s", "DRBOT_PORT": "eighty"})


async def test_a_signed_delivery_is_queued_once(app_client, redis_client):
    delivery = str(uuid.uuid4())
    first = await app_client.post("/webhook", data=PR_BODY, headers=headers(PR_BODY, delivery=delivery))
    assert first.status == 202
    assert (await first.json())["status"] == "queued"
    replay = await app_client.post("/webhook", data=PR_BODY, headers=headers(PR_BODY, delivery=delivery))
    assert replay.status == 200 and (await replay.json())["status"] == "duplicate"
    entries = await redis_client.xrange(app_client.keys.events)
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"event"] == b"pull_request" and fields[b"delivery"] == delivery.encode()
    assert fields[b"body"] == PR_BODY
    ttl = await redis_client.ttl(app_client.keys.delivery(delivery))
    assert 7 * 24 * 3600 - 5 < ttl <= 7 * 24 * 3600


@pytest.mark.parametrize(
    "mutate, status",
    [
        (lambda h: h.pop("X-Hub-Signature-256"), 401),
        (lambda h: h.update({"X-Hub-Signature-256": sign(PR_BODY, "forged")}), 401),
        (lambda h: h.update({"X-Hub-Signature-256": "sha1=" + hashlib.sha1(PR_BODY).hexdigest()}), 401),
        (lambda h: h.pop("X-GitHub-Delivery"), 400),
    ],
    ids=["missing-signature", "forged", "sha1-only", "no-delivery-id"],
)
async def test_bad_deliveries_are_rejected_and_not_queued(app_client, redis_client, mutate, status):
    h = headers(PR_BODY)
    mutate(h)
    response = await app_client.post("/webhook", data=PR_BODY, headers=h)
    assert response.status == status
    assert await redis_client.xlen(app_client.keys.events) == 0


async def test_malformed_json_is_400(app_client, redis_client):
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe", b"\xff\xfe{\x00}\x00", b'{"a": NaN}'):
        response = await app_client.post("/webhook", data=body, headers=headers(body))
        assert response.status == 400, body
    assert await redis_client.xlen(app_client.keys.events) == 0


async def test_oversized_body_is_413(app_client, redis_client):
    body = b'{"a": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = await app_client.post("/webhook", data=body, headers=headers(body))
    assert response.status == 413
    assert await redis_client.xlen(app_client.keys.events) == 0


async def test_unhandled_events_are_204_and_ping_pongs(app_client, redis_client):
    body = b'{"zen": "Keep it logically awesome."}'
    assert (await app_client.post("/webhook", data=body, headers=headers(body, event="star"))).status == 204
    assert (await app_client.post("/webhook", data=body, headers=headers(body, event="ping"))).status == 200
    assert await redis_client.xlen(app_client.keys.events) == 0


async def test_redis_down_is_503_and_what_was_accepted_stays(redis_client):
    prefix = f"drbot-test-{uuid.uuid4().hex[:8]}:"
    keys = Keys(prefix)
    settings = Settings(webhook_secret=SECRET, key_prefix=prefix)
    up = TestClient(TestServer(make_app(settings, redis=redis_client)))
    await up.start_server()
    assert (await up.post("/webhook", data=PR_BODY, headers=headers(PR_BODY))).status == 202
    await up.close()
    # the same app shape, pointed at a port where no Redis listens
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    down = TestClient(TestServer(make_app(settings, redis=dead)))
    await down.start_server()
    try:
        assert (await down.post("/webhook", data=PR_BODY, headers=headers(PR_BODY))).status == 503
        health = await down.get("/healthz")
        assert health.status == 503 and await health.json() == {"status": "unhealthy", "redis": "unavailable"}
    finally:
        await down.close()
        await dead.aclose()
    assert await redis_client.xlen(keys.events) == 1
    async for key in redis_client.scan_iter(match=f"{prefix}*"):
        await redis_client.delete(key)


async def test_healthz_and_metrics(app_client, redis_client):
    assert (await (await app_client.get("/healthz")).json()) == {"status": "ok", "redis": "ok"}
    await app_client.post("/webhook", data=PR_BODY, headers=headers(PR_BODY))
    await app_client.post("/webhook", data=PR_BODY, headers={**headers(PR_BODY), "X-Hub-Signature-256": "sha256=0"})
    queue = EventQueue(redis_client, app_client.keys)
    await queue.ensure_group()
    text = await (await app_client.get("/metrics")).text()
    assert 'drbot_webhook_deliveries_total{event="pull_request",outcome="accepted"} 1.0' in text
    # a request whose signature does not match is not known to be a pull_request: it counts under a fixed label
    assert 'drbot_webhook_deliveries_total{event="unverified",outcome="rejected"} 1.0' in text
    assert 'event="pull_request",outcome="rejected"' not in text
    assert "drbot_queue_depth 1.0" in text


async def test_every_real_example_delivery_is_queued_or_answered_204(app_client, redis_client):
    """GitHub's own example payloads (npm @octokit/webhooks-examples), signed and posted as GitHub would."""
    from fakegithub import examples

    queued = 0
    for event in ("pull_request", "issue_comment", "push", "check_run", "installation", "star"):
        for payload in examples(event):
            body = json.dumps(payload).encode()
            response = await app_client.post("/webhook", data=body, headers=headers(body, event=event))
            expected = 202 if event in ("pull_request", "issue_comment") else 204
            assert response.status == expected, (event, payload.get("action"))
            queued += expected == 202
    assert queued >= 29 + 9
    assert await redis_client.xlen(app_client.keys.events) == queued
