"""Fixtures of the security suite: Redis ACL users made on the real server, and a job queued the way the bot
queues one (a maintainer's `/drbot contracts` on a reviewed PR)."""

from __future__ import annotations

import secrets
import uuid

import pytest
import redis.asyncio as aioredis
from harness import DDPM, REPO, open_pr, with_eta

from bot.acl import apply, bot_rules, runner_rules


class AclUsers:
    """Users created on the shared Redis for one test (unique names, the test's key prefix), deleted after it."""

    def __init__(self, admin: aioredis.Redis, prefix: str) -> None:
        self.admin, self.prefix = admin, prefix
        self.names: list[str] = []
        self.clients: list[aioredis.Redis] = []
        self.tag = uuid.uuid4().hex[:6]

    async def _user(self, name: str, rules: list[str]) -> aioredis.Redis:
        password = secrets.token_urlsafe(16)
        await apply(self.admin, name, password, rules)
        self.names.append(name)
        client = aioredis.from_url(f"redis://{name}:{password}@127.0.0.1:6379/0")
        self.clients.append(client)
        return client

    async def runner(self, label: str = "a") -> tuple[str, aioredis.Redis]:
        name = f"runner-{label}-{self.tag}"
        return name, await self._user(name, runner_rules(name, self.prefix))

    async def bot(self) -> aioredis.Redis:
        return await self._user(f"bot-{self.tag}", bot_rules(self.prefix))

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()
        for name in self.names:
            await self.admin.execute_command("ACL", "DELUSER", name)


@pytest.fixture
async def acl_users(harness):
    users = AclUsers(harness.redis, harness.keys.prefix)
    yield users
    await users.close()


@pytest.fixture
def reviewed_pr(github, sources):
    """PR 1 changes DDPM; `maintainer` may write. Returns the fake."""
    open_pr(github, sources, {DDPM: with_eta(sources)})
    github.set_permission(REPO, "maintainer", "write")
    return github
