"""Review pull requests when they are opened, reopened, pushed to or marked ready."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from gidgethub import BadRequest, routing

from analyzers.core import all_rules
from analyzers.render import Links, review_markdown
from bot import publish, triage, workspace
from bot.config import CONFIG_PATH, ConfigError, RepoConfig, parse_config
from bot.feedback import Feedback
from bot.github import DownloadTooLarge
from bot.known import KnownRegistry
from engine import isolation
from engine.review import review as review_repository
from engine.review import worker_modules


log = logging.getLogger("drbot.pull_request")
router = routing.Router()
#: one workspace and analysis at a time per process: reviews share the process's analysis workers, and the disk a
#: workspace takes stays bounded by the extraction caps (scale with processes)
_ANALYSIS = asyncio.Lock()

#: what a review needs of an installation token: code and config (contents), files and the review
#: (pull_requests), the summary comment and labels (issues), the check run (checks)
PERMISSIONS = {"contents": "read", "pull_requests": "write", "issues": "write", "checks": "write", "metadata": "read"}
#: GitHub lists at most this many files of a pull request
GITHUB_FILE_CAP = 3000
PER_PAGE = 100


@dataclass(frozen=True)
class Outcome:
    """What one review did (logs and tests read it)."""

    status: str  # reviewed, skipped-draft, superseded, closed, paused, nothing-to-review, too-large
    new: int = 0
    summary: str = ""
    review: str = ""
    labels_added: tuple[str, ...] = ()
    labels_removed: tuple[str, ...] = ()


async def load_config(gh, repo: str, default_branch: str) -> tuple[RepoConfig, str]:
    """`.github/drbot.yml` from the default branch; (config, note) where a broken file gives the defaults."""
    try:
        text = await gh.getitem(
            f"/repos/{repo}/contents/{CONFIG_PATH}?ref={{ref}}",
            url_vars={"ref": default_branch},
            accept="application/vnd.github.raw",
        )
    except BadRequest as error:
        if error.status_code.value == 404:
            return RepoConfig(), ""
        raise
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", "replace")
    if isinstance(text, dict):  # a server that ignored the raw media type
        import base64

        text = base64.b64decode(text.get("content", "")).decode("utf-8", "replace")
    try:
        return parse_config(text), ""
    except ConfigError as error:
        return RepoConfig(), f"{error}; the defaults were used"


async def list_files(gh, repo: str, number: int, changed_files: int) -> tuple[list[dict], str]:
    """The PR's files: at most 30 pages of 100 (GitHub lists no more than 3,000), and a note when cut."""
    files: list[dict] = []
    async for item in gh.getiter(f"/repos/{repo}/pulls/{number}/files?per_page={PER_PAGE}"):
        files.append(item)
        if len(files) >= GITHUB_FILE_CAP:
            break
    note = ""
    if changed_files > len(files):
        note = (
            f"This pull request changes {changed_files:,} files; GitHub lists only the first {len(files):,}, "
            "so drbot reviewed those."
        )
    return files, note


async def fetch_tarball(gh, repo: str, sha: str, path: Path, max_bytes: int) -> Path:
    """Stream the tarball of `repo@sha` to the file `path`; one over `max_bytes` is final (LimitExceeded)."""
    try:
        status = await gh.download(f"/repos/{repo}/tarball/{sha}", path, max_bytes)
    except DownloadTooLarge:
        message = f"the tarball of {sha[:7]} is over the {isolation.human_size(max_bytes)} download limit"
        raise workspace.LimitExceeded(message) from None
    if status != 200:
        raise workspace.WorkspaceError(f"tarball of {repo}@{sha[:7]}: HTTP {status}")
    return path


LIMITS_NOTE = (
    "The limits are the App's `DRBOT_MAX_TARBALL_BYTES`, `DRBOT_MAX_EXTRACT_BYTES` and `DRBOT_MAX_EXTRACT_FILES`."
)


def analysis_limits(settings) -> isolation.Limits:
    return isolation.Limits(
        timeout_s=settings.analysis_timeout_s,
        memory_bytes=settings.analysis_memory_bytes,
        max_file_bytes=settings.max_file_bytes,
        max_tasks=settings.analysis_max_tasks,
        budget_s=settings.analysis_budget_s,
    )


def extraction_caps(settings) -> workspace.Caps:
    return workspace.Caps(settings.max_extract_bytes, settings.max_extract_files, settings.max_file_bytes)


async def _workspace(gh, repo: str, merge_base: str, head_sha: str, scratch: Path, settings) -> workspace.Workspace:
    """Download both tarballs into `scratch` and build the repository there (LimitExceeded past a cap)."""
    base_tar = await fetch_tarball(gh, repo, merge_base, scratch / "base.tar.gz", settings.max_tarball_bytes)
    head_tar = await fetch_tarball(gh, repo, head_sha, scratch / "head.tar.gz", settings.max_tarball_bytes)
    try:
        return await asyncio.to_thread(workspace.build, base_tar, head_tar, scratch, extraction_caps(settings))
    finally:
        base_tar.unlink(missing_ok=True)
        head_tar.unlink(missing_ok=True)


def _live_head_matches(pull: dict, head_sha: str) -> str | None:
    if pull.get("state") != "open":
        return "closed"
    if pull["head"]["sha"] != head_sha:
        return "superseded"
    return None


async def review_pull_request(gh, payload: dict, *, store, settings, metrics) -> Outcome:
    """Review one pull request event end to end; every write is idempotent, so a retry or a replay is safe."""
    pull = payload["pull_request"]
    repo = payload["repository"]["full_name"]
    number = pull["number"]
    head_sha = pull["head"]["sha"]
    if pull.get("draft"):
        return Outcome("skipped-draft")
    live = await gh.getitem(f"/repos/{repo}/pulls/{number}")
    stale = _live_head_matches(live, head_sha)
    if stale:
        return Outcome(stale)  # a newer push has its own event in the queue
    state = publish.PullState(store.redis, store.keys, repo, number)
    if await state.get("paused") == "1":
        return Outcome("paused")  # `/drbot pause`; `/drbot resume` lifts it
    config, config_note = await load_config(gh, repo, payload["repository"].get("default_branch", "main"))
    files, cap_note = await list_files(gh, repo, number, int(live.get("changed_files") or 0))
    reviewable = [f["filename"] for f in files if config.reviews(f["filename"])]
    reviewable += [
        f["previous_filename"] for f in files if f.get("previous_filename") and config.reviews(f["previous_filename"])
    ]
    if not reviewable and await state.get("summary_comment") is None:
        await publish.upsert_check_run(
            gh, repo, state, head_sha, conclusion="success", title="Nothing to review",
            summary=f"No Python files under {', '.join(f'`{p}`' for p in config.paths)} changed.",
        )  # fmt: skip
        return Outcome("nothing-to-review")
    notes = [n for n in (cap_note, config_note) if n]
    selected = set(reviewable)
    if len(files) and len({p for p in reviewable}) > settings.max_review_files:
        selected = set(sorted(reviewable)[: settings.max_review_files])
        notes.append(
            f"{len(set(reviewable)):,} Python files changed; drbot reviewed the first {settings.max_review_files:,}."
        )
    await publish.upsert_check_run(
        gh, repo, state, head_sha, conclusion=None, title="Reviewing", summary="drbot is reviewing this change."
    )
    # the merge base, not the base branch's tip: what GitHub's own diff of the PR is against
    compare = await gh.getitem(f"/repos/{repo}/compare/{{base}}...{head_sha}", url_vars={"base": pull["base"]["ref"]})
    merge_base = compare["merge_base_commit"]["sha"]
    rules = [r for r in all_rules() if config.rule_enabled(r.code, r.pattern)]
    # the process's analysis workers, started once and kept warm across reviews
    pool = await asyncio.to_thread(
        isolation.shared, analysis_limits(settings), settings.analysis_workers, worker_modules()
    )
    async with _ANALYSIS:
        scratch = Path(tempfile.mkdtemp(prefix="drbot-review-", dir=settings.workdir))
        try:
            try:
                tree = await _workspace(gh, repo, merge_base, head_sha, scratch, settings)
            except workspace.LimitExceeded as error:
                await publish.upsert_check_run(
                    gh, repo, state, head_sha, conclusion="neutral", title="Not reviewed: too large",
                    summary=f"drbot did not review this pull request: {error}. {LIMITS_NOTE}",
                )  # fmt: skip
                return Outcome("too-large")
            # files left out of the workspace for size: reported when the PR changed them, never diffed as deleted
            left_out = {
                path: isolation.size_reason(size, settings.max_file_bytes)
                for path, size in tree.skipped.items()
                if path in selected
            }
            data = await asyncio.to_thread(
                review_repository, tree.path, "base", "head", rules, 1,
                lambda path: path in selected and path not in tree.skipped, pool=pool, not_analysed=left_out,
            )  # fmt: skip
            deadline = time.monotonic() + settings.analysis_budget_s
            touched_pipelines = await asyncio.to_thread(
                workspace.pipeline_classes, tree.path, [f["filename"] for f in files], pool, deadline
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if notes:
        data = replace(data, note=" ".join(notes))

    # a push that landed while we analysed makes this review stale: publish nothing, the newer event will
    live = await gh.getitem(f"/repos/{repo}/pulls/{number}")
    stale = _live_head_matches(live, head_sha)
    if stale:
        return Outcome(stale)

    found = await triage.apply_registry(store, repo, data)
    triage.describe_fix_notes(found)
    data = found.data
    commits = compare.get("commits") or []
    tree_sha = commits[-1]["commit"]["tree"]["sha"] if commits else None
    await triage.record_fixes(store, state, repo, number, list(data.comparison.fixed), tree_sha)
    crossref, earlier, related = await triage.crossrefs(store, state, repo, number)

    links = Links()
    by_code = {r.code: r for r in rules}
    new_on_lines = [f for f in data.new if data.on_changed_line(f)]
    annotations = [publish.annotation(f, links) for f in new_on_lines]
    body = triage.with_crossrefs(review_markdown(data, rules=rules, links=links), crossref)
    new = data.new
    title = f"{len(new)} new finding{'s' if len(new) != 1 else ''}" if new else "No new findings"
    if data.not_analysed:
        count = len(data.not_analysed)
        title += f" · {count} file{'s' if count != 1 else ''} not analysed"
    await publish.upsert_check_run(
        gh, repo, state, head_sha, conclusion="neutral" if new or data.not_analysed else "success", title=title,
        summary=body.replace(publish.SUMMARY_MARKER, "").strip(), annotations=annotations,
    )  # fmt: skip
    summary = await publish.upsert_summary(gh, repo, number, state, body)
    review_status = "disabled"
    if config.inline_comments:
        comments = [
            {
                "path": publish.repo_path(f.path),
                "line": f.line,
                "side": "RIGHT",
                "body": publish.inline_body(
                    f, by_code[f.code].name if f.code in by_code else f.code, links, data.notes.get(f.fingerprint, "")
                ),
            }  # fmt: skip
            for f in new_on_lines[: publish.MAX_INLINE_COMMENTS]
        ]
        review_status = await publish.post_review(gh, repo, number, head_sha, comments)
        if review_status == "posted":
            for f in new_on_lines[: publish.MAX_INLINE_COMMENTS]:
                metrics.findings_posted.labels(f.code).inc()
    if review_status == "posted":
        await Feedback(store.redis, store.keys).posted_many(
            [f.code for f in new_on_lines[: publish.MAX_INLINE_COMMENTS]]
        )
    patterns = {f.pattern for f in new if f.pattern in range(1, 11)}
    wanted = {config.pattern_label(p) for p in patterns}
    specs = publish.pattern_label_specs(config, patterns)
    if found.fixes_known:
        wanted.add(config.fixes_known_label)
        specs[config.fixes_known_label] = ("0e8a16", "This pull request fixes a finding drbot already knew about")
    if earlier:
        wanted.add(config.duplicate_fix_label)
        specs[config.duplicate_fix_label] = ("e99695", "Another open pull request fixes the same finding")
    added, removed = await publish.sync_labels(gh, repo, number, state, wanted, specs)
    await state.set(head=head_sha)
    await state.set_json("pipelines", touched_pipelines)  # what `/drbot contracts` runs by default
    # what `/drbot ignore` may name: every finding this head introduced (posted or known)
    await state.set_json(
        "findings",
        {f.fingerprint: {"code": f.code, "pattern": f.pattern, "path": f.path, "scope": f.scope, "symbol": f.symbol}
         for f in data.comparison.new},
    )  # fmt: skip
    for other in sorted(related):
        await refresh_crossrefs(gh, store, repo, other, config)
    return Outcome("reviewed", len(new), summary, review_status, tuple(sorted(added)), tuple(sorted(removed)))


async def refresh_crossrefs(gh, store, repo: str, number: int, config: RepoConfig) -> str:
    """Bring another PR's "Possible duplicates" section (and its duplicate label) up to date."""
    state = publish.PullState(store.redis, store.keys, repo, number)
    comment_id = await state.get("summary_comment")
    if comment_id is None:
        return "no-summary"
    section, earlier, _ = await triage.crossrefs(store, state, repo, number)
    try:
        comment = await gh.getitem(f"/repos/{repo}/issues/comments/{comment_id}")
    except BadRequest:
        return "gone"
    body = triage.with_crossrefs(comment["body"], section)
    ours = set(await state.get_json("labels", []))
    wanted = (ours - {config.duplicate_fix_label}) | ({config.duplicate_fix_label} if earlier else set())
    specs = {config.duplicate_fix_label: ("e99695", "Another open pull request fixes the same finding")}
    await publish.sync_labels(gh, repo, number, state, wanted, specs)
    if body == comment["body"]:
        return "unchanged"
    await gh.patch(f"/repos/{repo}/issues/comments/{comment_id}", data={"body": body})
    return "edited"


async def close_pull_request(gh, payload: dict, *, store, settings, metrics) -> dict:
    """A closed PR leaves the duplicate-fix sets; a merged one marks the known findings it fixed as fixed."""
    pull = payload["pull_request"]
    repo = payload["repository"]["full_name"]
    number = pull["number"]
    state = publish.PullState(store.redis, store.keys, repo, number)
    _, _, related = await triage.crossrefs(store, state, repo, number)
    fixed = await triage.forget_pull(store, state, repo, number)
    marked = 0
    if pull.get("merged"):
        registry = KnownRegistry(store.redis, store.keys, repo)
        entries = await registry.get_many([item["fp"] for item in fixed])
        for fp, entry in entries.items():
            if entry.get("status") != "fixed":
                await registry.update(fp, status="fixed", fixed_by=number)
                marked += 1
    config, _ = await load_config(gh, repo, payload["repository"].get("default_branch", "main"))
    for other in sorted(related):
        await refresh_crossrefs(gh, store, repo, other, config)
    return {"fixed_known": marked, "refreshed": sorted(related)}


@router.register("pull_request", action="closed")
async def on_closed(event, gh, *args, store, settings, metrics, outcomes=None, **kwargs) -> None:
    result = await close_pull_request(gh, event.data, store=store, settings=settings, metrics=metrics)
    if outcomes is not None:
        outcomes.append(result)


MAX_HEADS = 100


async def record_head(store, payload: dict) -> None:
    """Remember the PR's head with GitHub's time for it (`created_at` when opened, else `updated_at`, the push):
    `/drbot contracts` runs only the head a maintainer's comment was written after (DESIGN §7)."""
    pull = payload["pull_request"]
    sha = pull["head"]["sha"]
    since = pull.get("created_at") if payload.get("action") == "opened" else pull.get("updated_at")
    state = publish.PullState(store.redis, store.keys, payload["repository"]["full_name"], pull["number"])
    heads = await state.get_json("heads", [])
    if since and all(known != sha for known, _ in heads):
        await state.set_json("heads", (heads + [[sha, since]])[-MAX_HEADS:])


@router.register("pull_request", action="opened")
@router.register("pull_request", action="reopened")
@router.register("pull_request", action="synchronize")
@router.register("pull_request", action="ready_for_review")
async def on_pull_request(event, gh, *args, store, settings, metrics, outcomes=None, **kwargs) -> None:
    await record_head(store, event.data)
    outcome = await review_pull_request(gh, event.data, store=store, settings=settings, metrics=metrics)
    log.info("%s#%s: %s", event.data["repository"]["full_name"], event.data["pull_request"]["number"], outcome)
    if outcomes is not None:
        outcomes.append(outcome)
