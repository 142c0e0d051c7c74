"""Attacks on the webhook intake, each against the real app (and `drbot serve`) on a TCP port with the real Redis:
label flooding, slow bodies and headers, hostile JSON, a costly /metrics, leaky /healthz, printed secrets."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bot.app import LABELLED_EVENTS, MAX_JSON_DEPTH, make_app
from bot.feedback import rule_codes
from bot.metrics import OTHER_EVENT, UNVERIFIED
from bot.settings import Settings, redact_url
from bot.store import EVENTS_GROUP, Keys


ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = secrets.token_hex(16)
PR_BODY = json.dumps({"action": "opened", "number": 1, "pull_request": {"number": 1}}).encode()


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(body: bytes, event: str = "pull_request", secret: str = SECRET) -> dict:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body, secret),
        "Content-Type": "application/json",
    }


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def drop_prefix(redis: aioredis.Redis, prefix: str) -> None:
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        await redis.delete(key)


@pytest.fixture
async def redis_client():
    client = aioredis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def prefix():
    return f"drbot-test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def serve_app(redis_client, prefix):
    """Start the real app on a loopback TCP port: `await serve_app(**settings)` -> its TestClient."""
    clients: list[TestClient] = []

    async def start(redis: aioredis.Redis | None = redis_client, **overrides) -> TestClient:
        settings = Settings(**{"webhook_secret": SECRET, "key_prefix": prefix, **overrides})
        client = TestClient(TestServer(make_app(settings, redis=redis), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    await drop_prefix(redis_client, prefix)


async def trickle(port: int, head: bytes, drip: bytes, every_s: float, limit_s: float) -> tuple[bytes, float | None]:
    """Send `head`, then one byte of `drip` every `every_s`; return what the server answered and when it closed the
    connection (None: still open after `limit_s`, the attack held it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    received = bytearray()

    async def read_until_closed() -> float:
        try:
            while chunk := await reader.read(65536):
                received.extend(chunk)
        except ConnectionError:
            pass
        return time.monotonic() - start

    closed = asyncio.create_task(read_until_closed())
    try:
        writer.write(head)
        for byte in drip:
            if closed.done() or time.monotonic() - start > limit_s:
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every_s)
    except ConnectionError:
        pass  # the server closed while we were still writing: what we are testing
    try:
        seconds = await asyncio.wait_for(closed, max(0.0, limit_s - (time.monotonic() - start)))
    except asyncio.TimeoutError:
        seconds = None
    writer.close()
    return bytes(received), seconds


def slow_body_head(length: int = 1000) -> bytes:
    return (
        "POST /webhook HTTP/1.1\r\nHost: drbot\r\nContent-Type: application/json\r\nX-GitHub-Event: pull_request\r\n"
        f"X-GitHub-Delivery: {uuid.uuid4()}\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def delivery_labels(text: str) -> set[str]:
    return {
        sample.labels["event"]
        for family in text_string_to_metric_families(text)
        if family.name == "drbot_webhook_deliveries"
        for sample in family.samples
    }


# -- unbounded label cardinality


async def test_random_event_names_leave_metrics_small_and_its_labels_a_fixed_set(serve_app):
    client = await serve_app()
    before = await (await client.get("/metrics")).text()
    for i in range(1500):
        headers = signed(PR_BODY, event=secrets.token_hex(12))
        if i % 2:
            headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64  # forged
        else:
            del headers["X-Hub-Signature-256"]  # unsigned
        response = await client.post("/webhook", data=PR_BODY, headers=headers)
        assert response.status == 401
    for _ in range(50):  # verified deliveries of events drbot has no label for share one
        response = await client.post("/webhook", data=PR_BODY, headers=signed(PR_BODY, event=secrets.token_hex(12)))
        assert response.status == 204
    after = await (await client.get("/metrics")).text()
    assert delivery_labels(after) <= LABELLED_EVENTS | {OTHER_EVENT, UNVERIFIED}
    assert f'drbot_webhook_deliveries_total{{event="{UNVERIFIED}",outcome="rejected"}} 1500.0' in after
    assert f'drbot_webhook_deliveries_total{{event="{OTHER_EVENT}",outcome="ignored"}} 50.0' in after
    # two new series (four lines with their _created twins), not 1,550
    assert len(after) - len(before) < 2000, (len(before), len(after))


# -- slow bodies and slow headers


async def test_a_slow_body_is_answered_408_and_cut_off(serve_app, redis_client):
    client = await serve_app(read_timeout_s=1.0)
    answer, closed_after = await trickle(client.port, slow_body_head(), b"x" * 1000, every_s=0.05, limit_s=5)
    # closed at the deadline, not after aiohttp's lingering time (reading the rest of the body) on top of it
    assert closed_after is not None and 0.9 < closed_after < 1.7, f"connection held for {closed_after} s"
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    text = await (await client.get("/metrics")).text()
    assert f'drbot_webhook_deliveries_total{{event="{UNVERIFIED}",outcome="timeout"}} 1.0' in text
    # the server still serves whole requests
    assert (await client.post("/webhook", data=PR_BODY, headers=signed(PR_BODY))).status == 202


async def test_headers_that_never_finish_are_cut_off(serve_app):
    client = await serve_app(header_timeout_s=1.0)
    head = b"POST /webhook HTTP/1.1\r\nHost: drbot\r\nX-Slow: "
    answer, closed_after = await trickle(client.port, head, b"a" * 1000, every_s=0.05, limit_s=5)
    assert closed_after is not None and 0.9 < closed_after < 1.7, f"connection held for {closed_after} s"
    assert answer == b""  # nothing to answer: no request was ever read


async def test_headers_of_a_second_request_on_a_kept_alive_connection_are_cut_off(serve_app):
    client = await serve_app(header_timeout_s=1.0)
    first = b"GET /healthz HTTP/1.1\r\nHost: drbot\r\n\r\n"
    answer, closed_after = await trickle(
        client.port, first + b"GET /healthz HTTP/1.1\r\nX-Slow: ", b"a" * 1000, 0.05, 5
    )
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1, answer[:200]
    assert closed_after is not None and closed_after < 1.7


# -- hostile JSON (signed: only the secret's holder gets this far, and still no 500)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a": ' + b'{"a": ' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1) + b"}",
        b'{"number": ' + b"9" * 100_000 + b"}",
        b'{"a": Infinity}',
        json.dumps({"a": "é"}).encode("utf-16"),
        b'"just a string"',
    ],
    ids=["100000-deep", "past-max-depth", "100000-digit-int", "infinity", "utf-16", "not-an-object"],
)
async def test_hostile_json_is_400_and_queues_nothing(serve_app, redis_client, prefix, body):
    client = await serve_app()
    response = await client.post("/webhook", data=body, headers=signed(body))
    assert response.status == 400, (response.status, await response.text())
    assert "error" in await response.json()
    assert await redis_client.xlen(Keys(prefix).events) == 0
    assert (await client.post("/webhook", data=PR_BODY, headers=signed(PR_BODY))).status == 202


# -- /metrics costs the same whatever Redis holds


async def redis_commands_of(client_name: str, monitor: aioredis.Redis, action) -> list[str]:
    """The commands Redis ran for the connections named `client_name` while `action()` ran, seen by MONITOR."""
    marker = f"end-of-{uuid.uuid4().hex}"
    seen: list[dict] = []
    async with monitor.monitor() as stream:
        await action()
        await monitor.echo(marker)
        while (command := await stream.next_command())["command"] != f"ECHO {marker}":
            seen.append(command)
    ours = {
        entry["addr"] for entry in await monitor.client_list() if entry.get("name") == client_name
    }  # every connection of that client, as MONITOR names them
    return [c["command"] for c in seen if f"{c['client_address']}:{c['client_port']}" in ours]


async def metrics_commands(redis_client, prefix: str, **overrides) -> tuple[list[str], list[int]]:
    """Start an app with its own named Redis client; return the commands one /metrics costs, and the statuses."""
    name = f"drbot-test-{uuid.uuid4().hex[:8]}"
    app_redis = aioredis.from_url(REDIS_URL, client_name=name)
    settings = Settings(webhook_secret=SECRET, key_prefix=prefix, **overrides)
    client = TestClient(TestServer(make_app(settings, redis=app_redis), host="127.0.0.1"))
    await client.start_server()
    statuses: list[int] = []
    try:
        await app_redis.ping()  # open the pooled connection first: its set-up commands are not /metrics's

        async def scrape():
            statuses.append((await client.get("/metrics")).status)

        commands = await redis_commands_of(name, redis_client, scrape)
    finally:
        await client.close()
        await app_redis.aclose()
    return commands, statuses


async def test_metrics_costs_the_same_on_an_empty_and_a_full_database(redis_client):
    empty, full = f"drbot-test-{uuid.uuid4().hex[:8]}:", f"drbot-test-{uuid.uuid4().hex[:8]}:"
    keys = Keys(full)
    try:
        # a busy deployment: 30,000 keys, feedback for every rule, an event stream with its consumer group
        async with redis_client.pipeline(transaction=False) as pipe:
            for code in rule_codes():
                pipe.hset(keys.feedback(code), mapping={"posted": 7, "ignored": 2})
            pipe.xadd(keys.events, {"event": "pull_request"})
            pipe.xgroup_create(keys.events, EVENTS_GROUP, id="0")
            for i in range(30_000 - len(rule_codes()) - 1):
                pipe.set(keys.delivery(f"d{i}"), 1)
            await pipe.execute()
        assert await redis_client.dbsize() >= 30_000

        on_empty, statuses_empty = await metrics_commands(redis_client, empty)
        on_full, statuses_full = await metrics_commands(redis_client, full)
    finally:
        await drop_prefix(redis_client, full)
    assert statuses_empty == statuses_full == [200]
    assert on_full, "the app's Redis commands were not seen"
    verbs = [command.split()[0].upper() for command in on_full]
    assert not {"SCAN", "KEYS"} & set(verbs), verbs
    assert len(on_full) == len(on_empty) <= len(rule_codes()) + 2, (on_empty, on_full)
    assert sorted(c.split()[0].upper() for c in on_empty) == sorted(verbs)


async def test_a_flood_of_metrics_requests_reads_redis_once_per_window(redis_client, prefix):
    name = f"drbot-test-{uuid.uuid4().hex[:8]}"
    app_redis = aioredis.from_url(REDIS_URL, client_name=name)
    settings = Settings(webhook_secret=SECRET, key_prefix=prefix, metrics_cache_s=60)
    client = TestClient(TestServer(make_app(settings, redis=app_redis), host="127.0.0.1"))
    await client.start_server()
    try:
        await app_redis.ping()
        one, _ = await metrics_commands(redis_client, prefix)  # what one refresh costs

        async def flood():
            for _ in range(2):  # 50 at once (one refresh, the others wait for it), then 50 more from the cache
                responses = await asyncio.gather(*(client.get("/metrics") for _ in range(50)))
                assert [r.status for r in responses] == [200] * 50

        commands = await redis_commands_of(name, redis_client, flood)
    finally:
        await client.close()
        await app_redis.aclose()
    assert len(commands) == len(one), f"100 scrapes in one window cost {len(commands)} commands, one costs {len(one)}"


# -- /healthz says nothing about where Redis is


async def test_healthz_with_redis_unreachable_names_no_host_port_or_password(serve_app):
    port, password = closed_port(), secrets.token_hex(8)
    client = await serve_app(redis=None, redis_url=f"redis://drbot:{password}@127.0.0.1:{port}/0")
    response = await client.get("/healthz")
    text = await response.text()
    assert response.status == 503 and json.loads(text) == {"status": "unhealthy", "redis": "unavailable"}
    for leak in ("127.0.0.1", str(port), password, "redis://", "Error"):
        assert leak not in text, leak
    assert (await client.get("/metrics")).status == 200  # still served, from the last known values


# -- secrets are never printed


def test_settings_repr_holds_no_secret(tmp_path):
    password, token = secrets.token_hex(8), secrets.token_hex(8)
    key = f"-----BEGIN RSA PRIVATE KEY-----\n{secrets.token_hex(32)}\n-----END RSA PRIVATE KEY-----\n"
    (tmp_path / "app.pem").write_text(key)
    env = {
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_APP_ID": "12345",
        "GITHUB_PRIVATE_KEY_PATH": str(tmp_path / "app.pem"),
        "GITHUB_API_URL": f"https://x-access-token:{token}@ghe.example.com/api/v3",
        "REDIS_URL": f"rediss://drbot:{password}@redis.internal:6380/2?password={password}",
    }
    settings = Settings.from_env(env)
    assert (settings.private_key, settings.webhook_secret) == (key, SECRET)  # read, only not shown
    for shown in (repr(settings), str(settings), f"{settings}", f"{settings!r}", repr([settings])):
        for secret in (SECRET, key, key.splitlines()[1], password, token):
            assert secret not in shown
        assert "rediss://drbot:***@redis.internal:6380/2?password=***" in shown  # still says which Redis
    assert settings.redact(f"AUTH drbot {password} failed; secret {SECRET}") == "AUTH drbot *** failed; secret ***"


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:p%40ss@host/0", "redis://user:***@host/0"),
        ("redis://user:p@ss@host/0", "redis://user:***@host/0"),
        ("redis://token@host/0", "redis://***@host/0"),
        ("unix://user:pw@/run/redis.sock?db=1", "unix://user:***@/run/redis.sock?db=1"),
        ("redis://host/0?db=1&password=pw&ssl=1", "redis://host/0?db=1&password=***&ssl=1"),
        ("redis://host/0?client_name=a@b", "redis://host/0?client_name=a@b"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


# -- `drbot serve` itself, as deployed


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`drbot serve --web-only` on a loopback port, with secrets in its environment and Redis credentials that the
    server refuses (so every Redis call fails and is logged); yields (port, log path, the secrets)."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    port = closed_port()
    password = secrets.token_hex(8)
    key = f"-----BEGIN RSA PRIVATE KEY-----\n{secrets.token_hex(32)}\n-----END RSA PRIVATE KEY-----\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DRBOT_", "REDIS_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        GITHUB_WEBHOOK_SECRET=SECRET,
        GITHUB_APP_ID="12345",
        GITHUB_PRIVATE_KEY=key,
        REDIS_URL=f"redis://drbot-nobody:{password}@127.0.0.1:6379/0",
        DRBOT_HOST="127.0.0.1",
        DRBOT_PORT=str(port),
        DRBOT_KEY_PREFIX=f"drbot-test-{uuid.uuid4().hex[:8]}:",
        DRBOT_READ_TIMEOUT="1",
        DRBOT_HEADER_TIMEOUT="1",
    )
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "drbot", "serve", "--web-only"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield port, log, (SECRET, key, key.splitlines()[1], password)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_serve_prints_no_secret_in_its_log_or_answers(served):
    import aiohttp

    port, log, hidden = served
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/webhook", data=PR_BODY, headers=signed(PR_BODY)) as response:
            assert response.status == 503  # Redis refused the credentials
            answers = [await response.text()]
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 503
            answers.append(await response.text())
    await asyncio.sleep(0.2)
    text = log.read_text()
    # the start-up line and both Redis errors are there, so the check below read them
    assert "redis_url='redis://drbot-nobody:***@127.0.0.1:6379/0'" in text, text
    assert "redis unavailable, delivery" in text and "healthz: redis unavailable" in text, text
    for secret in hidden:
        assert secret not in text
        assert not any(secret in answer for answer in answers)
    assert not any("6379" in answer or "127.0.0.1" in answer for answer in answers), answers


async def test_serve_cuts_off_slow_bodies_and_slow_headers(served):
    port, _, _ = served
    answer, closed_after = await trickle(port, slow_body_head(), b"x" * 1000, every_s=0.05, limit_s=5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert closed_after is not None and 0.9 < closed_after < 1.7, f"slow body held the connection {closed_after} s"
    answer, closed_after = await trickle(port, b"GET /healthz HTTP/1.1\r\nX-Slow: ", b"a" * 1000, 0.05, 5)
    assert answer == b""
    assert closed_after is not None and 0.9 < closed_after < 1.7, f"slow headers held the connection {closed_after} s"
