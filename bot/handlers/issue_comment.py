"""Run `/drbot …` slash commands from comments on pull requests."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gidgethub import BadRequest, routing

from analyzers.core import Finding, all_rules
from analyzers.render import Links, code_span, md_escape
from bot import commands, publish
from bot.feedback import Feedback
from bot.known import KnownRegistry
from bot.store import RATE_WINDOW_S, REPLAY, RETRY, CommandGuard, JobQueue, RateCounter


log = logging.getLogger("drbot.commands")
router = routing.Router()

#: commands one user may send on one repository per window (bot.store.RATE_WINDOW_S), before drbot stops answering
RATE_LIMIT = 10
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})


def reply_marker(comment_id: int) -> str:
    return f"<!-- drbot:reply {comment_id} -->"


def _is_bot(user: dict) -> bool:
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")


async def can_write(gh, repo: str, login: str) -> bool:
    """Write, maintain or admin permission on the repository (not `author_association`: DESIGN §7)."""
    try:
        data = await gh.getitem(f"/repos/{repo}/collaborators/{{username}}/permission", url_vars={"username": login})
    except BadRequest as error:
        if error.status_code.value == 404:
            return False
        raise
    return data.get("permission") in WRITE_PERMISSIONS or data.get("role_name") in WRITE_PERMISSIONS


async def explain(code: str, links: Links | None = None) -> str:
    rule = {r.code: r for r in all_rules()}.get(code.upper())
    if rule is None:
        return f"There is no rule {code_span(code.upper())}; `drbot rules` lists them all."
    what = " ".join(rule.title.split()) if getattr(rule, "title", "") else ""
    why = " ".join(getattr(rule, "rationale", "").split())
    lines = [f"**{rule.code}** `{rule.name}` (#13656 pattern {rule.pattern})", ""]
    if what:
        lines += [md_escape(what), ""]
    if why:
        lines += [f"Why: {md_escape(why)}", ""]
    lines.append(f"Documentation: [{rule.code}]({(links or Links()).rule(rule.code)})")
    return "\n".join(lines)


JOB_TIMEOUT_S = 1800


def contract_job(
    repo: str, number: int, head: str, pipelines: tuple[str, ...], user: str, api_url: str, requested_at: str
) -> dict:
    """The v1 job (DESIGN §6) testing `pipelines` at `head`, the commit a maintainer approved; the runner fetches
    exactly it. The id is deterministic per head, suite and pipeline set, so asking twice queues it once."""
    suite = "contracts" + (":" + ",".join(sorted(pipelines)) if pipelines else "")
    return {
        "version": 1,
        "job_id": f"{repo}#{number}@{head}:{suite}",
        "repo": repo,
        "pr": number,
        "head_sha": head,
        "tarball_url": f"{api_url}/repos/{repo}/tarball/{head}",
        "pipelines": list(pipelines),
        "contracts": "all",
        "requested_by": user,
        "requested_at": requested_at,
        "timeout_s": JOB_TIMEOUT_S,
    }


SHA_ARG = re.compile(r"^@([0-9a-f]{7,40})$")


def _parse_time(stamp: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


async def approved_head(gh, repo: str, number: int, pull: dict, state, comment: dict, pinned: str | None):
    """The commit `/drbot contracts` may run, or a reply saying why not.

    A maintainer approves the code they saw: the head the PR had when the comment was written (drbot records
    each head with GitHub's time for it as pull_request events arrive). If the head moved since, nothing runs
    until the maintainer names a commit: `/drbot contracts @<sha>` (a commit of this pull request)."""
    live = pull["head"]["sha"]
    if pinned is not None:
        async for commit in gh.getiter(f"/repos/{repo}/pulls/{number}/commits?per_page=100"):
            if commit["sha"].startswith(pinned):
                return commit["sha"], None
        return None, f"`{pinned[:40]}` is not a commit of this pull request."
    written = _parse_time(comment.get("created_at"))
    seen, seen_at = None, None
    for sha, since in await state.get_json("heads", []):  # events may arrive out of order: take the latest
        moment = _parse_time(since)
        # strictly before: a push in the same second as the comment was not seen by its author
        if written is not None and moment is not None and moment < written and (seen_at is None or moment >= seen_at):
            seen, seen_at = sha, moment
    if seen is None:
        return None, (
            "drbot cannot tell which commit you reviewed (it has no record of this pull request's head before your "
            f"comment). Name it: `/drbot contracts @{live[:12]}` runs the current head."
        )
    if seen != live:
        return None, (
            f"The head moved after your comment: you commented on `{seen[:12]}`, the pull request is now at "
            f"`{live[:12]}`. drbot runs only the code a maintainer approved: `/drbot contracts @{live[:12]}` tests "
            f"the new head, `/drbot contracts @{seen[:12]}` the one you saw."
        )
    return live, None


async def ignore(store, repo: str, number: int, target: str, reason: str, user: str) -> str:
    state = publish.PullState(store.redis, store.keys, repo, number)
    findings: dict = await state.get_json("findings", {})
    if commands.FINGERPRINT.match(target):
        chosen = {target: findings[target]} if target in findings else {}
        registry_only = not chosen
    else:
        chosen = {fp: f for fp, f in findings.items() if f["code"] == target.upper()}
        registry_only = False
    registry = KnownRegistry(store.redis, store.keys, repo)
    feedback = Feedback(store.redis, store.keys)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if registry_only:
        try:
            await registry.update(target, status="suppressed", suppressed_by=user, reason=reason, suppressed_at=stamp)
        except KeyError:
            return f"drbot has no finding `{target}` on this pull request or in its registry."
        entry = (await registry.get_many([target]))[target]
        await feedback.ignored(entry["code"])
        return f"Suppressed `{target}` ({entry['code']}) everywhere it recurs: {md_escape(reason)}"
    if not chosen:
        return f"This pull request has no {target.upper()} finding to ignore."
    for fp, f in chosen.items():
        finding = Finding(f["code"], f["pattern"], f["path"], 0, 0, f["scope"], f["symbol"], "", fingerprint=fp)
        await registry.update(fp, finding, status="suppressed", suppressed_by=user, reason=reason, suppressed_at=stamp)
        await feedback.ignored(f["code"])
    count = len(chosen)
    return (
        f"Suppressed {count} finding{'s' if count != 1 else ''} ({', '.join(sorted(chosen))}) everywhere "
        f"{'they recur' if count != 1 else 'it recurs'}: {md_escape(reason)}. drbot will show "
        f"{'them' if count != 1 else 'it'} as known, not post {'them' if count != 1 else 'it'} again."
    )


async def find_reply(gh, repo: str, number: int, comment_id: int) -> str | None:
    """drbot's reply to a comment, if an earlier attempt posted one."""
    marker = reply_marker(comment_id)
    async for comment in gh.getiter(f"/repos/{repo}/issues/{number}/comments?per_page=100"):
        if (comment.get("body") or "").startswith(marker) and (comment.get("user") or {}).get("type") == "Bot":
            return str(comment["id"])
    return None


async def post_reply(gh, repo: str, number: int, comment_id: int, text: str, reply_id: str | None) -> str:
    body = f"{reply_marker(comment_id)}\n{text}"
    if reply_id is not None:
        await gh.patch(f"/repos/{repo}/issues/comments/{reply_id}", data={"body": body})
        return reply_id
    created = await gh.post(f"/repos/{repo}/issues/{number}/comments", data={"body": body})
    return str(created["id"])


#: what handling a slash command needs of an installation token: reactions and replies, the author's
#: permission, the pull request and its commits (for `contracts`); `/drbot review` needs a review's too
COMMAND_PERMISSIONS = {"issues": "write", "pull_requests": "read", "metadata": "read"}
#: `/drbot fix` analyses the PR as a review does (the code: contents read) and only replies: it never pushes
FIX_PERMISSIONS = {"contents": "read", "issues": "write", "pull_requests": "read", "metadata": "read"}


def permissions_for(payload: dict) -> dict[str, str] | None:
    """The token permissions this comment's handling needs; None when it is no command drbot would run."""
    comment, issue = payload.get("comment") or {}, payload.get("issue") or {}
    if payload.get("action") != "created" or "pull_request" not in issue or _is_bot(comment.get("user") or {}):
        return None
    command = commands.parse(comment.get("body"))
    if command is None:
        return None
    if command.verb == "review":
        from bot.handlers.pull_request import PERMISSIONS

        return PERMISSIONS
    if command.verb == "fix":
        return FIX_PERMISSIONS
    return COMMAND_PERMISSIONS


async def run_command(
    gh, payload: dict, *, store, settings, metrics, review=None, fix=None, delivery: str = ""
) -> str:
    """Handle one comment; returns what happened (logs and tests read it).

    Each comment runs once, whatever the delivery id (bot.store.CommandGuard). A retry of the delivery that started
    it runs the command again; every step is idempotent (the reaction, state changes, queued jobs, and the reply,
    found by its marker), so the command completes exactly once."""
    comment, issue = payload["comment"], payload["issue"]
    if "pull_request" not in issue:
        return "not-a-pull-request"
    if _is_bot(comment.get("user") or {}):
        return "bot"
    command = commands.parse(comment.get("body"))
    if command is None:
        return "not-a-command"
    repo = payload["repository"]["full_name"]
    guard = CommandGuard(store.redis, store.keys)
    claim = await guard.claim(repo, comment["id"], delivery)
    if claim == REPLAY:
        return "replay"
    call = Invocation(gh, payload, command, store, settings, metrics, review, fix)
    outcome = await _run_command(call, retry=claim == RETRY)
    await guard.finish(repo, comment["id"])
    return outcome


@dataclass
class Invocation:
    """One slash command being handled: what every verb gets."""

    gh: Any
    payload: dict
    command: commands.SlashCommand
    store: Any
    settings: Any
    metrics: Any
    review: Any = None  # the pull_request handler's review (`/drbot review`)
    fix: Any = None  # the pull_request handler's fixes of a PR's new findings (`/drbot fix`)
    reply_id: str | None = None  # drbot's reply to the comment, once posted (or found again on a retry)

    @property
    def repo(self) -> str:
        return self.payload["repository"]["full_name"]

    @property
    def number(self) -> int:
        return self.payload["issue"]["number"]

    @property
    def comment_id(self) -> int:
        return self.payload["comment"]["id"]

    @property
    def user(self) -> str:
        return self.payload["comment"]["user"]["login"]

    @property
    def state(self) -> publish.PullState:
        return publish.PullState(self.store.redis, self.store.keys, self.repo, self.number)

    async def say(self, text: str) -> None:
        """Post the reply, or edit it in place once it exists."""
        self.reply_id = await post_reply(self.gh, self.repo, self.number, self.comment_id, text, self.reply_id)


async def _run_command(call: Invocation, *, retry: bool) -> str:
    gh, repo, number, command = call.gh, call.repo, call.number, call.command
    if retry:
        call.reply_id = await find_reply(gh, repo, number, call.comment_id)
    else:
        count = await RateCounter(call.store.redis, call.store.keys).hit(repo, call.user)
        if count > RATE_LIMIT:
            if count == RATE_LIMIT + 1:  # one notice, then silence until the window ends
                await post_reply(gh, repo, number, call.comment_id,
                                 f"Too many drbot commands from this account; try again in {RATE_WINDOW_S // 60} minutes.", None)  # fmt: skip
            return "rate-limited"
    # received; the reply says the outcome (GitHub answers an existing reaction with 200, so a retry adds none)
    await gh.post(f"/repos/{repo}/issues/comments/{call.comment_id}/reactions", data={"content": "eyes"})
    if command.verb == "unknown":
        await call.say(f"Unknown command `{command.args[0][:30]}`.\n\n{commands.HELP}")
        return "unknown"
    problem = commands.usage_error(command)
    if problem is not None:
        await call.say(problem)
        return "usage"
    if command.needs_write and not await can_write(gh, repo, call.user):
        await call.say(f"Sorry, `/drbot {command.verb}` needs write access to this repository.")
        return "refused"
    await call.say(await VERB_HANDLERS[command.verb](call))
    return command.verb


# -- the verbs: each takes the invocation and returns the reply's text


async def cmd_help(call: Invocation) -> str:
    return commands.HELP


async def cmd_explain(call: Invocation) -> str:
    return await explain(call.command.args[0], call.settings.links())


async def cmd_pause(call: Invocation) -> str:
    await call.state.set(paused="1")
    return "Paused: drbot will not review this pull request until `/drbot resume`."


async def cmd_resume(call: Invocation) -> str:
    await call.state.set(paused="0")
    return "Resumed: the next push (or `/drbot review`) is reviewed."


async def cmd_ignore(call: Invocation) -> str:
    target, reason = call.command.args[0], " ".join(call.command.args[1:])
    return await ignore(call.store, call.repo, call.number, target, reason, call.user)


async def _pull_event(call: Invocation) -> tuple[dict, dict]:
    """The pull request as GitHub has it now, and a `pull_request` event for it (what a review or a fix is run on)."""
    pull = await call.gh.getitem(f"/repos/{call.repo}/pulls/{call.number}")
    event = {"pull_request": pull, "repository": call.payload["repository"],
             "installation": call.payload.get("installation")}  # fmt: skip
    return pull, event


async def cmd_review(call: Invocation) -> str:
    if call.reply_id is None:  # a review takes a while: say so first, then edit the reply with the outcome
        await call.say("Reviewing…")
    pull, event = await _pull_event(call)
    outcome = await call.review(call.gh, event, store=call.store, settings=call.settings, metrics=call.metrics)
    return {
        "reviewed": f"Reviewed `{pull['head']['sha'][:7]}`: {outcome.new} new finding{'s' if outcome.new != 1 else ''}; the summary comment is up to date.",
        "paused": "This pull request is paused; `/drbot resume` first.",
        "skipped-draft": "This pull request is a draft; drbot reviews it once it is ready.",
        "nothing-to-review": "No Python files under the reviewed paths changed.",
    }.get(outcome.status, f"Not reviewed: {outcome.status}.")  # fmt: skip


async def cmd_fix(call: Invocation) -> str:
    if call.reply_id is None:  # the analysis takes a while: say so first, then edit the reply with the diff
        await call.say("Preparing the fixes…")
    _, event = await _pull_event(call)
    return await call.fix(call.gh, event, store=call.store, settings=call.settings)


async def cmd_contracts(call: Invocation) -> str:
    """`/drbot contracts [@sha] [Pipeline …]`: queue the job for the commit the maintainer approved."""
    args = call.command.args
    pinned = next((m.group(1) for a in args if (m := SHA_ARG.match(a))), None)
    names = tuple(a for a in args if not SHA_ARG.match(a))
    pull = await call.gh.getitem(f"/repos/{call.repo}/pulls/{call.number}")
    state = call.state
    head, refusal = await approved_head(call.gh, call.repo, call.number, pull, state, call.payload["comment"], pinned)
    if refusal is not None:
        return refusal
    pipelines = names or tuple(await state.get_json("pipelines", []))
    if not pipelines:
        return "Name the pipelines to test (`/drbot contracts FluxPipeline …`): this pull request changes none."
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    job = contract_job(call.repo, call.number, head, pipelines, call.user, call.settings.api_url, stamp)
    installation = (call.payload.get("installation") or {}).get("id")
    if await JobQueue(call.store.redis, call.store.keys).enqueue(job, installation) is None:
        return f"Contract tests for `{head[:7]}` were already requested (job `{job['job_id']}`)."
    which = ", ".join(code_span(p) for p in pipelines)
    reply = (
        f"Queued contract tests of {which} at `{head[:7]}` (job `{job['job_id']}`); results will appear in this PR."
    )
    if not names:
        dependents = [p for p in await state.get_json("dependents", []) if p in pipelines]
        more = int(await state.get_json("dependents_more", 0) or 0)
        if dependents:
            reply += f" {len(dependents)} of them use a model, scheduler or shared module this pull request changes."
        if more:
            reply += (f" {more} more pipeline module{'s' if more != 1 else ''} use{'' if more != 1 else 's'} one too: "
                      "name their pipelines to test them.")  # fmt: skip
    return reply


#: every verb of `bot.commands.VERBS`, by name; unknown verbs, usage errors and permissions are checked before
VERB_HANDLERS: dict[str, Callable[[Invocation], Awaitable[str]]] = {
    "help": cmd_help,
    "review": cmd_review,
    "explain": cmd_explain,
    "fix": cmd_fix,
    "contracts": cmd_contracts,
    "ignore": cmd_ignore,
    "pause": cmd_pause,
    "resume": cmd_resume,
}


@router.register("issue_comment", action="created")
async def on_comment(event, gh, *args, store, settings, metrics, outcomes=None, **kwargs) -> None:
    from bot.handlers.pull_request import fix_pull_request, review_pull_request

    result = await run_command(
        gh, event.data, store=store, settings=settings, metrics=metrics, review=review_pull_request,
        fix=fix_pull_request, delivery=event.delivery_id or "",
    )  # fmt: skip
    log.info("comment %s: %s", event.data.get("comment", {}).get("id"), result)
    if outcomes is not None:
        outcomes.append(result)
