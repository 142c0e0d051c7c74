"""GitHub App auth and the client's manners (retries, waits, pacing), against the fake GitHub."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import jwt
import pytest
from gidgethub import BadRequest

from bot.github import AppAuth, GitHub, WritePacer, app_jwt, retry_delay


def test_the_app_jwt_is_rs256_backdated_and_short_lived(fake_github):
    now = 1_800_000_000
    token = app_jwt(fake_github.app_id, fake_github.private_key_pem, now=now)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == fake_github.app_id
    assert claims["iat"] == now - 60 and claims["exp"] - now <= 600


@pytest.mark.parametrize(
    "status, headers, body, attempt, expected",
    [
        (502, {}, b"", 0, 1.0),
        (503, {}, b"", 3, 8.0),
        (500, {"retry-after": "7"}, b"", 0, 7.0),
        (403, {"retry-after": "30"}, b'{"message": "You have exceeded a secondary rate limit"}', 0, 30.0),
        (403, {}, b'{"message": "You have exceeded a secondary rate limit"}', 0, 60.0),
        (429, {}, b"", 0, 60.0),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1000"}, b"", 0, 11.0),
        (403, {"x-ratelimit-remaining": "12"}, b'{"message": "Resource not accessible by integration"}', 0, None),
        (404, {}, b"", 0, None),
        (422, {}, b"", 0, None),
        (200, {}, b"", 0, None),
    ],
)
def test_retry_delay(status, headers, body, attempt, expected):
    assert retry_delay(status, headers, body, attempt, now=990.0) == expected


async def test_installation_tokens_are_cached_per_installation_until_five_minutes_before_expiry(github):
    github.add_repo("o/one", installation_id=1)
    github.add_repo("p/two", installation_id=2)
    clock = [time.time()]
    async with aiohttp.ClientSession() as session:
        auth = AppAuth(github.app_id, github.private_key_pem, github.url, session, clock=lambda: clock[0])
        first, again = await auth.token(1), await auth.token(1)
        other = await auth.token(2)
        assert first == again and other != first
        assert len(github.requests("POST", r"/access_tokens$")) == 2
        clock[0] += 3600 - 299  # inside the last five minutes of the hour: refreshed
        assert await auth.token(1) != first
        assert len(github.requests("POST", r"/app/installations/1/access_tokens$")) == 2
        # each token works for its own installation's repositories only
        gh = GitHub(session, token=other, api_url=github.url, installation_id=2)
        assert (await gh.getitem("/repos/p/two"))["full_name"] == "p/two"
        with pytest.raises(BadRequest):
            await gh.getitem("/repos/o/one")


async def test_concurrent_requests_for_a_token_make_one_request(github):
    github.add_repo("o/r", installation_id=5)
    async with aiohttp.ClientSession() as session:
        auth = AppAuth(github.app_id, github.private_key_pem, github.url, session)
        tokens = await asyncio.gather(*(auth.token(5) for _ in range(10)))
    assert len(set(tokens)) == 1
    assert len(github.requests("POST", r"/access_tokens$")) == 1


async def test_a_primary_rate_limit_waits_for_the_reset(github):
    github.add_repo("o/r", installation_id=1)
    github.set_rate_limit(1, remaining=0, reset_in=2)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)

    async with aiohttp.ClientSession() as session:
        gh = GitHub(session, token=github.issue_token(1), api_url=github.url, installation_id=1, sleep=sleep)
        assert (await gh.getitem("/repos/o/r"))["full_name"] == "o/r"
    assert len(waits) == 1 and 1.0 <= waits[0] <= 4.0


async def test_writes_are_paced_per_installation_reads_are_not(github):
    github.add_repo("o/r", installation_id=1)
    github.add_pull("o/r", 1, head_files={"a.py": "x = 1\n"})
    pacer = WritePacer(0.3)
    async with aiohttp.ClientSession() as session:
        gh = GitHub(session, token=github.issue_token(1), api_url=github.url, installation_id=1, pacer=pacer)
        await asyncio.gather(*(gh.post("/repos/o/r/issues/1/comments", data={"body": f"c{i}"}) for i in range(3)))
        await asyncio.gather(*(gh.getitem("/repos/o/r/pulls/1") for _ in range(3)))
    posts = [c.time for c in github.requests("POST", r"/comments$")]
    reads = [c.time for c in github.requests("GET", r"/pulls/1$")]
    assert min(b - a for a, b in zip(posts, posts[1:], strict=False)) >= 0.29
    assert max(reads) - min(reads) < 0.25


async def test_writes_of_two_processes_to_one_installation_are_serial_through_redis(github):
    import uuid

    import redis.asyncio as aioredis

    from bot.github import RedisWritePacer

    github.add_repo("o/r", installation_id=1)
    github.add_pull("o/r", 1, head_files={"a.py": "x = 1\n"})
    redis = aioredis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"drbot-test-{uuid.uuid4().hex[:8]}:"
    try:
        async with aiohttp.ClientSession() as one, aiohttp.ClientSession() as two:
            # two replicas: separate sessions, separate pacers, one Redis
            clients = [
                GitHub(s, token=github.issue_token(1), api_url=github.url, installation_id=1,
                       pacer=RedisWritePacer(redis, prefix, 0.3))
                for s in (one, two)
            ]  # fmt: skip
            await asyncio.gather(
                *(c.post("/repos/o/r/issues/1/comments", data={"body": f"{i}"}) for i in range(2) for c in clients)
            )
    finally:
        await redis.delete(f"{prefix}pace:1")
        await redis.aclose()
    posts = sorted(c.time for c in github.requests("POST", r"/comments$"))
    assert len(posts) == 4
    assert min(b - a for a, b in zip(posts, posts[1:], strict=False)) >= 0.28


async def test_a_write_waiting_for_another_replicas_write_starts_when_that_write_ends():
    import uuid

    import redis.asyncio as aioredis

    from bot.github import RedisWritePacer

    redis = aioredis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"drbot-test-{uuid.uuid4().hex[:8]}:"
    events: list[tuple[str, float]] = []

    async def write(pacer: RedisWritePacer, name: str, seconds: float) -> None:
        async with pacer.slot(1):
            events.append((f"{name} start", time.monotonic()))
            await asyncio.sleep(seconds)
            events.append((f"{name} end", time.monotonic()))

    async def later(pacer: RedisWritePacer, name: str) -> None:
        await asyncio.sleep(0.02)
        await write(pacer, name, 0.01)

    try:
        for spacing in (0.0, 0.3):
            events.clear()
            # two replicas; the first holds the installation for a 100 ms write, the second asks 20 ms into it
            one, two = RedisWritePacer(redis, prefix, spacing), RedisWritePacer(redis, prefix, spacing)
            await asyncio.gather(write(one, "a", 0.1), later(two, "b"))
            times = dict(events)
            gap = times["b start"] - times["a end"]
            # the second write waits out the first and the spacing, and no more (the key outlives a write in flight
            # by RedisWritePacer.HOLD_MS, and sleeping on it stalled each waiting write by up to a second)
            assert spacing - 0.02 <= gap < spacing + 0.25, (spacing, gap)
            await redis.delete(f"{prefix}pace:1")
    finally:
        await redis.delete(f"{prefix}pace:1")
        await redis.aclose()
