"""Redis keys and the durable event queue (a stream with a consumer group, claims and a dead-letter stream)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from common.streams import Entry, Poison, StreamConsumer, connect  # noqa: F401 - connect is bot.store's API too


EVENTS_GROUP = "bot"


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

    def job_done(self, job_id: str) -> str:
        """Set once a job's result has been accepted (or is being published): later results of it are replays."""
        return f"{self.prefix}jobdone:{job_id}"

    def runner_result(self, runner: str, job_id: str) -> str:
        """Where runner `runner` writes its result of a job; its Redis ACL user may write under
        `runner:{runner}:` only, so a result read from here comes from that runner (runners.worker.RunnerKeys)."""
        return f"{self.prefix}runner:{runner}:result:{job_id}"

    def trees(self, repo: str, tree_sha: str) -> str:
        """Open PRs whose head has this tree (identical-tree duplicates)."""
        return f"{self.prefix}trees:{repo}:{tree_sha}"


# Accept a delivery once: mark it seen and append it to the stream in one atomic step, so a crash between
# the two can neither lose an accepted delivery nor let a redelivery slip in twice. The mark then names the
# stream entry, so a copy of the entry planted in the stream later is recognised as a replay.
_ACCEPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    local id = redis.call('XADD', KEYS[2], '*', 'delivery', ARGV[2], 'event', ARGV[3], 'body', ARGV[4],
                          'received', ARGV[5], 'signature', ARGV[6])
    redis.call('SET', KEYS[1], id, 'XX', 'KEEPTTL')
    return id
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
    signature: str = ""

    def payload(self) -> dict:
        try:
            payload = json.loads(self.body)
        except (ValueError, RecursionError) as error:
            raise Poison(f"malformed JSON body: {type(error).__name__}") from None
        if not isinstance(payload, dict):
            raise Poison("the body is not a JSON object")
        return payload


class EventQueue:
    """`drbot:events` with consumer group `bot`: XADD on intake; consumers (common.streams) claim, count attempts,
    acknowledge after the handler finished, and move exhausted or poison events to `drbot:dead`.

    Entries are authenticated again when they are taken: each carries GitHub's `X-Hub-Signature-256`, checked
    against the raw body with the webhook secret, and must be the entry its delivery id was accepted as. An
    entry written into Redis by anything but the intake (a forgery, or a copy of a real one) changes nothing.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        visibility_timeout_s: float = 300.0,
        max_attempts: int = 5,
        secret: str | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.secret = secret
        self.max_attempts = max_attempts
        self.consumer = StreamConsumer(
            redis, keys.events, EVENTS_GROUP, dead=keys.dead, visibility_timeout_s=visibility_timeout_s,
            max_attempts=max_attempts,
        )  # fmt: skip
        self._accept = redis.register_script(_ACCEPT)

    async def accept(self, delivery: str, event: str, body: bytes, ttl_s: int, signature: str = "") -> str | None:
        """Enqueue a verified delivery with its signature; None when this delivery id was accepted before."""
        result = await self._accept(
            keys=[self.keys.delivery(delivery), self.keys.events],
            args=[ttl_s, delivery, event, body, f"{time.time():.3f}", signature],
        )
        return None if result is None else (result.decode() if isinstance(result, bytes) else str(result))

    async def ensure_group(self) -> None:
        await self.consumer.ensure_group()

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
        return [message_of(e) for e in await self.consumer.claim(consumer, count)]

    async def read(self, consumer: str, count: int = 1, block_ms: int | None = None) -> list[Message]:
        """New messages for this consumer (blocking up to `block_ms` when given)."""
        return [message_of(e) for e in await self.consumer.read(consumer, count, block_ms)]

    async def authenticate(self, entry: Entry) -> Message | None:
        """The entry as a Message when the intake wrote it; None for a replayed copy; Poison for a forgery."""
        message = message_of(entry)
        if self.secret is None:
            raise Poison("no webhook secret to verify the entry with")
        expected = "sha256=" + hmac.new(self.secret.encode(), message.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(message.signature.encode(), expected.encode()):
            raise Poison(f"forged event: the signature of delivery {message.delivery[:64]!r} does not match its body")
        accepted_as = await self.redis.get(self.keys.delivery(message.delivery))
        if accepted_as is None or accepted_as.decode() != entry.id:
            return None  # not the entry this delivery was accepted as: a replay
        return message

    async def ack(self, message: Message) -> None:
        await self.consumer.ack(_entry_of(self, message))

    async def bury(self, message: Message, error: str) -> None:
        """Move a message to `drbot:dead`, with its last error."""
        await self.consumer.bury(_entry_of(self, message), error)


def message_of(entry: Entry) -> Message:
    return Message(
        entry.id,
        entry.get("delivery").decode("utf-8", "replace"),
        entry.get("event").decode("utf-8", "replace"),
        entry.get("body"),
        entry.attempts,
        entry.get("signature").decode("ascii", "replace"),
    )


def _entry_of(queue: EventQueue, message: Message) -> Entry:
    fields = {b"delivery": message.delivery.encode(), b"event": message.event.encode(), b"body": message.body}
    return Entry(queue.keys.events, message.id, fields, message.attempts, "")
