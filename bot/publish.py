"""What drbot writes on a pull request: the check run, the sticky summary comment, one review, labels.

Every write is idempotent: ids live in the PR's Redis hash, the summary comment is found by its marker when
the hash lost it, the review carries a marker with the head sha, and labels drbot did not add stay.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from gidgethub import BadRequest, GitHubException

from analyzers.core import Finding
from analyzers.findings import Edit, most_severe
from analyzers.patterns import PATTERNS, pattern_title
from analyzers.render import ANNOTATION_LEVELS, MAX_BODY, SUMMARY_MARKER, Links, md_escape
from bot.config import PATTERN_COLOURS, RepoConfig
from bot.store import Keys
from common.streams import as_text


log = logging.getLogger("drbot.publish")

CHECK_NAME = "drbot"
MAX_ANNOTATIONS_PER_REQUEST = 50
MAX_INLINE_COMMENTS = 30
CHECK_TEXT_LIMIT = 65_535


def review_marker(head_sha: str) -> str:
    return f"<!-- drbot:review {head_sha} -->"


def repo_path(finding_path: str) -> str:
    """`diffusers/x.py` -> `src/diffusers/x.py` (the repository's layout); `tests/…` stays."""
    return finding_path if finding_path.startswith("tests/") else f"src/{finding_path}"


class PullState:
    """The PR's hash `drbot:pr:{owner/repo}:{n}`: comment and check-run ids, labels drbot added."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, repo: str, number: int) -> None:
        self.redis, self.key = redis, keys.pr(repo, number)
        self.labels_key = keys.labels(repo)  # the repository's labels drbot knows exist (`apply_labels`)

    async def get(self, field: str) -> str | None:
        value = await self.redis.hget(self.key, field)
        return None if value is None else as_text(value)

    async def set(self, **fields: object) -> None:
        await self.redis.hset(self.key, mapping={k: str(v) for k, v in fields.items()})

    async def get_json(self, field: str, default):
        raw = await self.get(field)
        return default if raw is None else json.loads(raw)

    async def set_json(self, field: str, value) -> None:
        await self.redis.hset(self.key, field, json.dumps(value))


def annotation(findings: Sequence[Finding], links: Links) -> dict:
    """One check-run annotation for the findings that start on one line (`analyzers.findings.by_line`): every rule
    named, at the most severe of their levels."""
    first = findings[0]
    codes = ", ".join(f.code for f in findings)
    patterns = " · ".join(pattern_title(p) for p in dict.fromkeys(f.pattern for f in findings))
    return {
        "path": repo_path(first.path),
        "start_line": first.line,
        "end_line": first.line,
        "annotation_level": ANNOTATION_LEVELS[most_severe(findings)],
        "title": f"{codes} ({patterns})"[:255],
        "message": "\n\n".join(
            f"{f.code} ({f.severity}): {f.message}\nDocs: {links.rule(f.code)}" if len(findings) > 1
            else f"{f.message}\nDocs: {links.rule(f.code)}"
            for f in findings
        ),
    }  # fmt: skip


def inline_body(findings: Sequence[Finding], names: Mapping[str, str], links: Links, notes: Mapping[str, str]) -> str:
    """One inline comment for the findings that start on one line: each rule's code, name, severity, message and
    docs link, then the patterns they belong to, then the remarks (`notes`, by fingerprint) the review adds."""
    parts = [
        f"**{f.code}** `{names.get(f.code, f.code)}` ({f.severity}): {md_escape(f.message)} "
        f"([docs]({links.rule(f.code)}))"
        for f in findings
    ]
    patterns = ", ".join(pattern_title(p) for p in dict.fromkeys(f.pattern for f in findings))
    parts.append(f"{patterns}, huggingface/diffusers#13656")
    parts += [f"_{md_escape(notes[f.fingerprint])}_" for f in findings if notes.get(f.fingerprint)]
    return "\n\n".join(parts)


def suggestion_for(findings: Sequence[Finding], changed: frozenset[int]) -> tuple[Finding, Edit] | None:
    """The fix an inline comment on these findings (which start on one line) can offer as a GitHub `suggestion`: the
    first one that is a single edit of lines that hold the comment's line and that the PR changed (GitHub places a
    comment on the diff's lines only, and a suggestion replaces the commented lines and nothing else)."""
    line = findings[0].line
    for finding in findings:
        fix = finding.fix
        if fix is None or len(fix.edits) != 1:
            continue
        edit = fix.edits[0]
        if edit.line <= line <= edit.end_line and all(n in changed for n in range(edit.line, edit.end_line + 1)):
            return finding, edit
    return None


def suggestion_block(text: str) -> str:
    """A ```suggestion block that replaces the commented lines with `text` (whole lines; empty deletes them), fenced
    with more backticks than any run in `text`."""
    fence = "```"
    while fence in text:
        fence += "`"
    body = text if not text or text.endswith("\n") else text + "\n"
    return f"{fence}suggestion\n{body}{fence}"


def inline_comment(
    findings: Sequence[Finding],
    names: Mapping[str, str],
    links: Links,
    notes: Mapping[str, str],
    changed: frozenset[int] = frozenset(),
) -> dict:
    """The review comment (GitHub's `comments[]` item) for the findings that start on one line: on that line, or on
    the lines a fix replaces when one of them has a fix that `suggestion_for` can offer, with its suggestion."""
    comment: dict = {"path": repo_path(findings[0].path), "line": findings[0].line, "side": "RIGHT"}
    body = inline_body(findings, names, links, notes)
    offered = suggestion_for(findings, changed)
    if offered is not None:
        finding, edit = offered
        assert finding.fix is not None
        body += f"\n\nFix ({finding.code}): {md_escape(finding.fix.description)}.\n\n{suggestion_block(edit.text)}"
        comment["line"] = edit.end_line
        if edit.line != edit.end_line:
            comment.update(start_line=edit.line, start_side="RIGHT")
    comment["body"] = body
    return comment


#: room the reply keeps for its words around the diff (GitHub's body limit is 65,536 characters)
FIX_REPLY_MARGIN = 1_000


def fix_reply(head_sha: str, diff: str, applied: int, fixable: int) -> str:
    """`/drbot fix`'s reply: the diff collapsed in `<details>`, cut at a file boundary (or a line) to fit a comment."""
    limit = MAX_BODY - FIX_REPLY_MARGIN
    fence = "```"
    while fence in diff:
        fence += "`"
    cut = ""
    if len(diff) > limit:
        end = diff.rfind("\ndiff --git", 0, limit)
        end = end if end > 0 else diff.rfind("\n--- ", 0, limit)
        end = end if end > 0 else diff.rfind("\n", 0, limit)
        diff, cut = diff[: end + 1], " The diff is cut short here: run `drbot fix` on a checkout for all of it."
    files = diff.count("\n+++ ") + diff.startswith("+++ ")
    waiting = fixable - applied
    later = (
        f" {waiting} more fix{'es' if waiting != 1 else ''} overlap{'s' if waiting == 1 else ''} these: `drbot fix` "
        "applies them in a second pass."
        if waiting
        else ""
    )
    return (
        f"Fixes of the new findings of `{head_sha[:7]}`: {applied} fix{'es' if applied != 1 else ''} in "
        f"{files} file{'s' if files != 1 else ''}.{later}{cut} Apply them with `git apply` (or run `drbot fix` on "
        "your checkout); drbot never pushes to your branch.\n\n"
        f"<details><summary>the diff</summary>\n\n{fence}diff\n{diff}{fence}\n\n</details>"
    )


@dataclass(frozen=True)
class CheckRun:
    """The `drbot` check run of a head sha; no conclusion means in progress."""

    conclusion: str | None
    title: str
    summary: str
    annotations: tuple[dict, ...] = ()


async def upsert_check_run(gh, repo: str, state: PullState, head_sha: str, check: CheckRun) -> int:
    """Create the head sha's check run once, then update it; annotations go 50 per request."""
    field = f"check:{head_sha}"
    check_id = await state.get(field)
    output = {"title": check.title[:255], "summary": check.summary[:CHECK_TEXT_LIMIT]}
    body: dict = {"name": CHECK_NAME, "head_sha": head_sha, "output": output}
    conclusion = check.conclusion
    body.update({"status": "completed", "conclusion": conclusion} if conclusion else {"status": "in_progress"})
    annotations = check.annotations
    batches = [list(annotations[i : i + MAX_ANNOTATIONS_PER_REQUEST]) for i in range(0, len(annotations), 50)]
    if check_id is None:
        first = {**body, "output": {**output, "annotations": batches[0]}} if batches else body
        created = await gh.post(f"/repos/{repo}/check-runs", data=first)
        check_id = str(created["id"])
        await state.set(**{field: check_id})
        batches = batches[1:]
    else:
        update = {k: v for k, v in body.items() if k != "head_sha"}
        if batches:
            update["output"] = {**output, "annotations": batches[0]}
            batches = batches[1:]
        await gh.patch(f"/repos/{repo}/check-runs/{check_id}", data=update)
    for batch in batches:
        await gh.patch(f"/repos/{repo}/check-runs/{check_id}", data={"output": {**output, "annotations": batch}})
    return int(check_id)


async def check_run_in_progress(gh, repo: str, state: PullState, head_sha: str) -> bool:
    """Whether drbot's check run of `head_sha` exists and is not completed (a review of that head started and never
    finished: it crashed, or is being retried)."""
    check_id = await state.get(f"check:{head_sha}")
    if check_id is None:
        return False
    try:
        run = await gh.getitem(f"/repos/{repo}/check-runs/{check_id}")
    except BadRequest as error:
        if error.status_code.value == 404:
            return False
        raise
    return run.get("status") != "completed"


async def _find_summary_comment(gh, repo: str, number: int) -> dict | None:
    async for comment in gh.getiter(f"/repos/{repo}/issues/{number}/comments?per_page=100"):
        if (comment.get("body") or "").startswith(SUMMARY_MARKER) and comment.get("user", {}).get("type") == "Bot":
            return comment
    return None


async def upsert_summary(gh, repo: str, number: int, state: PullState, body: str) -> str:
    """Edit the sticky summary comment in place, create it once, leave it alone when unchanged.

    Returns `created`, `edited` or `unchanged`."""
    comment_id = await state.get("summary_comment")
    current: dict | None = None
    if comment_id is not None:
        try:
            current = await gh.getitem(f"/repos/{repo}/issues/comments/{comment_id}")
        except BadRequest as error:
            if error.status_code.value != 404:
                raise
            current = None  # deleted by a maintainer: post a new one
    if current is None:
        current = await _find_summary_comment(gh, repo, number)
    if current is not None:
        await state.set(summary_comment=current["id"])
        if current.get("body") == body:
            return "unchanged"
        await gh.patch(f"/repos/{repo}/issues/comments/{current['id']}", data={"body": body})
        return "edited"
    created = await gh.post(f"/repos/{repo}/issues/{number}/comments", data={"body": body})
    await state.set(summary_comment=created["id"])
    return "created"


async def post_review(
    gh, repo: str, number: int, head_sha: str, comments: Sequence[dict], summary_url: str | None = None
) -> str:
    """One review (event COMMENT) with the inline comments, once per head sha.

    Returns `posted`, `exists` (a replay), `none` (nothing to say) or `rejected` (GitHub answered 422: a line
    is not in the diff; the summary comment already lists every finding, so nothing is lost)."""
    if not comments:
        return "none"
    marker = review_marker(head_sha)
    async for review in gh.getiter(f"/repos/{repo}/pulls/{number}/reviews?per_page=100"):
        if marker in (review.get("body") or ""):
            return "exists"
    body = f"{marker}\ndrbot found {len(comments)} new finding{'s' if len(comments) != 1 else ''} on changed lines"
    body += " (the summary comment has the rest)." if summary_url is None else f"; summary: {summary_url}"
    try:
        await gh.post(
            f"/repos/{repo}/pulls/{number}/reviews",
            data={"commit_id": head_sha, "event": "COMMENT", "body": body, "comments": list(comments)},
        )
    except BadRequest as error:
        if error.status_code.value == 422:
            log.warning("review on %s#%s rejected (422): %s; summary only", repo, number, error)
            return "rejected"
        raise
    return "posted"


async def ensure_label(gh, repo: str, name: str, colour: str, description: str) -> None:
    try:
        await gh.getitem(f"/repos/{repo}/labels/{{name}}", url_vars={"name": name})
    except BadRequest as error:
        if error.status_code.value != 404:
            raise
        try:
            await gh.post(f"/repos/{repo}/labels", data={"name": name, "color": colour, "description": description})
        except BadRequest as created:
            if created.status_code.value != 422:  # 422: created meanwhile by another worker
                raise


@dataclass(frozen=True)
class Label:
    """A label drbot adds, with the colour and description it creates the repository's label with."""

    name: str
    colour: str
    description: str


def drbot_labels(config: RepoConfig) -> dict[str, Label]:
    """Every label drbot may add, by its configured name (DESIGN §8): one per pattern, the fixes-known label and the
    duplicate-fix label. The one place their colours and descriptions are written."""
    labels = [
        *(
            Label(config.pattern_label(p), PATTERN_COLOURS.get(p, "ededed"), config.label_description(p))
            for p in PATTERNS
        ),
        Label(config.fixes_known_label, "0e8a16", "This pull request fixes a finding drbot already knew about"),
        Label(config.duplicate_fix_label, "e99695", "Another open pull request fixes the same finding"),
    ]
    return {label.name: label for label in labels}


def label_for(config: RepoConfig, name: str) -> Label:
    return drbot_labels(config).get(name, Label(name, "ededed", "drbot"))


@dataclass(frozen=True)
class LabelChanges:
    """What drbot does to a PR's labels: add some (creating them when missing), remove some it added, and the set of
    labels it added that it remembers afterwards."""

    add: tuple[Label, ...] = ()
    remove: tuple[str, ...] = ()
    ours: tuple[str, ...] = ()


def plan_labels(wanted: Iterable[Label], present: set[str], ours: set[str]) -> LabelChanges:
    """Add what drbot wants now and is not there; remove what drbot added before and no longer wants. A label a
    person put on (even one drbot would add) stays theirs: drbot remembers only what it added itself."""
    by_name = {label.name: label for label in wanted}
    add = tuple(by_name[name] for name in sorted(by_name.keys() - present))
    remove = tuple(sorted((ours - by_name.keys()) & present))
    return LabelChanges(add, remove, tuple(sorted((ours | {label.name for label in add}) - set(remove))))


async def current_labels(gh, repo: str, number: int, state: PullState) -> tuple[set[str], set[str]]:
    """The PR's labels now, and those drbot added."""
    ours = set(await state.get_json("labels", []))
    try:
        present = {label["name"] async for label in gh.getiter(f"/repos/{repo}/issues/{number}/labels?per_page=100")}
    except GitHubException:
        present = set()
    return present, ours


#: how long drbot trusts that a label it made sure of still exists (a deleted one is recreated on a failed add)
LABELS_TTL_S = 7 * 24 * 3600


async def _ensure_labels(gh, repo: str, state: PullState, labels: Iterable[Label], known: set[str]) -> None:
    """Make sure each label exists in the repository, asking GitHub only about those not already known to; remember
    the ones made sure of, per repository."""
    for label in labels:
        if label.name in known:
            continue
        await ensure_label(gh, repo, label.name, label.colour, label.description)
        await state.redis.sadd(state.labels_key, label.name)
        known.add(label.name)
    await state.redis.expire(state.labels_key, LABELS_TTL_S)


async def apply_labels(gh, repo: str, number: int, state: PullState, changes: LabelChanges) -> None:
    """Add and remove a PR's labels. drbot's labels are created once per repository: a label it made sure of before
    is added without asking, and only an add GitHub refuses (404 or 422: the label was deleted meanwhile) makes it
    create them again."""
    if changes.add:
        known = {as_text(name) for name in await state.redis.smembers(state.labels_key)}
        await _ensure_labels(gh, repo, state, changes.add, known)
        names = [label.name for label in changes.add]
        try:
            await gh.post(f"/repos/{repo}/issues/{number}/labels", data={"labels": names})
        except BadRequest as error:
            if error.status_code.value not in (404, 422):
                raise
            await state.redis.srem(state.labels_key, *names)
            await _ensure_labels(gh, repo, state, changes.add, set())
            await gh.post(f"/repos/{repo}/issues/{number}/labels", data={"labels": names})
    for name in changes.remove:
        try:
            await gh.delete(f"/repos/{repo}/issues/{number}/labels/{{name}}", url_vars={"name": name})
        except BadRequest as error:
            if error.status_code.value != 404:
                raise
    await state.set_json("labels", list(changes.ours))
