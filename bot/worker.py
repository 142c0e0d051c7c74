"""The event worker: consumers of `drbot:events` (group `bot`) that hand each authenticated event to the handlers."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from bot.metrics import Metrics
from bot.store import EVENTS_GROUP, EventQueue, Message
from common.streams import Entry


log = logging.getLogger("drbot.worker")

Handler = Callable[[Message], Awaitable[None]]
HANDLED = frozenset({"pull_request", "issue_comment"})


class EventWorker:
    """Several concurrent consumers in one process, on the one stream mechanism of `common.streams`: a message is
    acknowledged only after its handler returned; one whose consumer died is claimed by another after the
    visibility timeout; one that failed or was claimed `max_attempts` times, or that is forged or malformed, moves
    to the dead-letter stream with its error; a replayed copy is dropped."""

    def __init__(
        self,
        queue: EventQueue,
        handler: Handler,
        *,
        metrics: Metrics | None = None,
        consumers: int = 4,
        name: str | None = None,
    ) -> None:
        self.queue = queue
        self.handler = handler
        self.metrics = metrics or Metrics()
        self.consumers = max(1, consumers)
        self.name = name or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"

    async def _handle(self, entry: Entry) -> str:
        message = await self.queue.authenticate(entry)
        if message is None:
            log.warning("event entry %s is a replayed copy of an accepted delivery; dropped", entry.id)
            return "done"
        await self.handler(message)
        return "done"

    def _count(self, entry: Entry, outcome: str, seconds: float) -> None:
        event = entry.get("event").decode("utf-8", "replace")
        # a forged entry's event name is attacker text: only the events drbot handles become labels
        label = event if event in HANDLED else "other"
        self.metrics.processing.labels(label, outcome).observe(seconds)

    async def run_burst(self) -> int:
        """Consume until nothing is left to read or claim, then return the number of messages handled (tests,
        one-shot jobs). Messages left pending for a retry are claimed again once their visibility timeout passes."""
        return await self.queue.consumer.run_burst(self._handle, f"{self.name}-burst", self._count)

    async def register(self, consumer: str) -> None:
        """Name the consumer in the group now. Redis (7.0) creates a consumer only when a read hands it an entry, so
        without this an idle worker is missing from `XINFO CONSUMERS`, and nothing shows that it is up."""
        try:
            await self.queue.consumer.ensure_group()
            await self.queue.redis.xgroup_createconsumer(self.queue.keys.events, EVENTS_GROUP, consumer)
        except (RedisError, OSError) as error:  # the consumer's own loop waits for Redis
            log.warning("consumer %s not registered yet: %s", consumer, type(error).__name__)

    async def _consume(self, consumer: str, stop: asyncio.Event) -> None:
        await self.register(consumer)
        await self.queue.consumer.run(self._handle, consumer, stop, self._count)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the consumers until `stop` is set; a Redis outage pauses them, it does not end them."""
        await asyncio.gather(*(self._consume(f"{self.name}-{i}", stop) for i in range(self.consumers)))
