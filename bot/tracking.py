"""Keep drbot's marked section of the tracking issue (`tracking_issue:` in .github/drbot.yml) up to date."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from gidgethub import BadRequest, GitHubException

from analyzers.dashboard import from_registry, tracking_section, with_tracking_section
from bot.known import KnownRegistry


log = logging.getLogger("drbot.tracking")


async def update_tracking_issue(gh, store, repo: str, number: int) -> str:
    """Bring the marked section of issue `number` in line with the registry: edited in place (the rest of the body
    untouched), and not at all when it already says the same. Returns edited, unchanged, missing, not-an-issue or
    error; GitHub failing here never fails the event (the review and the registry are what matter), it is logged."""
    entries = await KnownRegistry(store.redis, store.keys, repo).all()
    section = tracking_section(from_registry(entries, repo=repo))
    try:
        issue = await gh.getitem(f"/repos/{repo}/issues/{number}")
        if issue.get("pull_request"):
            log.warning("%s: tracking_issue %s is a pull request; its section is not kept", repo, number)
            return "not-an-issue"
        current = issue.get("body") or ""
        body = with_tracking_section(current, section)
        if body == current:
            return "unchanged"
        await gh.patch(f"/repos/{repo}/issues/{number}", data={"body": body})
    except BadRequest as error:
        if error.status_code.value in (404, 410):
            log.warning("%s: tracking issue #%s not found (%s); its section is not kept", repo, number, error)
            return "missing"
        log.warning("%s: tracking issue #%s not updated: %s", repo, number, error)
        return "error"
    except (GitHubException, aiohttp.ClientError, asyncio.TimeoutError) as error:
        log.warning("%s: tracking issue #%s not updated: %s: %s", repo, number, type(error).__name__, error)
        return "error"
    return "edited"
