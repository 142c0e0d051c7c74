"""Review pull requests when they are opened, reopened, pushed to or marked ready."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from gidgethub import BadRequest, routing

from analyzers.core import Finding, Rule, all_rules
from analyzers.findings import actionable, by_line
from analyzers.fixes import apply_fixes, compatible, unified_diff
from analyzers.patterns import PATTERNS
from analyzers.render import SUMMARY_MARKER, Links, review_markdown
from analyzers.review import ReviewData
from bot import publish, triage, workspace
from bot.config import CONFIG_PATH, ConfigError, RepoConfig, parse_config
from bot.feedback import Feedback
from bot.github import DownloadTooLarge
from bot.known import KnownRegistry
from bot.tracking import update_tracking_issue
from engine import isolation
from engine.review import review as review_repository
from engine.review import workdir_cache, worker_modules


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


#: blobs of a head fetched at once
BLOB_FETCHES = 8
#: a head (or a new merge base) differing from the kept base in more reviewed files than this comes as a tarball
MAX_HEAD_BLOBS = 200


def base_store(settings) -> workspace.BaseStore:
    """The merge bases kept between reviews, under the App's workdir."""
    root = Path(settings.workdir or tempfile.gettempdir()) / "drbot-bases"
    return workspace.BaseStore(root, settings.max_bases_bytes)


async def _base(gh, repo: str, sha: str, scratch: Path, settings, stack: contextlib.ExitStack) -> workspace.Base:
    """The merge base `repo@sha`, leased for the review (held in `stack`): built once, from the repository's most
    recently used kept base and the blobs that differ, or from its tarball when there is none; then kept (the store
    prunes the least recently used bases past its size bound)."""
    store = base_store(settings)
    for _ in range(3):
        base = stack.enter_context(store.lease(repo, sha))
        if base is not None:
            return base
        if not await _derive_base(gh, repo, sha, scratch, settings, store):
            tarball = await fetch_tarball(gh, repo, sha, scratch / "base.tar.gz", settings.max_tarball_bytes)
            try:
                await asyncio.to_thread(store.install, repo, sha, tarball, extraction_caps(settings))
            finally:
                tarball.unlink(missing_ok=True)
        await asyncio.to_thread(store.prune, (store.directory(repo, sha),))
    raise workspace.WorkspaceError(f"the base {sha[:7]} of {repo} was removed as soon as it was unpacked")


async def _derive_base(gh, repo: str, sha: str, scratch: Path, settings, store: workspace.BaseStore) -> bool:
    """Keep `repo@sha` as a base built from the repository's most recently used base and the blobs that differ (the
    base branch moved on); False when there is none to start from, or too much changed (then its tarball it is)."""
    latest = await asyncio.to_thread(store.latest, repo)
    if latest is None:
        return False
    with store.lease(repo, latest) as source:
        if source is None:
            return False
        blobs = scratch / f"base-{sha[:12]}"
        changes = await fetch_head(gh, repo, sha, source, blobs, settings)
        if changes is None:
            return False
        await asyncio.to_thread(store.derive, repo, sha, source, changes, blobs)
    shutil.rmtree(blobs, ignore_errors=True)
    return True


async def fetch_head(
    gh, repo: str, head_sha: str, base: workspace.Base, blobs: Path, settings
) -> workspace.HeadChanges | None:
    """How the head differs from `base`, from GitHub's tree of the head commit (pinned: the tree is the commit's, and
    each blob is checked against its id), with the changed files' blobs streamed under caps into `blobs`. None when
    GitHub cut the tree short or the head changes too many files: the caller falls back to the head's tarball."""
    tree = await gh.getitem(f"/repos/{repo}/git/trees/{head_sha}?recursive=1")
    if tree.get("truncated") or not isinstance(tree.get("tree"), list):
        return None
    changes = await asyncio.to_thread(workspace.head_changes, base, tree["tree"], extraction_caps(settings))
    if len(changes.changed) > MAX_HEAD_BLOBS:
        return None
    gate = asyncio.Semaphore(BLOB_FETCHES)
    too_large: dict[str, int] = {}

    async def one(path: str, sha: str) -> None:
        target = blobs / path
        target.parent.mkdir(parents=True, exist_ok=True)
        async with gate:
            try:
                status = await gh.download(
                    f"/repos/{repo}/git/blobs/{sha}", target, settings.max_file_bytes,
                    accept="application/vnd.github.raw+json",
                )  # fmt: skip
            except DownloadTooLarge as error:
                too_large[path] = error.size or settings.max_file_bytes + 1
                return
        if status != 200:
            raise workspace.WorkspaceError(f"blob {sha[:12]} of {repo} ({path}): HTTP {status}")

    held = set((await asyncio.to_thread(base.listing)).values())  # no need to download what the base holds
    await asyncio.gather(*(one(path, sha) for path, sha in changes.changed.items() if sha not in held))
    if not too_large:
        return changes
    # left out for size, as the tarball's extraction leaves them out: absent from the head, and not reviewed
    return workspace.HeadChanges(
        {p: s for p, s in changes.changed.items() if p not in too_large},
        changes.deleted | frozenset(too_large),
        {**changes.skipped, **too_large},
    )


@dataclass(frozen=True)
class Touched:
    """The pipelines `/drbot contracts` runs when it names none: those the change defines, then (at most
    `workspace.MAX_DEPENDENTS`) those using a model, scheduler or shared module it changes; `more` counts the pipeline
    modules left past that cap."""

    pipelines: tuple[str, ...]
    dependents: tuple[str, ...]
    more: int


@dataclass(frozen=True)
class Tree:
    """A repository to review: its base and head revisions, the files left out of it for size, and a directory
    holding the head's changed files (what `workspace.pipeline_classes` reads)."""

    repo: Path
    base: str
    head: str
    skipped: Mapping[str, int]
    files: Path


async def _tree_on_base(
    gh, repo: str, merge_base: str, head_sha: str, scratch: Path, settings, stack: contextlib.ExitStack
) -> Tree | None:
    """The head built over the kept merge base from the blobs it changes; None to fall back to the tarballs."""
    base = await _base(gh, repo, merge_base, scratch, settings, stack)
    blobs = scratch / "blobs"
    changes = await fetch_head(gh, repo, head_sha, base, blobs, settings)
    if changes is None:
        return None
    repository = await asyncio.to_thread(workspace.scratch_repository, base, scratch / "repository")
    head = await asyncio.to_thread(workspace.head_commit, repository, base.commit, changes, blobs)
    return Tree(repository, base.commit, head, {**base.skipped, **changes.skipped}, blobs)


async def _tree_from_tarballs(gh, repo: str, merge_base: str, head_sha: str, scratch: Path, settings) -> Tree:
    built = await _workspace(gh, repo, merge_base, head_sha, scratch, settings)
    return Tree(built.path, "base", "head", built.skipped, built.path)


def _live_head_matches(pull: dict, head_sha: str) -> str | None:
    if pull.get("state") != "open":
        return "closed"
    if pull["head"]["sha"] != head_sha:
        return "superseded"
    return None


def stale_stop(live: dict, head_sha: str) -> Stop | None:
    """The stop of a review whose PR moved on (`live` is the PR as GitHub has it now), or None while `head_sha` is
    still its open head. The stop completes this head's check run as cancelled, saying why, where one is in progress:
    a review that stops never leaves a check run spinning."""
    status = _live_head_matches(live, head_sha)
    if status is None:
        return None
    if status == "closed":
        check = publish.CheckRun(
            "cancelled", "Not reviewed: the pull request is closed",
            f"drbot stopped reviewing `{head_sha[:7]}`: the pull request was closed.",
        )  # fmt: skip
    else:
        newer = str((live.get("head") or {}).get("sha", ""))[:7]
        check = publish.CheckRun(
            "cancelled", "Superseded by a newer push",
            f"drbot stopped reviewing `{head_sha[:7]}`: the pull request's head is now `{newer}`, which gets its "
            "own review.",
        )  # fmt: skip
    return Stop(status, check, if_in_progress=True)


async def live_stop(gh, repo: str, number: int, head_sha: str) -> Stop | None:
    """`stale_stop` against the PR as GitHub has it now (one request)."""
    return stale_stop(await gh.getitem(f"/repos/{repo}/pulls/{number}"), head_sha)


# -- the shapes of one review: gather -> Scope, Found (or Stop) -> plan_review -> ReviewPlan -> publish_review


@dataclass(frozen=True)
class Stop:
    """A review that ends before its plan: the outcome, and the check run that says why (if any)."""

    status: str
    check: publish.CheckRun | None = None
    #: write `check` only over a check run of this head that is still in progress (one this review or an earlier
    #: attempt of it started): a head drbot never started reviewing gets no check run for stopping
    if_in_progress: bool = False


@dataclass(frozen=True)
class Scope:
    """What a review analyses: the changed files it selected, and the notes the summary opens with."""

    config: RepoConfig
    changed: tuple[str, ...]  # every file the PR changes (the pipelines it touches are found among them)
    selected: frozenset[str]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Found:
    """What the gather phase read and computed for one head: everything `plan_review` decides from."""

    repo: str
    number: int
    head_sha: str
    config: RepoConfig
    rules: tuple[type[Rule], ...]
    data: ReviewData  # the analysis, with the registry's known and suppressed findings applied
    fixes_known: bool
    crossref: str  # the "Possible duplicates" section, "" when there is none
    duplicates_earlier: bool  # an earlier open PR fixes the same finding, or has the same head tree
    related: frozenset[int]  # every other open PR sharing a fix or the head tree with this one
    pipelines: tuple[str, ...]  # the pipeline classes the change touches, then those using a module it changes
    tree_sha: str | None
    labels_present: frozenset[str]
    labels_ours: frozenset[str]  # the labels drbot added to this PR before
    dependents: tuple[str, ...] = ()  # those of `pipelines` that only use a module the change touches
    dependents_more: int = 0  # pipeline modules past the cap that use one too (`workspace.MAX_DEPENDENTS`)


@dataclass(frozen=True)
class ReviewPlan:
    """Everything one review writes, decided without I/O."""

    repo: str
    number: int
    head_sha: str
    check: publish.CheckRun
    summary: str  # the sticky summary comment's body
    comments: tuple[dict, ...] | None  # the review's inline comments; None where the repository turned them off
    posted_codes: tuple[str, ...]  # the rule code of each finding the inline comments carry (metrics, feedback)
    labels: publish.LabelChanges
    fixed: tuple[Finding, ...]  # recorded with the head tree, for duplicate-fix detection
    tree_sha: str | None
    record: Mapping[str, object]  # the PR's state: `pipelines` (`/drbot contracts`), `findings` (`/drbot ignore`)
    refresh: tuple[int, ...]  # other PRs whose "Possible duplicates" section may change
    new: int


REVIEWING = publish.CheckRun(None, "Reviewing", "drbot is reviewing this change.")


def plan_scope(
    files: list[dict], config: RepoConfig, max_files: int, has_summary: bool, notes: Iterable[str] = ()
) -> Scope | Stop:
    """The changed files to analyse (a renamed file under both names), capped at `max_files`; a quiet stop when none
    is Python under the reviewed paths and there is no summary yet to bring up to date."""
    reviewable = {f["filename"] for f in files if config.reviews(f["filename"])}
    reviewable |= {f["previous_filename"] for f in files if config.reviews(f.get("previous_filename") or "")}
    if not reviewable and not has_summary:
        paths = ", ".join(f"`{p}`" for p in config.paths)
        check = publish.CheckRun("success", "Nothing to review", f"No Python files under {paths} changed.")
        return Stop("nothing-to-review", check)
    kept = [n for n in notes if n]
    selected = reviewable
    if len(reviewable) > max_files:
        selected = set(sorted(reviewable)[:max_files])
        kept.append(f"{len(reviewable):,} Python files changed; drbot reviewed the first {max_files:,}.")
    return Scope(config, tuple(f["filename"] for f in files), frozenset(selected), tuple(kept))


def plan_review(found: Found, links: Links) -> ReviewPlan:
    """What the review posts, labels and records: the check run with one annotation per changed line that new errors
    or warnings start on, the summary (new notes collapsed in it), at most 30 inline comments (one per line, naming
    every rule that reports it), drbot's labels (for the patterns of new errors and warnings), and the PR's state
    (DESIGN §8). Notes are never posted inline nor annotated: they are maintenance, documentation or feature gaps."""
    data, config = found.data, found.config
    new = actionable(data.new)
    notes = len(data.new) - len(new)
    lines = by_line(f for f in new if data.on_changed_line(f))
    body = triage.with_crossrefs(review_markdown(data, rules=found.rules, links=links), found.crossref)
    title = f"{len(new)} new finding{'s' if len(new) != 1 else ''}" if new else "No new findings"
    if notes:
        title += f" · {notes} new note{'s' if notes != 1 else ''}"
    if data.not_analysed:
        count = len(data.not_analysed)
        title += f" · {count} file{'s' if count != 1 else ''} not analysed"
    check = publish.CheckRun(
        "neutral" if new or data.not_analysed else "success", title, body.replace(SUMMARY_MARKER, "").strip(),
        tuple(publish.annotation(group, links) for group in lines),
    )  # fmt: skip
    inline = lines[: publish.MAX_INLINE_COMMENTS]
    names = {r.code: r.name for r in found.rules}
    comments = tuple(
        publish.inline_comment(group, names, links, data.notes, data.changed_lines.get(group[0].path, frozenset()))
        for group in inline
    )
    wanted = {config.pattern_label(f.pattern) for f in new if f.pattern in PATTERNS}
    wanted |= {config.fixes_known_label} if found.fixes_known else set()
    wanted |= {config.duplicate_fix_label} if found.duplicates_earlier else set()
    labels = publish.plan_labels(
        [publish.label_for(config, name) for name in wanted], set(found.labels_present), set(found.labels_ours)
    )
    # what `/drbot ignore` may name: every finding this head introduced (posted or known)
    findings = {f.fingerprint: {"code": f.code, "pattern": f.pattern, "path": f.path, "scope": f.scope,
                                "symbol": f.symbol} for f in data.comparison.new}  # fmt: skip
    return ReviewPlan(
        repo=found.repo, number=found.number, head_sha=found.head_sha, check=check, summary=body,
        comments=comments if config.inline_comments else None,
        posted_codes=tuple(f.code for group in inline for f in group),
        labels=labels, fixed=data.comparison.fixed, tree_sha=found.tree_sha,
        record={"pipelines": list(found.pipelines), "dependents": list(found.dependents),
                "dependents_more": found.dependents_more, "findings": findings},
        refresh=tuple(sorted(found.related)),
        new=len(new),
    )  # fmt: skip


# -- gather: GitHub and Redis reads, the workspace and the analysis


async def gather_scope(gh, payload: dict, state: publish.PullState, settings) -> Scope | Stop:
    """The cheap reads first: whether there is anything to review, and which files."""
    pull, repo = payload["pull_request"], payload["repository"]["full_name"]
    if pull.get("draft"):
        return Stop("skipped-draft")  # drafts are reviewed on ready_for_review
    live = await gh.getitem(f"/repos/{repo}/pulls/{pull['number']}")
    stale = stale_stop(live, pull["head"]["sha"])
    if stale:
        return stale  # a newer push has its own event in the queue
    if await state.get("paused") == "1":
        return Stop("paused")  # `/drbot pause`; `/drbot resume` lifts it
    config, config_note = await load_config(gh, repo, payload["repository"].get("default_branch", "main"))
    files, cap_note = await list_files(gh, repo, pull["number"], int(live.get("changed_files") or 0))
    has_summary = await state.get("summary_comment") is not None
    return plan_scope(files, config, settings.max_review_files, has_summary, (cap_note, config_note))


async def analyse(gh, repo: str, merge_base: str, head_sha: str, scope: Scope, rules, settings, number: int = 0):
    """The head built over the kept merge base (or both sides from tarballs: `Settings.review_state`, a head GitHub
    cuts short or one changing too many files), the rules on the selected files, and the pipelines the change touches:
    (ReviewData, pipeline classes). LimitExceeded when a tarball is past a cap. A Stop, with nothing downloaded, when
    PR `number` (0: not checked) moved on while the review waited for the process's analysis."""
    # the process's analysis workers, started once and kept warm across reviews
    pool = await asyncio.to_thread(
        isolation.shared, analysis_limits(settings), settings.analysis_workers, worker_modules()
    )
    async with _ANALYSIS:
        # reviews of one process queue here, and a push may have landed meanwhile: stop before downloading anything
        if number and (stop := await live_stop(gh, repo, number, head_sha)):
            return stop
        scratch = Path(tempfile.mkdtemp(prefix="drbot-review-", dir=settings.workdir))
        try:
            with contextlib.ExitStack() as stack:
                started = time.monotonic()
                tree = None
                if settings.review_state:
                    tree = await _tree_on_base(gh, repo, merge_base, head_sha, scratch, settings, stack)
                if tree is None:
                    tree = await _tree_from_tarballs(gh, repo, merge_base, head_sha, scratch, settings)
                built = time.monotonic()
                data, pipelines = await _analyse_tree(tree, scope, rules, settings, pool)
                log.info("%s@%s: workspace %.2f s, analysis %.2f s", repo, head_sha[:7], built - started,
                         time.monotonic() - built)  # fmt: skip
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return data, pipelines


async def _analyse_tree(tree: Tree, scope: Scope, rules, settings, pool):
    """The rules on the selected files of `tree` (with the App's result cache), and the pipelines it changes."""
    selected = scope.selected
    # files left out of the workspace for size: reported when the PR changed them, never diffed as deleted
    left_out = {
        path: isolation.size_reason(size, settings.max_file_bytes)
        for path, size in tree.skipped.items()
        if path in selected
    }
    data = await asyncio.to_thread(
        review_repository, tree.repo, tree.base, tree.head, list(rules), 1,
        lambda path: path in selected and path not in tree.skipped, pool=pool, not_analysed=left_out,
        cache=workdir_cache(settings.workdir),
    )  # fmt: skip
    deadline = time.monotonic() + settings.analysis_budget_s
    pipelines = await asyncio.to_thread(workspace.pipeline_classes, tree.files, list(scope.changed), pool, deadline)
    dependents, more = await asyncio.to_thread(
        workspace.dependent_pipelines, tree.repo, tree.head, tree.files, list(scope.changed), pool, deadline
    )
    dependents = [name for name in dependents if name not in pipelines]
    return data, Touched(tuple(pipelines) + tuple(dependents), tuple(dependents), more)


async def gather_review(gh, payload: dict, scope: Scope, state: publish.PullState, *, store, settings) -> Found | Stop:
    """The analysis, then what the registry, the other open PRs and the PR's labels say about it."""
    pull, repo = payload["pull_request"], payload["repository"]["full_name"]
    number, head_sha, config = pull["number"], pull["head"]["sha"], scope.config
    # the merge base, not the base branch's tip: what GitHub's own diff of the PR is against
    compare = await gh.getitem(f"/repos/{repo}/compare/{{base}}...{head_sha}", url_vars={"base": pull["base"]["ref"]})
    rules = tuple(r for r in all_rules() if config.rule_enabled(r.code, r.pattern))
    try:
        analysed = await analyse(
            gh, repo, compare["merge_base_commit"]["sha"], head_sha, scope, rules, settings, number
        )
    except workspace.LimitExceeded as error:
        summary = f"drbot did not review this pull request: {error}. {LIMITS_NOTE}"
        return Stop("too-large", publish.CheckRun("neutral", "Not reviewed: too large", summary))
    if isinstance(analysed, Stop):
        return replace(analysed, if_in_progress=False)  # this review's own check run is in progress
    data, pipelines = analysed
    if scope.notes:
        data = replace(data, note=" ".join(scope.notes))
    # a push that landed while we analysed makes this review stale: publish nothing but the end of this head's
    # check run (the newer event reviews the new head)
    stale = await live_stop(gh, repo, number, head_sha)
    if stale:
        return replace(stale, if_in_progress=False)
    found = await triage.apply_registry(store, repo, data)
    triage.describe_fix_notes(found)
    commits = compare.get("commits") or []
    tree_sha = commits[-1]["commit"]["tree"]["sha"] if commits else None
    fixed = triage.fix_entries(list(found.data.comparison.fixed))
    crossref, earlier, related = await triage.crossrefs_of(store, repo, number, fixed, tree_sha)
    present, ours = await publish.current_labels(gh, repo, number, state)
    return Found(
        repo=repo, number=number, head_sha=head_sha, config=config, rules=rules, data=found.data,
        fixes_known=bool(found.fixes_known), crossref=crossref, duplicates_earlier=bool(earlier),
        related=frozenset(related), pipelines=pipelines.pipelines, dependents=pipelines.dependents,
        dependents_more=pipelines.more, tree_sha=tree_sha, labels_present=frozenset(present),
        labels_ours=frozenset(ours),
    )  # fmt: skip


# -- publish: writes only


async def publish_stop(gh, repo: str, state: publish.PullState, head_sha: str, stop: Stop) -> Outcome:
    if stop.check is not None:
        if not stop.if_in_progress or await publish.check_run_in_progress(gh, repo, state, head_sha):
            await publish.upsert_check_run(gh, repo, state, head_sha, stop.check)
    return Outcome(stop.status)


async def publish_review(
    gh, store, metrics, state: publish.PullState, plan: ReviewPlan, config: RepoConfig
) -> Outcome:
    """Write a plan: the fixes it records, the check run, the summary, the review, labels, the PR's state, and the
    "Possible duplicates" sections of the PRs it is related to."""
    repo, number, head_sha = plan.repo, plan.number, plan.head_sha
    await triage.record_fixes(store, state, repo, number, list(plan.fixed), plan.tree_sha)
    await publish.upsert_check_run(gh, repo, state, head_sha, plan.check)
    summary = await publish.upsert_summary(gh, repo, number, state, plan.summary)
    review = "disabled"
    if plan.comments is not None:
        review = await publish.post_review(gh, repo, number, head_sha, plan.comments)
    if review == "posted":
        for code in plan.posted_codes:
            metrics.findings_posted.labels(code).inc()
        await Feedback(store.redis, store.keys).posted_many(list(plan.posted_codes))
    await publish.apply_labels(gh, repo, number, state, plan.labels)
    await state.set(head=head_sha)
    for field, value in plan.record.items():
        await state.set_json(field, value)
    for other in plan.refresh:
        await refresh_crossrefs(gh, store, repo, other, config)
    added = tuple(label.name for label in plan.labels.add)
    return Outcome("reviewed", plan.new, summary, review, added, plan.labels.remove)


async def review_pull_request(gh, payload: dict, *, store, settings, metrics) -> Outcome:
    """Review one pull request event: gather (reads, the workspace, the analysis) -> a pure plan -> publish (writes).
    Every write is idempotent, so a retry or a replay is safe."""
    pull, repo = payload["pull_request"], payload["repository"]["full_name"]
    head_sha = pull["head"]["sha"]
    state = publish.PullState(store.redis, store.keys, repo, pull["number"])
    scope = await gather_scope(gh, payload, state, settings)
    if isinstance(scope, Stop):
        return await publish_stop(gh, repo, state, head_sha, scope)
    # the one write before the plan: the analysis takes a while, and the check run says it is under way
    await publish.upsert_check_run(gh, repo, state, head_sha, REVIEWING)
    found = await gather_review(gh, payload, scope, state, store=store, settings=settings)
    if isinstance(found, Stop):
        return await publish_stop(gh, repo, state, head_sha, found)
    return await publish_review(gh, store, metrics, state, plan_review(found, settings.links()), scope.config)


async def fix_pull_request(gh, payload: dict, *, store, settings) -> str:
    """`/drbot fix`: the fixes of the PR's new findings, as one unified diff collapsed in the reply. The analysis is the
    review's (reads only: nothing is published); the head's files are read at the head sha; drbot never pushes."""
    pull, repo = payload["pull_request"], payload["repository"]["full_name"]
    state = publish.PullState(store.redis, store.keys, repo, pull["number"])
    scope = await gather_scope(gh, payload, state, settings)
    if isinstance(scope, Stop):
        return FIX_STOPS.get(scope.status, f"No fixes: {scope.status}.")
    found = await gather_review(gh, payload, scope, state, store=store, settings=settings)
    if isinstance(found, Stop):
        return FIX_STOPS.get(found.status, f"No fixes: {found.status}.")
    head_sha = found.head_sha
    fixable = [f for f in found.data.new if f.fix is not None]
    if not fixable:
        return f"None of the new findings of `{head_sha[:7]}` has a mechanical fix."
    diffs, applied = [], 0
    for path in sorted({f.path for f in fixable}):
        file = publish.repo_path(path)
        content = await gh.getitem(f"/repos/{repo}/contents/{{+path}}?ref={head_sha}", url_vars={"path": file})
        if not content.get("content") and content.get("size"):  # over 1 MB the contents API leaves it to the blob
            content = await gh.getitem(f"/repos/{repo}/git/blobs/{content['sha']}")
        text = base64.b64decode(content["content"]).decode("utf-8")
        chosen = compatible([f for f in fixable if f.path == path])
        applied += len(chosen)
        diffs.append(unified_diff(file, text, apply_fixes(text, chosen)))
    return publish.fix_reply(head_sha, "".join(diffs), applied, len(fixable))


#: what `/drbot fix` says when there is nothing to analyse
FIX_STOPS = {
    "paused": "This pull request is paused; `/drbot resume` first.",
    "skipped-draft": "This pull request is a draft; drbot reviews it once it is ready.",
    "nothing-to-review": "No Python files under the reviewed paths changed.",
}


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
    present, ours = await publish.current_labels(gh, repo, number, state)
    wanted = (ours - {config.duplicate_fix_label}) | ({config.duplicate_fix_label} if earlier else set())
    labels = publish.plan_labels([publish.label_for(config, name) for name in wanted], present, ours)
    await publish.apply_labels(gh, repo, number, state, labels)
    if body == comment["body"]:
        return "unchanged"
    await gh.patch(f"/repos/{repo}/issues/comments/{comment_id}", data={"body": body})
    return "edited"


async def close_pull_request(gh, payload: dict, *, store, settings, metrics) -> dict:
    """A closed PR leaves the duplicate-fix sets; a merged one marks the known findings it fixed as fixed, records
    the findings it brought in as open, and then brings the tracking issue's section up to date."""
    pull = payload["pull_request"]
    repo = payload["repository"]["full_name"]
    number = pull["number"]
    state = publish.PullState(store.redis, store.keys, repo, number)
    _, _, related = await triage.crossrefs(store, state, repo, number)
    fixed = await triage.forget_pull(store, state, repo, number)
    marked = added = 0
    if pull.get("merged"):
        registry = KnownRegistry(store.redis, store.keys, repo)
        entries = await registry.get_many([item["fp"] for item in fixed])
        for fp, entry in entries.items():
            if entry.get("status") != "fixed":
                await registry.update(fp, status="fixed", fixed_by=number)
                marked += 1
        added = await registry.record_added(await state.get_json("findings", {}), number)
    config, _ = await load_config(gh, repo, payload["repository"].get("default_branch", "main"))
    for other in sorted(related):
        await refresh_crossrefs(gh, store, repo, other, config)
    tracking = "off"
    if config.tracking_issue is not None and (marked or added):
        tracking = await update_tracking_issue(gh, store, repo, config.tracking_issue)
    return {"fixed_known": marked, "added_known": added, "refreshed": sorted(related), "tracking": tracking}


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


async def give_up_review(gh, payload: dict, error: BaseException, *, store, attempts: int) -> None:
    """The review of this head failed on its last attempt: complete its check run, if one is in progress, as neutral,
    saying so (the reason's details stay in the logs and the dead letter, for the operators). Best effort: a failure
    here is logged and the event still goes to the dead letters."""
    try:
        repo, pull = payload["repository"]["full_name"], payload["pull_request"]
        state = publish.PullState(store.redis, store.keys, repo, pull["number"])
        head_sha = pull["head"]["sha"]
        if not await publish.check_run_in_progress(gh, repo, state, head_sha):
            return
        summary = (
            f"drbot could not review this head: the review failed {attempts} times ({type(error).__name__}). "
            "A maintainer can try again with `/drbot review`; the operators find the error under "
            "`drbot dead-letters list`."
        )
        await publish.upsert_check_run(gh, repo, state, head_sha, publish.CheckRun("neutral", "Not reviewed: failed",
                                                                                   summary))  # fmt: skip
    except Exception as failure:  # noqa: BLE001 - reported; the dead letter is what matters now
        log.warning("could not complete the check run of a failed review: %s: %s", type(failure).__name__, failure)


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
