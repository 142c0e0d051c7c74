"""The event worker: consumers of `drbot:events` (group `bot`) that hand each event to the handlers."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from bot.metrics import Metrics
from bot.store import EventQueue, Message


log = logging.getLogger("drbot.worker")

Handler = Callable[[Message], Awaitable[None]]


class EventWorker:
    """Several concurrent consumers in one process. A message is acknowledged only after its handler
    returned; one whose consumer died is claimed by another after the visibility timeout; one that failed
    `max_attempts` times moves to the dead-letter stream with its error."""

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

    async def process(self, message: Message) -> str:
        """Handle one message; returns its outcome: `done`, `retry` (left pending) or `dead`."""
        start = time.perf_counter()
        try:
            await self.handler(message)
        except asyncio.CancelledError:
            raise  # left pending: another consumer claims it after the visibility timeout
        except Exception as error:  # noqa: BLE001 - a handler's failure must never stop the consumer
            detail = "".join(traceback.format_exception(error))
            if message.attempts >= self.queue.max_attempts:
                await self.queue.bury(message, detail)
                outcome = "dead"
                log.error(
                    "event %s (%s) dead after %d attempts: %s", message.id, message.event, message.attempts, error
                )
            else:
                outcome = "retry"
                log.warning("event %s (%s) failed, attempt %d: %s", message.id, message.event, message.attempts, error)
        else:
            await self.queue.ack(message)
            outcome = "done"
        self.metrics.processing.labels(message.event, outcome).observe(time.perf_counter() - start)
        return outcome

    async def _next(self, consumer: str, block_ms: int | None) -> list[Message]:
        claimed = await self.queue.claim(consumer, count=1)
        if claimed:
            return claimed
        return await self.queue.read(consumer, count=1, block_ms=block_ms)

    async def run_burst(self) -> int:
        """Consume until nothing is left to read or claim, then return the number of messages handled (tests,
        one-shot jobs). Messages left pending for a retry are claimed again once their visibility timeout passes."""
        await self.queue.ensure_group()
        handled = 0
        while True:
            messages = await self._next(f"{self.name}-burst", None)
            if not messages:
                return handled
            for message in messages:
                await self.process(message)
                handled += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Run the consumers until `stop` is set; a Redis outage pauses them, it does not end them."""
        await self.queue.ensure_group()

        async def consume(index: int) -> None:
            consumer = f"{self.name}-{index}"
            while not stop.is_set():
                try:
                    for message in await self._next(consumer, block_ms=1000):
                        await self.process(message)
                except (RedisError, OSError) as error:
                    log.warning("consumer %s: redis unavailable (%s); retrying", consumer, error)
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=1.0)
                    except TimeoutError:
                        pass

        await asyncio.gather(*(consume(i) for i in range(self.consumers)))
