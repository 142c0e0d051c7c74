"""The event queue and worker against real Redis: ack after handling, claims, dead letters, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import shutil
import socket
import subprocess
import time
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bot.service import prune_stale_consumers
from bot.store import EVENTS_GROUP, EventQueue, Keys, connect
from bot.worker import EventWorker


@pytest.fixture
async def redis_client():
    client = aioredis.from_url("redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()


SECRET = "worker-test-secret"


def signed(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


async def accept(queue: EventQueue, delivery: str, event: str, body: bytes) -> str | None:
    """What the web app does with a verified delivery: queue it with its signature."""
    return await queue.accept(delivery, event, body, 60, signed(body))


@pytest.fixture
async def queue(redis_client):
    keys = Keys(f"drbot-test-{uuid.uuid4().hex[:8]}:")
    q = EventQueue(redis_client, keys, visibility_timeout_s=0.05, max_attempts=3, secret=SECRET)
    yield q
    async for key in redis_client.scan_iter(match=f"{keys.prefix}*"):
        await redis_client.delete(key)


async def test_messages_are_acked_only_after_the_handler_returns(queue, redis_client):
    for n in range(3):
        assert await accept(queue, f"d{n}", "pull_request", b'{"n": %d}' % n)
    seen = []

    async def handler(message):
        pending = await redis_client.xpending(queue.keys.events, EVENTS_GROUP)
        seen.append((message.payload()["n"], pending["pending"]))

    assert await EventWorker(queue, handler).run_burst() == 3
    # while each handler ran its message was pending (not acked); afterwards nothing is left
    assert seen == [(0, 1), (1, 1), (2, 1)]
    assert await redis_client.xlen(queue.keys.events) == 0
    assert (await redis_client.xpending(queue.keys.events, EVENTS_GROUP))["pending"] == 0


async def test_a_failing_message_is_retried_then_buried_with_its_error(queue, redis_client):
    await accept(queue, "d-bad", "pull_request", b'{"bad": true}')
    calls = []

    async def handler(message):
        calls.append(message.attempts)
        raise RuntimeError("GitHub exploded")

    worker = EventWorker(queue, handler)
    for _ in range(5):
        await worker.run_burst()
        await asyncio.sleep(0.06)  # past the visibility timeout, so the pending message is claimed again
    assert calls == [1, 2, 3]
    dead = await redis_client.xrange(queue.keys.dead)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"delivery"] == b"d-bad" and b"GitHub exploded" in fields[b"error"] and fields[b"attempts"] == b"3"
    assert await redis_client.xlen(queue.keys.events) == 0


async def test_a_message_of_a_dead_consumer_is_claimed_by_another(queue, redis_client):
    await queue.ensure_group()
    await accept(queue, "d-orphan", "pull_request", b"{}")
    taken = await queue.read("consumer-that-dies")
    assert [m.delivery for m in taken] == ["d-orphan"]
    handled = []

    async def handler(message):
        handled.append((message.delivery, message.attempts))

    await asyncio.sleep(0.06)
    assert await EventWorker(queue, handler, name="survivor").run_burst() == 1
    assert handled == [("d-orphan", 2)]
    assert (await redis_client.xpending(queue.keys.events, EVENTS_GROUP))["pending"] == 0


async def test_concurrent_consumers_share_the_stream_and_stop_cleanly(queue, redis_client):
    for n in range(20):
        await accept(queue, f"d{n}", "issue_comment", b'{"n": %d}' % n)
    handled = []
    by = set()  # each consumer runs in a task of its own
    stop = asyncio.Event()

    async def handler(message):
        await asyncio.sleep(0.01)
        handled.append(message.payload()["n"])
        by.add(id(asyncio.current_task()))
        if len(handled) == 20:
            stop.set()

    worker = EventWorker(queue, handler, consumers=4)
    await asyncio.wait_for(worker.run(stop), timeout=10)
    assert sorted(handled) == list(range(20))
    assert len(by) >= 2  # the work was spread, not done by one consumer


async def test_an_idle_worker_names_its_consumers_in_the_group(queue, redis_client):
    # Redis names a consumer only when a read hands it an entry: without this, an idle worker is invisible in the group
    stop = asyncio.Event()
    worker = EventWorker(queue, lambda message: None, consumers=3)
    running = asyncio.create_task(worker.run(stop))
    try:
        consumers = []
        for _ in range(100):
            await asyncio.sleep(0.02)
            with contextlib.suppress(ResponseError):  # no group yet
                consumers = await redis_client.xinfo_consumers(queue.keys.events, EVENTS_GROUP)
            if len(consumers) == 3:
                break
        assert sorted(c["name"].decode() for c in consumers) == [f"{worker.name}-{i}" for i in range(3)]
        assert all(c["pending"] == 0 for c in consumers)
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=5)


async def test_a_restarted_worker_s_old_consumers_are_pruned_but_not_one_holding_an_event(queue, redis_client):
    # a long visibility timeout: the dead consumer's event stays its own until someone claims it explicitly
    queue = EventQueue(redis_client, queue.keys, visibility_timeout_s=30, max_attempts=3, secret=SECRET)

    async def ignore(message) -> None:
        pass

    def names(consumers) -> set[str]:
        return {c["name"].decode() for c in consumers}

    # a process that stopped leaves its consumer names in the group; a restart names new ones
    gone = EventWorker(queue, ignore, consumers=2, name="gone")
    for i in range(2):
        await gone.register(f"gone-{i}")
    # a consumer that died holding an event: pruning it would drop the event from the group's pending list
    await accept(queue, "d-1", "ping", b"{}")
    (held,) = await queue.read("dead-holder", count=1)
    await asyncio.sleep(0.3)
    stop = asyncio.Event()
    running = asyncio.create_task(EventWorker(queue, ignore, consumers=1, name="live").run(stop))
    try:
        await asyncio.sleep(0.05)
        removed = await prune_stale_consumers(redis_client, queue.keys, idle_s=0.25)
        assert sorted(removed) == [f"{queue.keys.events}/gone-0", f"{queue.keys.events}/gone-1"]
        consumers = await redis_client.xinfo_consumers(queue.keys.events, EVENTS_GROUP)
        assert names(consumers) == {"dead-holder", "live-0"}  # the live one polls every second
        stop.set()
        await asyncio.wait_for(running, timeout=5)
        # once another consumer has taken the event over, the dead one holds nothing and goes too
        await redis_client.xclaim(queue.keys.events, EVENTS_GROUP, "taker", 0, [held.id])
        await asyncio.sleep(0.3)
        removed = await prune_stale_consumers(redis_client, queue.keys, idle_s=0.25)
        assert f"{queue.keys.events}/dead-holder" in removed and f"{queue.keys.events}/taker" not in removed
        pending = await redis_client.xpending(queue.keys.events, EVENTS_GROUP)
        assert pending["pending"] == 1 and pending["consumers"] == [{"name": b"taker", "pending": 1}]
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=5)


async def test_pruning_a_stream_no_one_consumed_yet_is_a_no_op(queue, redis_client):
    assert await prune_stale_consumers(redis_client, queue.keys, idle_s=0.0) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server binary not installed")
async def test_an_accepted_delivery_survives_a_redis_restart_with_aof(tmp_path):
    port = _free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    command += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]

    def start():
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return proc
            except OSError:
                time.sleep(0.05)
        proc.kill()
        raise RuntimeError("redis-server did not start")

    proc = start()
    client = connect(f"redis://127.0.0.1:{port}/0")
    try:
        keys = Keys("drbot:")
        queue = EventQueue(client, keys, visibility_timeout_s=0.05, secret=SECRET)
        await queue.ensure_group()
        assert await accept(queue, "d-durable", "pull_request", b'{"x": 1}')
        proc.kill()  # no clean shutdown: the append-only file is all that is left
        proc.wait()
        proc = start()
        handled = []

        async def handler(message):
            handled.append(message.delivery)

        assert await EventWorker(queue, handler).run_burst() == 1
        assert handled == ["d-durable"]
        assert await accept(queue, "d-durable", "pull_request", b"{}") is None  # still deduplicated
    finally:
        await client.aclose()
        proc.kill()
        proc.wait()


async def test_events_of_one_pull_request_take_turns_and_a_dead_holder_frees_its_lock(queue, redis_client):
    from bot.store import PullLock

    key = queue.keys.pr_lock("o/r", 1)
    log = []

    async def hold(name: str, seconds: float) -> None:
        async with PullLock(redis_client, key, poll_s=0.01):
            log.append(f"{name} in")
            await asyncio.sleep(seconds)
            log.append(f"{name} out")

    await asyncio.gather(hold("a", 0.1), hold("b", 0.01), hold("c", 0.01))
    assert [entry[1:] for entry in log] == [" in", " out"] * 3  # never two holders at once

    # a holder that died keeps the lock only until its lease runs out (a live one renews it)
    dead = PullLock(redis_client, key, lease_ms=300)
    await dead.__aenter__()
    dead._renewal.cancel()
    start = time.monotonic()
    async with PullLock(redis_client, key, poll_s=0.01) as second:
        assert 0.2 < time.monotonic() - start < 2
        await dead.__aexit__(None, None, None)  # the late release of the dead holder removes nothing of the next
        assert await redis_client.get(key) == second.token.encode()
    assert await redis_client.get(key) is None

    # a live holder renews its lease for as long as it works
    async with PullLock(redis_client, key, lease_ms=300) as live:
        await asyncio.sleep(0.6)
        assert await redis_client.get(key) == live.token.encode()
