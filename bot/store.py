"""Redis keys and the durable event queue (a stream with a consumer group, claims and a dead-letter stream)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


EVENTS_GROUP = "bot"


def connect(url: str, **options) -> aioredis.Redis:
    """A client that reconnects and retries a command when Redis restarts under it (a stale pooled
    connection fails once; the retry opens a new one)."""
    options.setdefault("socket_connect_timeout", 2.0)
    return aioredis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **options,
    )


@dataclass(frozen=True)
class Keys:
    """Every key drbot writes, under one prefix (DESIGN §5)."""

    prefix: str = "drbot:"

    def delivery(self, delivery_id: str) -> str:
        return f"{self.prefix}delivery:{delivery_id}"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def dead(self) -> str:
        return f"{self.prefix}dead"

    @property
    def attempts(self) -> str:
        return f"{self.prefix}attempts"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def results(self) -> str:
        return f"{self.prefix}results"

    def pr(self, repo: str, number: int) -> str:
        return f"{self.prefix}pr:{repo}:{number}"

    def known(self, repo: str) -> str:
        return f"{self.prefix}known:{repo}"

    def fixes(self, repo: str, fingerprint: str) -> str:
        return f"{self.prefix}fixes:{repo}:{fingerprint}"

    def feedback(self, code: str) -> str:
        return f"{self.prefix}feedback:{code}"

    def command(self, repo: str, comment_id: int) -> str:
        """A slash command's comment, once handled (replays with a new delivery id run nothing)."""
        return f"{self.prefix}cmd:{repo}:{comment_id}"

    def rate(self, repo: str, login: str) -> str:
        return f"{self.prefix}rate:{repo}:{login}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def job_head(self, repo: str, pr: int) -> str:
        """The newest head contracts were requested for on a PR; runners cancel jobs of older heads. The runner
        side builds the same name (runners.worker.RunnerKeys.latest): the two packages never import each other."""
        return f"{self.prefix}jobhead:{repo}#{pr}"

    def trees(self, repo: str, tree_sha: str) -> str:
        """Open PRs whose head has this tree (identical-tree duplicates)."""
        return f"{self.prefix}trees:{repo}:{tree_sha}"


# Accept a delivery once: mark it seen and append it to the stream in one atomic step, so a crash between
# the two can neither lose an accepted delivery nor let a redelivery slip in twice.
_ACCEPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    return redis.call('XADD', KEYS[2], '*', 'delivery', ARGV[2], 'event', ARGV[3], 'body', ARGV[4], 'received', ARGV[5])
end
return false
"""


@dataclass(frozen=True)
class Message:
    """One event taken from the stream: its id, the delivery fields, and how often it was handed out."""

    id: str
    delivery: str
    event: str
    body: bytes
    attempts: int

    def payload(self) -> dict:
        return json.loads(self.body)


class EventQueue:
    """`drbot:events` with consumer group `bot`: XADD on intake, XREADGROUP + XAUTOCLAIM in workers, XACK
    only after the handler finished, `drbot:dead` after `max_attempts` failures."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, *, visibility_timeout_s: float = 300.0, max_attempts=5):
        self.redis = redis
        self.keys = keys
        self.visibility_ms = max(1, int(visibility_timeout_s * 1000))
        self.max_attempts = max_attempts
        self._accept = redis.register_script(_ACCEPT)

    async def accept(self, delivery: str, event: str, body: bytes, ttl_s: int) -> str | None:
        """Enqueue a verified delivery; None when this delivery id was accepted before (a replay)."""
        result = await self._accept(
            keys=[self.keys.delivery(delivery), self.keys.events],
            args=[ttl_s, delivery, event, body, f"{time.time():.3f}"],
        )
        return None if result is None else (result.decode() if isinstance(result, bytes) else str(result))

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.events, EVENTS_GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def depth(self) -> int:
        """Messages not yet acknowledged: waiting in the stream plus pending in the group."""
        try:
            groups = await self.redis.xinfo_groups(self.keys.events)
        except ResponseError:
            return 0
        for group in groups:
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == EVENTS_GROUP:
                lag = group.get("lag") or 0
                return int(group.get("pending") or 0) + int(lag)
        return await self.redis.xlen(self.keys.events)

    async def claim(self, consumer: str, count: int = 10) -> list[Message]:
        """Take over messages whose consumer has held them past the visibility timeout (it died)."""
        _, claimed, _ = await self.redis.xautoclaim(
            self.keys.events, EVENTS_GROUP, consumer, min_idle_time=self.visibility_ms, start_id="0-0", count=count
        )
        return await self._messages(claimed)

    async def read(self, consumer: str, count: int = 1, block_ms: int | None = None) -> list[Message]:
        """New messages for this consumer (blocking up to `block_ms` when given)."""
        reply = await self.redis.xreadgroup(
            EVENTS_GROUP, consumer, {self.keys.events: ">"}, count=count, block=block_ms
        )
        entries = [entry for _, batch in reply or [] for entry in batch]
        return await self._messages(entries)

    async def _messages(self, entries) -> list[Message]:
        out = []
        for message_id, fields in entries:
            if fields is None:  # trimmed away while pending
                continue
            mid = message_id.decode() if isinstance(message_id, bytes) else message_id
            attempts = await self.redis.hincrby(self.keys.attempts, mid, 1)
            get = _field_getter(fields)
            out.append(Message(mid, get("delivery").decode(), get("event").decode(), get("body"), int(attempts)))
        return out

    async def ack(self, message: Message) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.events, EVENTS_GROUP, message.id)
            pipe.xdel(self.keys.events, message.id)
            pipe.hdel(self.keys.attempts, message.id)
            await pipe.execute()

    async def bury(self, message: Message, error: str) -> None:
        """Move a message that failed `max_attempts` times to `drbot:dead`, with its last error."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.keys.dead,
                {
                    "delivery": message.delivery,
                    "event": message.event,
                    "body": message.body,
                    "error": error[-4000:],
                    "attempts": message.attempts,
                    "source_id": message.id,
                },
            )
            pipe.xack(self.keys.events, EVENTS_GROUP, message.id)
            pipe.xdel(self.keys.events, message.id)
            pipe.hdel(self.keys.attempts, message.id)
            await pipe.execute()


def _field_getter(fields: Mapping):
    def get(name: str) -> bytes:
        value = fields.get(name.encode(), fields.get(name, b""))
        return value if isinstance(value, bytes) else str(value).encode()

    return get
