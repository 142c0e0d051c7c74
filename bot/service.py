"""Glue between the queue and the handlers: one GitHub client per installation, dispatch, and `drbot serve`."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from gidgethub import sansio

from bot.github import AppAuth, GitHub, RedisWritePacer
from bot.metrics import Metrics
from bot.results import ResultConsumer
from bot.routing import router
from bot.settings import Settings
from bot.store import EventQueue, Keys, Message, connect
from bot.worker import EventWorker


log = logging.getLogger("drbot.service")


@dataclass
class Store:
    """What handlers get as `store`: the Redis client and the key names."""

    redis: aioredis.Redis
    keys: Keys


class Dispatcher:
    """Turns a queued message into a handler call with an installation-scoped GitHub client."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession, store: Store, metrics: Metrics, **extra):
        settings.require_app_credentials()
        self.settings = settings
        self.session = session
        self.store = store
        self.metrics = metrics
        self.auth = AppAuth(settings.app_id, settings.private_key, settings.api_url, session)  # type: ignore[arg-type]
        # writes of all replicas to one installation are serial and spaced (GitHub's secondary limits)
        self.pacer = RedisWritePacer(store.redis, store.keys.prefix, settings.write_spacing_s)
        self.extra = extra

    async def client_for(self, installation: int) -> GitHub:
        token = await self.auth.token(int(installation))
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
        if installation is None:
            log.warning("event %s has no installation; ignored", message.delivery)
            return
        gh = await self.client_for(int(installation))
        event = sansio.Event(payload, event=message.event, delivery_id=message.delivery)
        await router.dispatch(event, gh, store=self.store, settings=self.settings, metrics=self.metrics, **self.extra)


async def serve(settings: Settings, *, web_enabled: bool = True, worker_enabled: bool = True) -> None:
    """Run the webhook server and/or the event worker until SIGINT/SIGTERM."""
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
            async with aiohttp.ClientSession() as session:
                queue = EventQueue(
                    redis, Keys(settings.key_prefix), visibility_timeout_s=settings.visibility_timeout_s,
                    max_attempts=settings.max_attempts,
                )  # fmt: skip
                store = Store(redis, queue.keys)
                dispatcher = Dispatcher(settings, session, store, metrics)
                results = ResultConsumer(store, dispatcher.client_for)
                await asyncio.gather(
                    EventWorker(queue, dispatcher, metrics=metrics, consumers=settings.consumers).run(stop),
                    results.run(stop),
                )
        else:
            await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await redis.aclose()
