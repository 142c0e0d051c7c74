"""Per-rule feedback from maintainers: how many findings drbot posted, how many were ignored (`/drbot ignore`)."""

from __future__ import annotations

from bot.store import Keys


class Feedback:
    """`drbot:feedback:{code}` hashes with `posted` and `ignored` counts: each rule's precision as maintainers see it."""

    def __init__(self, redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys

    async def posted(self, code: str, count: int = 1) -> None:
        if count:
            await self.redis.hincrby(self.keys.feedback(code), "posted", count)

    async def posted_many(self, codes) -> None:
        counts: dict[str, int] = {}
        for code in codes:
            counts[code] = counts.get(code, 0) + 1
        for code, count in counts.items():
            await self.posted(code, count)

    async def ignored(self, code: str) -> None:
        await self.redis.hincrby(self.keys.feedback(code), "ignored", 1)

    async def all(self) -> dict[str, dict[str, int]]:
        prefix = self.keys.feedback("")
        out: dict[str, dict[str, int]] = {}
        async for key in self.redis.scan_iter(match=f"{prefix}*"):
            name = key.decode() if isinstance(key, bytes) else key
            raw = await self.redis.hgetall(name)
            out[name[len(prefix) :]] = {k.decode(): int(v) for k, v in raw.items()}
        return out
