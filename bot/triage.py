"""What the registry and the other open PRs say about a review: known and suppressed findings, fixes of known
findings, and duplicate fixes (two open PRs fixing the same finding, or PRs with identical head trees)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from analyzers.core import Finding
from analyzers.render import code_span
from analyzers.review import ReviewData
from bot.known import KnownRegistry


CROSSREF_START = "<!-- drbot:crossref -->"
CROSSREF_END = "<!-- drbot:crossref:end -->"
_CROSSREF = re.compile(re.escape(CROSSREF_START) + r".*?" + re.escape(CROSSREF_END) + r"\n?", re.S)


@dataclass
class Triage:
    data: ReviewData
    fixes_known: list[Finding] = field(default_factory=list)
    duplicate_of: list[int] = field(default_factory=list)  # earlier open PRs this one duplicates


def fixes_key(store, repo: str, fingerprint: str) -> str:
    return store.keys.fixes(repo, fingerprint)


def tree_key(store, repo: str, tree_sha: str) -> str:
    return store.keys.trees(repo, tree_sha)


async def apply_registry(store, repo: str, data: ReviewData) -> Triage:
    """Known findings become `known` (tracked in #N, or suppressed with who and why); fixed ones that the
    registry knows are this PR's fixes of known findings."""
    registry = KnownRegistry(store.redis, store.keys, repo)
    comparison = data.comparison
    every = comparison.new + comparison.fixed + comparison.unchanged
    entries = await registry.get_many([f.fingerprint for f in every])
    live = {fp: e for fp, e in entries.items() if e.get("status") != "fixed"}
    notes = dict(data.notes)
    for fp, entry in live.items():
        if entry.get("status") == "suppressed":
            who, why = entry.get("suppressed_by", "a maintainer"), entry.get("reason", "")
            notes[fp] = f"suppressed by {who}" + (f": {why}" if why else "")
    known = {**data.known, **{fp: entry.get("issue") for fp, entry in live.items()}}
    fixes_known = [f for f in comparison.fixed if f.fingerprint in live]
    return Triage(replace(data, known=known, notes=notes), fixes_known=fixes_known)


def fix_entries(fixed: list[Finding]) -> list[dict]:
    """What a PR's state records of the findings it fixes (what `crossrefs` lists)."""
    now = {f.fingerprint: {"code": f.code, "symbol": f.symbol, "path": f.path} for f in fixed}
    return [{"fp": fp, **info} for fp, info in now.items()]


async def record_fixes(store, state, repo: str, number: int, fixed: list[Finding], tree_sha: str | None) -> None:
    """Remember which findings this PR fixes and its head tree, replacing what an earlier push recorded."""
    previous = await state.get_json("fixed", [])
    now = {item["fp"]: item for item in fix_entries(fixed)}
    async with store.redis.pipeline(transaction=True) as pipe:
        for item in previous:
            if item["fp"] not in now:
                pipe.srem(fixes_key(store, repo, item["fp"]), number)
        for fp in now:
            pipe.sadd(fixes_key(store, repo, fp), number)
        old_tree = await state.get("tree")
        if old_tree and old_tree != tree_sha:
            pipe.srem(tree_key(store, repo, old_tree), number)
        if tree_sha:
            pipe.sadd(tree_key(store, repo, tree_sha), number)
        await pipe.execute()
    await state.set_json("fixed", list(now.values()))
    if tree_sha:
        await state.set(tree=tree_sha)


async def forget_pull(store, state, repo: str, number: int) -> list[dict]:
    """A closed or merged PR leaves the duplicate-fix sets; returns what it fixed."""
    fixed = await state.get_json("fixed", [])
    tree = await state.get("tree")
    async with store.redis.pipeline(transaction=True) as pipe:
        for item in fixed:
            pipe.srem(fixes_key(store, repo, item["fp"]), number)
        if tree:
            pipe.srem(tree_key(store, repo, tree), number)
        await pipe.execute()
    return fixed


async def crossrefs(store, state, repo: str, number: int) -> tuple[str, list[int], set[int]]:
    """The summary's cross-reference section for PR `number`, the earlier PRs it duplicates, and every other
    PR it shares a fix or a head tree with (their summaries need the same refresh)."""
    return await crossrefs_of(store, repo, number, await state.get_json("fixed", []), await state.get("tree"))


async def crossrefs_of(
    store, repo: str, number: int, fixed: list[dict], tree: str | None
) -> tuple[str, list[int], set[int]]:
    """`crossrefs` for what PR `number` fixes (`fix_entries`) and its head tree, before they are recorded."""
    lines: list[str] = []
    earlier: set[int] = set()
    related: set[int] = set()
    for item in fixed:
        members = {int(m) for m in await store.redis.smembers(fixes_key(store, repo, item["fp"]))} - {number}
        if not members:
            continue
        related |= members
        earlier |= {m for m in members if m < number}
        refs = ", ".join(f"#{m} (opened {'earlier' if m < number else 'later'})" for m in sorted(members))
        lines.append(
            f"- {item['code']} {code_span(item['symbol'])} in {code_span(item['path'])}: also fixed by {refs}"
        )
    if tree:
        twins = {int(m) for m in await store.redis.smembers(tree_key(store, repo, tree))} - {number}
        if twins:
            related |= twins
            earlier |= {m for m in twins if m < number}
            refs = ", ".join(f"#{m}" for m in sorted(twins))
            lines.append(f"- this pull request's head tree is identical to that of {refs}")
    if not lines:
        return "", [], related
    section = ["### Possible duplicates", "", *lines, ""]
    return "\n".join(section), sorted(earlier), related


def with_crossrefs(body: str, section: str) -> str:
    """Put `section` (possibly empty) into a summary body between its markers, replacing the old one."""
    block = f"{CROSSREF_START}\n{section}{CROSSREF_END}\n" if section else ""
    if CROSSREF_START in body:
        return _CROSSREF.sub(lambda _: block, body, count=1)
    marker = "<sub>drbot checks"
    index = body.rfind(marker)
    return body[:index] + block + body[index:] if index != -1 else body + block


def describe_fix_notes(triage: Triage) -> None:
    """Say in the summary which fixed findings were known (and tracked where)."""
    for f in triage.fixes_known:
        if not triage.data.known.get(f.fingerprint):  # a tracked one already reads "tracked in #N"
            triage.data = replace(triage.data, notes={**triage.data.notes, f.fingerprint: "a known finding"})


__all__ = [
    "Triage",
    "apply_registry",
    "crossrefs",
    "crossrefs_of",
    "fix_entries",
    "forget_pull",
    "record_fixes",
    "with_crossrefs",
]
