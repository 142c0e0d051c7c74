"""Redis keys, their lifetimes, and what the bot writes behind them: the durable event queue (a stream with a consumer
group, claims and a dead-letter stream), the contract-job queue, the slash-command guard and the per-user rate counter."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from common.streams import Entry, Poison, StreamConsumer, as_text, connect  # noqa: F401 - connect is bot.store's API too


log = logging.getLogger("drbot.store")

EVENTS_GROUP = "bot"
#: how long a handled command's guard and a queued job's record live (DESIGN §5: as long as a delivery id is
#: remembered, so a redelivered comment is still a replay and a late result still finds its job)
RECORD_TTL_S = 7 * 24 * 3600
COMMAND_TTL_S = RECORD_TTL_S
JOB_TTL_S = RECORD_TTL_S
#: the window the per-user command counter covers
RATE_WINDOW_S = 600


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

    def pr_lock(self, repo: str, number: int) -> str:
        """Held while an event of the pull request is handled, by whichever worker process handles it."""
        return f"{self.prefix}prlock:{repo}:{number}"

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

    def labels(self, repo: str) -> str:
        """The labels drbot made sure exist in a repository (created once per repository, not per pull request)."""
        return f"{self.prefix}labels:{repo}"

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
        if accepted_as is None or as_text(accepted_as) != entry.id:
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


# Queue a job once: its record (bot-only key, with the stream entry it was queued as), the entry, and the PR's
# newest requested head, in one atomic step.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local id = redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[1], 'payload', ARGV[2])
local record = cjson.decode(ARGV[3])
record['entry'] = id
redis.call('SET', KEYS[1], cjson.encode(record), 'EX', ARGV[4])
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[4])
return id
"""


class JobQueue:
    """`drbot:jobs`, the bot's side: a v1 job (DESIGN §6) is queued once per job id. Its record `job:{id}` (what
    `bot.results` accepts a result against) names the stream entry, and `jobhead:{repo}#{pr}` the newest head asked
    for (runners cancel jobs of older heads)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.keys = keys
        self._enqueue = redis.register_script(_ENQUEUE)

    async def enqueue(self, job: dict, installation: int | None) -> str | None:
        """Queue `job`; the stream entry id, or None when a job of that id was queued before."""
        record = {"job_id": job["job_id"], "repo": job["repo"], "pr": job["pr"], "head_sha": job["head_sha"],
                  "installation": installation, "requested_by": job["requested_by"]}  # fmt: skip
        entry = await self._enqueue(
            keys=[self.keys.job(job["job_id"]), self.keys.jobs, self.keys.job_head(job["repo"], job["pr"])],
            args=[job["job_id"], json.dumps(job, sort_keys=True), json.dumps(record), JOB_TTL_S, job["head_sha"]],
        )
        return None if entry is None else (entry.decode() if isinstance(entry, bytes) else str(entry))


#: what `CommandGuard.claim` answers
FIRST, RETRY, REPLAY = "first", "retry", "replay"


class CommandGuard:
    """`cmd:{repo}:{comment}`: each slash-command comment runs once, whatever the delivery id. The key names the
    delivery that started the command (`running {delivery}`) and becomes `done` once the reply is posted."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys

    async def claim(self, repo: str, comment_id: int, delivery: str) -> str:
        """FIRST for a new comment; RETRY when this delivery started it and did not finish (the queue handed it out
        again after a failure or a Redis restart); REPLAY otherwise (another delivery, or already done)."""
        key, owner = self.keys.command(repo, comment_id), f"running {delivery}"
        if await self.redis.set(key, owner, nx=True, ex=COMMAND_TTL_S):
            return FIRST
        held = await self.redis.get(key)
        if held is None or (held.decode() if isinstance(held, bytes) else held) != owner or not delivery:
            return REPLAY
        return RETRY

    async def finish(self, repo: str, comment_id: int) -> None:
        await self.redis.set(self.keys.command(repo, comment_id), "done", ex=COMMAND_TTL_S)


class RateCounter:
    """`rate:{repo}:{login}`: the commands one user sent on one repository in the current window."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, window_s: int = RATE_WINDOW_S) -> None:
        self.redis, self.keys, self.window_s = redis, keys, window_s

    async def hit(self, repo: str, login: str) -> int:
        """Count one command; returns how many this window holds, this one included."""
        key = self.keys.rate(repo, login)
        count = await self.redis.incr(key)
        if count == 1:
            await self.redis.expire(key, self.window_s)
        return count


# Release or extend the lock only while it is still this holder's (its lease may have run out and passed on).
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_EXTEND = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"


class PullLock:
    """`prlock:{repo}:{n}`: the events of one pull request are handled one at a time, across every worker process
    and consumer. Two reviews of one head at once would each find no check run, summary or review yet and each post
    one; handled in turn, the second finds what the first posted and edits it.

    The lock is a lease, renewed while its holder works: a holder that dies frees it after `lease_ms`.
    """

    def __init__(self, redis: aioredis.Redis, key: str, *, lease_ms: int = 60_000, poll_s: float = 0.1) -> None:
        self.redis, self.key, self.lease_ms, self.poll_s = redis, key, lease_ms, poll_s
        self.token = uuid.uuid4().hex
        self._renewal: asyncio.Task | None = None

    async def __aenter__(self) -> PullLock:
        while not await self.redis.set(self.key, self.token, nx=True, px=self.lease_ms):
            await asyncio.sleep(self.poll_s)
        self._renewal = asyncio.create_task(self._renew())
        return self

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await self.redis.eval(_EXTEND, 1, self.key, self.token, self.lease_ms)
            except (RedisError, OSError) as error:
                log.warning("renewing %s failed: %s", self.key, type(error).__name__)

    async def __aexit__(self, *exc) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
        try:
            await self.redis.eval(_RELEASE, 1, self.key, self.token)
        except (RedisError, OSError) as error:  # the lease runs out by itself
            log.warning("releasing %s failed: %s", self.key, type(error).__name__)
