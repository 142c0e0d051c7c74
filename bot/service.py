"""Glue between the queue and the handlers: one GitHub client per installation, dispatch, and `drbot serve`."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from gidgethub import sansio
from redis.exceptions import RedisError

from bot.github import AppAuth, GitHub, RedisWritePacer
from bot.handlers import issue_comment, pull_request
from bot.metrics import Metrics
from bot.results import GROUP as RESULTS_GROUP
from bot.results import JOBS_GROUP, ResultConsumer
from bot.routing import router
from bot.settings import Settings
from bot.store import EVENTS_GROUP, EventQueue, Keys, Message, PullLock, connect
from bot.worker import EventWorker
from common.streams import prune_consumers, wait_for_redis, wait_or_stop


log = logging.getLogger("drbot.service")


@dataclass
class Store:
    """What handlers get as `store`: the Redis client and the key names."""

    redis: aioredis.Redis
    keys: Keys


def permissions_for(event: str, payload: dict) -> dict[str, str] | None:
    """The installation-token permissions an event's handling needs, or None when drbot does nothing with it."""
    if event == "pull_request":
        return pull_request.PERMISSIONS
    if event == "issue_comment":
        return issue_comment.permissions_for(payload)
    return None


def pull_number(event: str, payload: dict) -> int | None:
    """The pull request (or issue) an event is about, if any."""
    item = payload.get("pull_request") if event == "pull_request" else payload.get("issue")
    number = item.get("number") if isinstance(item, dict) else None
    return number if isinstance(number, int) else None


class Dispatcher:
    """Turns a queued message into a handler call with an installation-scoped GitHub client."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession, store: Store, metrics: Metrics, **extra):
        app_id, private_key = settings.require_app_credentials()
        self.settings = settings
        self.session = session
        self.store = store
        self.metrics = metrics
        self.auth = AppAuth(app_id, private_key, settings.api_url, session)
        # writes of all replicas to one installation are serial and spaced (GitHub's secondary limits)
        self.pacer = RedisWritePacer(store.redis, store.keys.prefix, settings.write_spacing_s)
        self.extra = extra

    async def client_for(
        self, installation: int, repository: str | None = None, permissions: Mapping[str, str] | None = None
    ) -> GitHub:
        """A client whose token reaches `repository` only, with `permissions` only (least privilege)."""
        token = await self.auth.token(int(installation), repository, permissions)
        return GitHub(
            self.session,
            token=token,
            api_url=self.settings.api_url,
            installation_id=int(installation),
            pacer=self.pacer,
            metrics=self.metrics,
            max_retries=self.settings.max_retries,
        )

    async def __call__(self, message: Message) -> None:
        payload = message.payload()
        installation = (payload.get("installation") or {}).get("id")
        repository = (payload.get("repository") or {}).get("full_name")
        if not isinstance(installation, int) or not isinstance(repository, str):
            log.warning("event %s names no installation or repository; ignored", message.delivery)
            return
        permissions = permissions_for(message.event, payload)
        if permissions is None:
            return  # nothing for drbot in this event (a comment that is no command): no token is even asked for
        gh = await self.client_for(installation, repository, permissions)
        event = sansio.Event(payload, event=message.event, delivery_id=message.delivery)
        number = pull_number(message.event, payload)
        lock = PullLock(self.store.redis, self.store.keys.pr_lock(repository, number)) if number else nullcontext()
        async with lock:
            try:
                await router.dispatch(
                    event, gh, store=self.store, settings=self.settings, metrics=self.metrics, **self.extra
                )
            except Exception as error:
                if message.event == "pull_request" and message.attempts >= self.settings.max_attempts:
                    # the last attempt: the event goes to the dead letters; its check run must not spin forever
                    await pull_request.give_up_review(gh, payload, error, store=self.store, attempts=message.attempts)
                raise


async def prune_stale_consumers(redis, keys: Keys, idle_s: float) -> list[str]:
    """Remove the consumers of drbot's three groups (events, results, and the runners' jobs) idle for `idle_s`
    with nothing pending; returns them as `stream/consumer`."""
    removed = []
    for stream, group in ((keys.events, EVENTS_GROUP), (keys.results, RESULTS_GROUP), (keys.jobs, JOBS_GROUP)):
        removed += [f"{stream}/{name}" for name in await prune_consumers(redis, stream, group, idle_s)]
    return removed


async def janitor(redis, keys: Keys, idle_s: float, stop: asyncio.Event) -> None:
    """Every sixth of `idle_s` (at most every 10 minutes), prune stale consumers until `stop` is set."""
    while not stop.is_set():
        try:
            for name in await prune_stale_consumers(redis, keys, idle_s):
                log.info("removed stale consumer %s (idle over %.0f s, nothing pending)", name, idle_s)
        except (RedisError, OSError) as error:  # the consumers' own loops wait for Redis
            log.warning("stale consumers not pruned: %s", type(error).__name__)
        await wait_or_stop(stop, min(600.0, max(1.0, idle_s / 6)))


def warm_analysis_pool(settings: Settings) -> None:
    from bot.handlers.pull_request import analysis_limits, worker_modules
    from engine import isolation

    isolation.shared(analysis_limits(settings), settings.analysis_workers, worker_modules()).warm()


async def serve(settings: Settings, *, web_enabled: bool = True, worker_enabled: bool = True) -> None:
    """Run the webhook server and/or the event worker until SIGINT/SIGTERM. Redis being down at start-up or
    later pauses the work (the web app answers 503 and /healthz says unhealthy); it never ends the process."""
    metrics = Metrics()
    redis = connect(settings.redis_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    from bot.app import make_app

    try:
        # the web app also serves /healthz and /metrics for a worker-only process, on the same port
        app = make_app(settings, redis=redis, metrics=metrics, webhook=web_enabled)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        log.info("drbot listening on %s:%s (webhook %s, worker %s)", settings.host, settings.port,
                 "on" if web_enabled else "off", "on" if worker_enabled else "off")  # fmt: skip
        if worker_enabled:
            # the analysis workers start now, not on the first review (a fork server and preloaded rules)
            await asyncio.to_thread(warm_analysis_pool, settings)
            if not await wait_for_redis(redis, "drbot serve", stop):
                return
            async with aiohttp.ClientSession() as session:
                queue = EventQueue(
                    redis, Keys(settings.key_prefix), visibility_timeout_s=settings.visibility_timeout_s,
                    max_attempts=settings.max_attempts, secret=settings.webhook_secret,
                )  # fmt: skip
                store = Store(redis, queue.keys)
                dispatcher = Dispatcher(settings, session, store, metrics)
                results = ResultConsumer(store, dispatcher.client_for, max_attempts=settings.max_attempts)
                await asyncio.gather(
                    EventWorker(queue, dispatcher, metrics=metrics, consumers=settings.consumers).run(stop),
                    results.run(stop),
                    janitor(redis, queue.keys, settings.stale_consumer_s, stop),
                )
        else:
            await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await redis.aclose()
