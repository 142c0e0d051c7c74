"""Per-rule feedback from maintainers: how many findings drbot posted, how many were ignored (`/drbot ignore`)."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from bot.store import Keys


#: the counts a `feedback:{code}` hash holds
KINDS = ("posted", "ignored")


@functools.cache
def rule_codes() -> tuple[str, ...]:
    """Every rule's code: the fixed set feedback is read over, so a read costs the same whatever Redis holds."""
    from analyzers.core import all_rules

    return tuple(sorted(rule.code for rule in all_rules()))


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

    async def counts(self, codes: Iterable[str]) -> dict[str, dict[str, int]]:
        """`{code: {"posted": n, "ignored": m}}` for each of `codes`: one HMGET per code, sent in one round trip.

        Never a SCAN: /metrics calls this unauthenticated, and a scan's cost grows with everything else in Redis.
        """
        codes = list(codes)
        async with self.redis.pipeline(transaction=False) as pipe:
            for code in codes:
                pipe.hmget(self.keys.feedback(code), KINDS)
            rows = await pipe.execute()
        return {
            code: {kind: int(value or 0) for kind, value in zip(KINDS, row, strict=True)}
            for code, row in zip(codes, rows, strict=True)
        }

    async def all(self) -> dict[str, dict[str, int]]:
        """The counts of every rule (`rule_codes()`) that has any; a retired rule's code is no longer read."""
        return {code: row for code, row in (await self.counts(rule_codes())).items() if any(row.values())}
