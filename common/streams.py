"""One consumer mechanism for every drbot stream (events, jobs, results): claim, attempts, ack, dead letters.

A consumer group hands each entry to one consumer. The entry stays pending until its handler finishes; a
consumer that dies leaves it pending, and another claims it (XAUTOCLAIM) once it has been idle past the
visibility timeout, while a live handler keeps its claim fresh with a heartbeat. Attempts are Redis's own
delivery counter, incremented when an entry is read or claimed, so a process that dies (a segfault, an OOM kill)
still counts: an entry claimed more than `max_attempts` times is exhausted without running its handler again.

Both the bot and the runners use this module (they never import each other); it needs only redis-py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import RedisError, ResponseError


log = logging.getLogger("drbot.streams")


@dataclass(frozen=True)
class Entry:
    """One stream entry handed to this consumer, with how often Redis has delivered it so far."""

    stream: str
    id: str
    fields: dict[bytes, bytes]
    attempts: int
    consumer: str

    def get(self, name: str, default: bytes = b"") -> bytes:
        value = self.fields.get(name.encode(), default)
        return value if isinstance(value, bytes) else str(value).encode()


class Poison(Exception):
    """The entry can never succeed (malformed, forged, over a size limit): dead-letter it now, with no retry."""


#: what a handler returns: `done` (acknowledge), `held` (leave pending: someone else acknowledges it)
Outcome = str
Handler = Callable[[Entry], Awaitable[Outcome | None]]


class StreamConsumer:
    """A consumer group on one stream.

    `dead` is the dead-letter stream (None: this consumer may not write one, e.g. a runner; then `exhausted`
    decides what happens to an entry past its attempts). `delete_on_ack` also removes handled entries, so the
    stream holds only work not yet done.
    """

    def __init__(
        self,
        redis,
        stream: str,
        group: str,
        *,
        dead: str | None,
        visibility_timeout_s: float = 300.0,
        max_attempts: int = 5,
        delete_on_ack: bool = True,
        exhausted: Handler | None = None,
    ) -> None:
        self.redis = redis
        self.stream, self.group, self.dead = stream, group, dead
        self.visibility_ms = max(1, int(visibility_timeout_s * 1000))
        self.max_attempts = max(1, max_attempts)
        self.delete_on_ack = delete_on_ack
        self.exhausted = exhausted

    # -- Redis operations ---------------------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def claim(self, consumer: str, count: int = 1) -> list[Entry]:
        """Take over entries idle past the visibility timeout (their consumer died or hung)."""
        _, claimed, _ = await self.redis.xautoclaim(
            self.stream, self.group, consumer, min_idle_time=self.visibility_ms, start_id="0-0", count=count
        )
        entries = []
        for raw_id, fields in claimed:
            if fields is None:  # deleted while pending
                continue
            entry_id = _text(raw_id)
            # XAUTOCLAIM counted this delivery; XPENDING tells the total
            pending = await self.redis.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
            attempts = int(pending[0]["times_delivered"]) if pending else self.max_attempts + 1
            entries.append(Entry(self.stream, entry_id, dict(fields), attempts, consumer))
        return entries

    async def read(self, consumer: str, count: int = 1, block_ms: int | None = None) -> list[Entry]:
        """New entries for this consumer (first delivery), blocking up to `block_ms` when given."""
        reply = await self.redis.xreadgroup(self.group, consumer, {self.stream: ">"}, count=count, block=block_ms)
        return [
            Entry(self.stream, _text(raw_id), dict(fields), 1, consumer)
            for _, batch in reply or []
            for raw_id, fields in batch
            if fields is not None
        ]

    async def next(self, consumer: str, block_ms: int | None = None) -> list[Entry]:
        return await self.claim(consumer) or await self.read(consumer, 1, block_ms)

    async def extend(self, entry: Entry) -> None:
        """Reset the entry's idle time (the claim stays this consumer's, the attempt count does not grow)."""
        await self.redis.xclaim(self.stream, self.group, entry.consumer, 0, [entry.id], justid=True)

    async def ack(self, entry: Entry) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, entry.id)
            if self.delete_on_ack:
                pipe.xdel(self.stream, entry.id)
            await pipe.execute()

    async def bury(self, entry: Entry, reason: str) -> None:
        """Move the entry to the dead-letter stream with the reason, and acknowledge it."""
        if self.dead is None:
            raise RuntimeError(f"{self.stream}: this consumer has no dead-letter stream")
        fields: dict[str, bytes | str | int] = {_text(k): v for k, v in entry.fields.items()}
        fields.update(
            error=reason[-4000:],
            attempts=entry.attempts,
            source=self.stream,
            source_id=entry.id,
            buried=f"{time.time():.3f}",
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead, fields, maxlen=100_000, approximate=True)
            pipe.xack(self.stream, self.group, entry.id)
            pipe.xdel(self.stream, entry.id)
            await pipe.execute()

    # -- handling -----------------------------------------------------------------------------------------------

    async def process(self, entry: Entry, handler: Handler) -> str:
        """Run the handler on one entry; returns `done`, `held`, `retry` (left pending) or `dead`."""
        if entry.attempts > self.max_attempts:
            # its consumers died (or hung) holding it every time: do not run it again
            reason = f"{self.stream} entry {entry.id} exhausted: delivered {entry.attempts - 1} times, never finished"
            log.error(reason)
            if self.exhausted is not None:
                return await self._finish(entry, await self.exhausted(entry))
            await self.bury(entry, reason)
            return "dead"
        done = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(entry, done))
        try:
            outcome = await handler(entry)
        except asyncio.CancelledError:
            raise  # left pending: claimed again after the visibility timeout
        except Poison as poison:
            log.error("%s entry %s is poison: %s", self.stream, entry.id, poison)
            if self.exhausted is not None and self.dead is None:
                return await self._finish(entry, await self.exhausted(entry))
            await self.bury(entry, f"poison: {poison}")
            return "dead"
        except Exception as error:  # noqa: BLE001 - one failure must never stop the consumer
            detail = "".join(traceback.format_exception(error))
            if entry.attempts >= self.max_attempts and self.dead is not None:
                await self.bury(entry, detail)
                log.error("%s entry %s dead after %d attempts: %s", self.stream, entry.id, entry.attempts, error)
                return "dead"
            log.warning("%s entry %s failed (attempt %d): %s", self.stream, entry.id, entry.attempts, error)
            return "retry"
        finally:
            done.set()  # the heartbeat stops even where a Redis call swallowed its cancellation
            heartbeat.cancel()
        return await self._finish(entry, outcome)

    async def _finish(self, entry: Entry, outcome: Outcome | None) -> str:
        if outcome == "held":
            return "held"
        await self.ack(entry)
        return "done"

    async def _heartbeat(self, entry: Entry, done: asyncio.Event) -> None:
        """While the handler runs (until `done`), keep the claim fresh so no other consumer takes a live entry.
        Cancellation alone is not enough: a cancel that lands inside a Redis command can be swallowed by the client,
        and a heartbeat left running would keep a failed entry fresh for ever, so it is never retried."""
        interval = self.visibility_ms / 3000
        while not done.is_set():
            await wait_or_stop(done, interval)
            if done.is_set():
                return
            try:
                await self.extend(entry)
            except (RedisError, OSError) as error:
                log.warning("heartbeat of %s entry %s failed: %s", self.stream, entry.id, error)

    async def _process_counted(self, entry: Entry, handler: Handler, on_outcome) -> str:
        start = time.perf_counter()
        outcome = await self.process(entry, handler)
        if on_outcome is not None:
            on_outcome(entry, outcome, time.perf_counter() - start)
        return outcome

    async def run_burst(self, handler: Handler, consumer: str, on_outcome=None) -> int:
        """Handle entries until none is left to read or claim; returns how many were handled."""
        await self.ensure_group()
        handled = 0
        while entries := await self.next(consumer):
            for entry in entries:
                await self._process_counted(entry, handler, on_outcome)
                handled += 1
        return handled

    async def run(self, handler: Handler, consumer: str, stop: asyncio.Event, on_outcome=None) -> None:
        """Handle entries until `stop` is set; a Redis outage pauses the loop (with backoff), it never ends it."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                await self.ensure_group()
                entries = await self.next(consumer, block_ms=1000)
                backoff.reset()
                for entry in entries:
                    await self._process_counted(entry, handler, on_outcome)
            except (RedisError, OSError) as error:
                delay = backoff.next()
                log.warning("%s consumer %s: redis unavailable (%s); retrying in %.1f s", self.stream, consumer,
                            type(error).__name__, delay)  # fmt: skip
                await wait_or_stop(stop, delay)


#: delete the consumers of a group idle past ARGV[2] ms that hold no entry, in one atomic step: between reading
#: XINFO and deleting, no read can hand one of them an entry (deleting a consumer drops its pending entries)
_PRUNE_SCRIPT = """
local removed = {}
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  if fields['pending'] == 0 and fields['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    table.insert(removed, fields['name'])
  end
end
return removed
"""


async def prune_consumers(redis, stream: str, group: str, idle_s: float) -> list[str]:
    """Remove the consumers of `group` that have been idle for `idle_s` and hold no entry: each process names its
    consumers afresh (`host-uuid-i`), so every restart would otherwise leave its names in `XINFO CONSUMERS` for
    good. A live consumer polls at least once a second (and its heartbeat refreshes it while a handler runs), and
    one that died holding entries stays until another consumer has claimed them. Returns the names removed."""
    try:
        removed = await redis.eval(_PRUNE_SCRIPT, 1, stream, group, int(idle_s * 1000))
    except ResponseError as error:
        if "NOGROUP" in str(error) or "no such key" in str(error):
            return []  # nothing ever consumed this stream
        raise
    return [_text(name) for name in removed or ()]


class Backoff:
    """Exponential backoff with a cap: 0.1, 0.2, 0.4 … up to `cap` seconds."""

    def __init__(self, base: float = 0.1, cap: float = 10.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


async def wait_or_stop(stop: asyncio.Event | None, seconds: float) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def wait_for_redis(redis, what: str, stop: asyncio.Event | None = None, cap_s: float = 10.0) -> bool:
    """Ping until Redis answers (start-up waits instead of exiting); False when `stop` was set first."""
    backoff = Backoff(cap=cap_s)
    while stop is None or not stop.is_set():
        try:
            await redis.ping()
            return True
        except (RedisError, OSError) as error:
            delay = backoff.next()
            log.warning("%s: waiting for Redis (%s); next try in %.1f s", what, type(error).__name__, delay)
            await wait_or_stop(stop, delay)
    return False


def connect(url: str, **options):
    """A client that reconnects and retries a command when Redis restarts under it (a stale pooled
    connection fails once; the retry opens a new one)."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    options.setdefault("socket_connect_timeout", 2.0)
    # a Redis that accepts connections but never answers must not hang intake or a consumer (blocking reads
    # wait at most 1 s, far below this)
    options.setdefault("socket_timeout", 15.0)
    return aioredis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **options,
    )


def as_text(value: bytes | str) -> str:
    """A Redis reply as text (redis-py answers bytes unless the client decodes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


_text = as_text
