"""Run `/drbot …` slash commands from comments on pull requests."""

from __future__ import annotations

import json
import logging
import time

from gidgethub import BadRequest, routing

from analyzers.core import Finding, all_rules
from analyzers.render import code_span, md_escape
from bot import commands, publish
from bot.feedback import Feedback
from bot.known import KnownRegistry


log = logging.getLogger("drbot.commands")
router = routing.Router()

#: commands one user may send on one repository per window, before drbot stops answering them
RATE_LIMIT = 10
RATE_WINDOW_S = 600
WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
DOCS = "docs/rules/"


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


async def explain(code: str) -> str:
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
    lines.append(f"Documentation: [{rule.code}]({DOCS}{rule.code}.md)")
    return "\n".join(lines)


async def enqueue_contracts(
    store, repo: str, pull: dict, pipelines: tuple[str, ...], user: str, api_url: str, installation: int | None = None
) -> str:
    """Queue a contract-test job (DESIGN §6) once per PR head, suite and pipeline set; the runners consume it."""
    head = pull["head"]["sha"]
    suite = "contracts" + (":" + ",".join(sorted(pipelines)) if pipelines else "")
    job_id = f"{repo}#{pull['number']}@{head}:{suite}"
    payload = {
        "version": 1,
        "job_id": job_id,
        "repo": repo,
        "pr": pull["number"],
        "head_sha": head,
        "tarball_url": f"{api_url}/repos/{repo}/tarball/{head}",
        "pipelines": list(pipelines),
        "contracts": "all",
        "requested_by": user,
        "requested_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "timeout_s": 1800,
    }
    record = json.dumps(
        {"job_id": job_id, "repo": repo, "pr": pull["number"], "head_sha": head, "installation": installation}
    )
    if not await store.redis.set(store.keys.job(job_id), record, nx=True, ex=7 * 24 * 3600):
        return f"Contract tests for `{head[:7]}` were already requested (job `{job_id}`)."
    # runners skip (cancel) queued jobs of this PR at an older head
    await store.redis.set(store.keys.job_head(repo, pull["number"]), head, ex=7 * 24 * 3600)
    await store.redis.xadd(store.keys.jobs, {"job_id": job_id, "payload": json.dumps(payload, sort_keys=True)})
    which = ", ".join(code_span(p) for p in pipelines)
    return f"Queued contract tests of {which} at `{head[:7]}` (job `{job_id}`); results will appear in this PR."


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


async def post_reply(gh, repo: str, number: int, comment_id: int, text: str, reply_id: str | None) -> str:
    body = f"{reply_marker(comment_id)}\n{text}"
    if reply_id is not None:
        await gh.patch(f"/repos/{repo}/issues/comments/{reply_id}", data={"body": body})
        return reply_id
    created = await gh.post(f"/repos/{repo}/issues/{number}/comments", data={"body": body})
    return str(created["id"])


async def run_command(gh, payload: dict, *, store, settings, metrics, review=None) -> str:
    """Handle one comment; returns what happened (logs and tests read it). A failure releases the comment's
    once-only guard, so the queue's retry runs the command (and posts its one reply) again."""
    try:
        return await _run_command(gh, payload, store=store, settings=settings, metrics=metrics, review=review)
    except BaseException:
        comment = payload.get("comment") or {}
        repo = (payload.get("repository") or {}).get("full_name", "")
        if comment.get("id") is not None:
            await store.redis.delete(store.keys.command(repo, comment["id"]))
        raise


async def _run_command(gh, payload: dict, *, store, settings, metrics, review=None) -> str:
    comment, issue = payload["comment"], payload["issue"]
    if "pull_request" not in issue:
        return "not-a-pull-request"
    if _is_bot(comment.get("user") or {}):
        return "bot"
    command = commands.parse(comment.get("body"))
    if command is None:
        return "not-a-command"
    repo = payload["repository"]["full_name"]
    number = issue["number"]
    user = comment["user"]["login"]
    # once per comment, whatever the delivery id
    if not await store.redis.set(store.keys.command(repo, comment["id"]), "1", nx=True, ex=7 * 24 * 3600):
        return "replay"
    rate_key = store.keys.rate(repo, user)
    count = await store.redis.incr(rate_key)
    if count == 1:
        await store.redis.expire(rate_key, RATE_WINDOW_S)
    if count > RATE_LIMIT:
        if count == RATE_LIMIT + 1:  # one notice, then silence until the window ends
            await post_reply(gh, repo, number, comment["id"],
                             f"Too many drbot commands from this account; try again in {RATE_WINDOW_S // 60} minutes.", None)  # fmt: skip
        return "rate-limited"
    await gh.post(
        f"/repos/{repo}/issues/comments/{comment['id']}/reactions", data={"content": "eyes"}
    )  # received; the reply says the outcome
    if command.verb == "unknown":
        await post_reply(
            gh, repo, number, comment["id"], f"Unknown command `{command.args[0][:30]}`.\n\n{commands.HELP}", None
        )
        return "unknown"
    problem = commands.usage_error(command)
    if problem is not None:
        await post_reply(gh, repo, number, comment["id"], problem, None)
        return "usage"
    if command.needs_write and not await can_write(gh, repo, user):
        await post_reply(gh, repo, number, comment["id"],
                         f"Sorry, `/drbot {command.verb}` needs write access to this repository.", None)  # fmt: skip
        return "refused"
    state = publish.PullState(store.redis, store.keys, repo, number)
    verb = command.verb
    if verb == "help":
        text = commands.HELP
    elif verb == "explain":
        text = await explain(command.args[0])
    elif verb == "pause":
        await state.set(paused="1")
        text = "Paused: drbot will not review this pull request until `/drbot resume`."
    elif verb == "resume":
        await state.set(paused="0")
        text = "Resumed: the next push (or `/drbot review`) is reviewed."
    elif verb == "ignore":
        text = await ignore(store, repo, number, command.args[0], " ".join(command.args[1:]), user)
    elif verb == "contracts":
        pull = await gh.getitem(f"/repos/{repo}/pulls/{number}")
        installation = (payload.get("installation") or {}).get("id")
        pipelines = command.args or tuple(await state.get_json("pipelines", []))
        if not pipelines:
            text = "Name the pipelines to test (`/drbot contracts FluxPipeline …`): this pull request changes none."
        else:
            text = await enqueue_contracts(store, repo, pull, pipelines, user, settings.api_url, installation)
    else:  # review
        reply_id = await post_reply(gh, repo, number, comment["id"], "Reviewing…", None)
        pull = await gh.getitem(f"/repos/{repo}/pulls/{number}")
        event = {
            "pull_request": pull,
            "repository": payload["repository"],
            "installation": payload.get("installation"),
        }
        outcome = await review(gh, event, store=store, settings=settings, metrics=metrics)
        text = {
            "reviewed": f"Reviewed `{pull['head']['sha'][:7]}`: {outcome.new} new finding{'s' if outcome.new != 1 else ''}; the summary comment is up to date.",
            "paused": "This pull request is paused; `/drbot resume` first.",
            "skipped-draft": "This pull request is a draft; drbot reviews it once it is ready.",
            "nothing-to-review": "No Python files under the reviewed paths changed.",
        }.get(outcome.status, f"Not reviewed: {outcome.status}.")
        await post_reply(gh, repo, number, comment["id"], text, reply_id)
        return verb
    await post_reply(gh, repo, number, comment["id"], text, None)
    return verb


@router.register("issue_comment", action="created")
async def on_comment(event, gh, *args, store, settings, metrics, outcomes=None, **kwargs) -> None:
    from bot.handlers.pull_request import review_pull_request

    result = await run_command(
        gh, event.data, store=store, settings=settings, metrics=metrics, review=review_pull_request
    )
    log.info("comment %s: %s", event.data.get("comment", {}).get("id"), result)
    if outcomes is not None:
        outcomes.append(result)
