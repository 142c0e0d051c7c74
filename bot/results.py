"""Contract results back in the PR: accept a runner's result only for an outstanding job, from the runner that
claimed it, for the head the job names; show it as the `drbot contracts` check run and a summary section.

Everything in a result is untrusted data (the runner ran the pull request's own code): it is schema-checked,
size-capped and rendered inside code spans, so no mention, link, reference or HTML from it reaches GitHub.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass

from analyzers.patterns import META_ISSUE_URL
from analyzers.render import replace_marked
from bot import publish
from bot.store import RECORD_TTL_S, PullLock
from common.streams import Entry, Poison, StreamConsumer


log = logging.getLogger("drbot.results")
GROUP = "bot"
JOBS_GROUP = "runners"
CHECK_NAME = "drbot contracts"
START, END = "<!-- drbot:contracts -->", "<!-- drbot:contracts:end -->"
ICONS = {"passed": "✅", "failed": "❌", "skipped": "⏭️", "error": "⚠️"}

STATUSES = frozenset({"passed", "failed", "error", "timeout", "limit", "cancelled"})
OUTCOMES = frozenset({"passed", "failed", "skipped", "error"})
LIMITS = frozenset({"wall_time", "cpu_time", "memory", "output", "processes", "file_size", "scratch"})
RUNNER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CONTRACT_CODE = re.compile(r"^DRC\d{3}$")
#: the most a result may weigh, and the most of each part drbot keeps
MAX_RESULT_BYTES = 512 * 1024
MAX_ROWS = 2000
MAX_MESSAGE = 1000
MAX_LOG_TAIL = 4000


class Rejected(Exception):
    """A result that changes nothing (unknown job, not the claiming runner, another head, a replay)."""


def untrusted(text: object, limit: int = 300) -> str:
    """Untrusted text as one Markdown code span: GitHub renders no mention, link, issue reference or HTML inside
    one. The fence is longer than any run of backticks in the text; newlines and control characters become
    spaces; `|` is escaped so a table cell stays one cell."""
    value = re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", str(text)).strip()
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    if not value:
        return ""
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {value.replace('|', chr(92) + '|')} {fence}"


def log_block(text: str) -> str:
    """A runner log as a fenced block that nothing inside can close (no backticks survive)."""
    return "```text\n" + text.replace("`", "'") + "\n```"


def validate(raw: bytes, job: dict) -> dict:
    """The result as drbot keeps it, or Poison naming what is wrong. Unknown fields are dropped."""
    if len(raw) > MAX_RESULT_BYTES:
        raise Poison(f"result over {MAX_RESULT_BYTES} bytes ({len(raw)})")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise Poison(f"result is not JSON ({type(error).__name__})") from None
    if not isinstance(data, dict):
        raise Poison("result is not a JSON object")
    if data.get("version") != 1:
        raise Poison(f"unsupported result version {str(data.get('version'))[:20]!r}")
    if data.get("job_id") != job["job_id"]:
        raise Rejected("the result names another job")
    if data.get("head_sha") != job["head_sha"]:
        raise Rejected("the result is for another head than the job's")
    status = data.get("status")
    if status not in STATUSES:
        raise Poison(f"unknown status {str(status)[:20]!r}")
    rows = data.get("results", [])
    if not isinstance(rows, list) or len(rows) > MAX_ROWS:
        raise Poison(f"results is not a list of at most {MAX_ROWS} rows")
    clean_rows = []
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise Poison(f"results[{n}] is not an object")
        pipeline, contract, outcome = row.get("pipeline"), row.get("contract"), row.get("outcome")
        pattern, duration = row.get("pattern"), row.get("duration_s", 0)
        if not isinstance(pipeline, str) or not 0 < len(pipeline) <= 200:
            raise Poison(f"results[{n}].pipeline is missing or not a short string")
        if not isinstance(contract, str) or not CONTRACT_CODE.match(contract):
            raise Poison(f"results[{n}].contract is not a DRCnnn code")
        if outcome not in OUTCOMES:
            raise Poison(f"results[{n}].outcome is not one of {sorted(OUTCOMES)}")
        if not isinstance(pattern, int) or isinstance(pattern, bool) or not 1 <= pattern <= 10:
            raise Poison(f"results[{n}].pattern is not a #13656 pattern number")
        if not isinstance(duration, (int, float)) or isinstance(duration, bool):
            raise Poison(f"results[{n}].duration_s is not a number")
        message = row.get("message", "")
        clean_rows.append({
            "pipeline": pipeline, "contract": contract, "pattern": pattern, "outcome": outcome,
            "message": str(message)[:MAX_MESSAGE], "duration_s": float(duration),
        })  # fmt: skip
    runner = data.get("runner", {})
    runner = (
        {k: str(v)[:100] for k, v in runner.items() if k in ("host", "device", "torch", "diffusers")}
        if isinstance(runner, dict)
        else {}
    )
    limit = data.get("limit")
    return {
        "version": 1, "job_id": job["job_id"], "head_sha": job["head_sha"], "status": status, "results": clean_rows,
        "runner": runner, "limit": limit if limit in LIMITS else None,
        "log_tail": str(data.get("log_tail", ""))[-MAX_LOG_TAIL:],
    }  # fmt: skip


def render_section(result: dict) -> str:
    """The summary's contract section: per pipeline x contract, failures first, each linked to its pattern."""
    rows = sorted(result.get("results", []), key=lambda r: (r["outcome"] != "failed", r["pipeline"], r["contract"]))
    runner = result.get("runner", {})
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("passed", "failed", "skipped", "error")}
    status = result["status"] + (f" ({result['limit'].replace('_', ' ')} limit)" if result.get("limit") else "")
    on = ", ".join(
        f"{name} {untrusted(runner[key], 60)}"
        for key, name in (("device", "on"), ("diffusers", "diffusers"), ("torch", "torch"))
        if runner.get(key)
    )
    head = f"### Contract tests: {status}\n\n{', '.join(f'{v} {k}' for k, v in counts.items())}" + (
        f"; {on}." if on else "."
    )
    lines = [START, head, ""]
    if rows:
        lines += ["| pipeline | contract | pattern | outcome | message |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| {untrusted(r['pipeline'], 100)} | {r['contract']} | [{r['pattern']}]({META_ISSUE_URL}) | "
                f"{ICONS.get(r['outcome'], '')} {r['outcome']} | {untrusted(r.get('message', ''))} |"
            )
    if result["status"] in ("timeout", "error", "limit") and result.get("log_tail"):
        lines += [
            "",
            "<details><summary>runner log</summary>",
            "",
            log_block(result["log_tail"][-2000:]),
            "</details>",
        ]
    lines += ["", END, ""]
    return "\n".join(lines)


def with_section(body: str, section: str) -> str:
    # the section ends in a newline after its end marker, as it did when drbot wrote it into the body
    replaced = replace_marked(body, START, END, section.removesuffix("\n"))
    if replaced is not None:
        return replaced
    marker = "<sub>drbot checks"
    index = body.rfind(marker)
    return body[:index] + section + body[index:] if index != -1 else body + section


async def publish_result(gh, store, job: dict, result: dict) -> None:
    """Write one job's result: the `drbot contracts` check run on its head sha and the summary section."""
    repo, number, head = job["repo"], job["pr"], job["head_sha"]
    rows = result.get("results", [])
    failed = [r for r in rows if r["outcome"] == "failed"]
    conclusion = {"passed": "success", "failed": "failure", "timeout": "timed_out", "limit": "failure"}.get(
        result["status"], "neutral"
    )
    section = render_section(result)
    if failed:
        title = f"{len(failed)} contract{'s' if len(failed) != 1 else ''} failed"
    elif result["status"] == "limit":
        title = f"Stopped at the {(result.get('limit') or 'resource').replace('_', ' ')} limit"
    else:
        title = f"Contracts {result['status']}"
    if result["status"] == "passed" and not any(r["outcome"] == "passed" for r in rows):
        conclusion, title = "neutral", "No contract ran (no tiny pipeline for what this PR touches)"
    await gh.post(
        f"/repos/{repo}/check-runs",
        data={
            "name": CHECK_NAME,
            "head_sha": head,
            "status": "completed",
            "conclusion": conclusion,
            "external_id": job["job_id"][:255],
            "output": {"title": title[:255], "summary": section.replace(START, "").replace(END, "")[:65535]},
        },
    )
    # the summary is read, changed and written back: under the PR's lock, so a review of a new push (which
    # rewrites the summary around this section) and this edit never overwrite each other
    async with PullLock(store.redis, store.keys.pr_lock(repo, number)):
        state = publish.PullState(store.redis, store.keys, repo, number)
        comment_id = await state.get("summary_comment")
        if comment_id is None:
            return
        comment = await gh.getitem(f"/repos/{repo}/issues/comments/{comment_id}")
        body = with_section(comment["body"], section)
        if body != comment["body"]:
            await gh.patch(f"/repos/{repo}/issues/comments/{comment_id}", data={"body": body})


@dataclass(frozen=True)
class Notice:
    """A results-stream entry: which runner says it finished which job (the job's own stream entry id)."""

    job_id: str
    runner: str
    job_entry: str

    @classmethod
    def parse(cls, entry: Entry) -> Notice:
        job_id = entry.get("job_id").decode("utf-8", "replace")
        runner = entry.get("runner").decode("utf-8", "replace")
        job_entry = entry.get("job_entry").decode("utf-8", "replace")
        if not 0 < len(job_id) <= 1024 or not RUNNER_NAME.match(runner) or not re.match(r"^\d+-\d+$", job_entry):
            raise Poison("malformed result notice (job_id, runner, job_entry)")
        return cls(job_id, runner, job_entry)


def runner_of(consumer: str) -> str:
    """Runner consumers are named `{runner}/{instance}`; the runner part is its Redis ACL user."""
    return consumer.split("/", 1)[0]


class ResultConsumer:
    """Group `bot` on `drbot:results`, on the one stream mechanism of `common.streams`. A result is published at
    most once per job, only when it passes `accept`; malformed ones go to the dead letters, never retried."""

    def __init__(self, store, client_for, *, max_attempts: int = 5, visibility_timeout_s: float = 60.0) -> None:
        self.store = store
        self.client_for = client_for  # async (installation id, repo, permissions) -> GitHub client
        self.consumer = StreamConsumer(
            store.redis, store.keys.results, GROUP, dead=store.keys.dead, visibility_timeout_s=visibility_timeout_s,
            max_attempts=max_attempts,
        )  # fmt: skip
        self.outcomes: list[str] = []  # what happened to each notice (logs and tests read it)

    async def accept(self, notice: Notice) -> tuple[dict, dict]:
        """The job and its validated result, or Rejected/Poison. Checks, in order: the job is one drbot queued
        and not yet reported; the entry is that job's; the runner holds the job's claim now; the result sits in
        that runner's own keys; it names the job and its head; it fits the schema and the size caps."""
        redis, keys = self.store.redis, self.store.keys
        raw_job = await redis.get(keys.job(notice.job_id))
        if raw_job is None:
            raise Rejected("no such job")
        job = json.loads(raw_job)
        if await redis.exists(keys.job_done(notice.job_id)):
            raise Rejected("the job was reported already")
        if job.get("entry") != notice.job_entry:
            raise Rejected("the notice names another stream entry than the job's")
        pending = await redis.xpending_range(
            keys.jobs, JOBS_GROUP, min=notice.job_entry, max=notice.job_entry, count=1
        )
        if not pending or runner_of(_text(pending[0]["consumer"])) != notice.runner:
            raise Rejected(f"runner {notice.runner!r} does not hold the job's claim")
        raw = await redis.get(keys.runner_result(notice.runner, notice.job_id))
        if raw is None:
            raise Rejected("the runner wrote no result for the job")
        return job, validate(raw, job)

    async def handle(self, entry: Entry) -> str:
        notice = Notice.parse(entry)
        redis, keys = self.store.redis, self.store.keys
        try:
            job, result = await self.accept(notice)
        except Rejected as why:
            log.warning("result of job %s from %s dropped: %s", notice.job_id[:200], notice.runner, why)
            self.outcomes.append(f"rejected: {why}")
            return "done"
        except Poison as why:
            # the claiming runner sent something unusable: the PR hears so, the result goes to the dead letters
            job = json.loads(await redis.get(keys.job(notice.job_id)))
            result = {"version": 1, "job_id": job["job_id"], "head_sha": job["head_sha"], "status": "error",
                      "results": [], "runner": {}, "limit": None,
                      "log_tail": f"drbot could not use the runner's result: {why}"}  # fmt: skip
            await self._publish_once(job, result, notice)
            self.outcomes.append(f"poison: {why}")
            raise
        if result["status"] == "cancelled":
            await redis.set(keys.job_done(notice.job_id), "cancelled", ex=RECORD_TTL_S)
            await self._release_job(notice)
            self.outcomes.append("cancelled")
            return "done"
        await self._publish_once(job, result, notice)
        self.outcomes.append(f"published: {result['status']}")
        return "done"

    async def _publish_once(self, job: dict, result: dict, notice: Notice) -> None:
        redis, keys = self.store.redis, self.store.keys
        # one publisher per job, across bot replicas; released again when publishing fails, so a retry can
        if not await redis.set(keys.job_done(job["job_id"]), "publishing", nx=True, ex=600):
            raise Rejected("another consumer is publishing this job")
        try:
            gh = await self.client_for(job["installation"], job["repo"], RESULT_PERMISSIONS)
            await publish_result(gh, self.store, job, result)
        except BaseException:
            await redis.delete(keys.job_done(job["job_id"]))
            raise
        await redis.set(keys.job_done(job["job_id"]), f"done {time.time():.0f}", ex=RECORD_TTL_S)
        await self._release_job(notice)

    async def _release_job(self, notice: Notice) -> None:
        """The job is finished: acknowledge its entry for the runner that held it."""
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.store.keys.jobs, JOBS_GROUP, notice.job_entry)
            pipe.xdel(self.store.keys.jobs, notice.job_entry)
            await pipe.execute()

    async def _handle(self, entry: Entry) -> str:
        try:
            return await self.handle(entry)
        except Rejected as why:  # raised by _publish_once on a concurrent publisher
            self.outcomes.append(f"rejected: {why}")
            return "done"

    async def run_burst(self, consumer: str = "results-burst") -> int:
        return await self.consumer.run_burst(self._handle, consumer)

    async def run(self, stop, consumer: str = "results") -> None:
        """Publish results as they arrive until `stop` is set; a failed publish is retried, a malformed result
        goes to the dead letters."""
        await self.consumer.run(self._handle, consumer, stop)


#: what publishing a result needs of an installation token (a check run, and the summary comment)
RESULT_PERMISSIONS = {"checks": "write", "issues": "write", "metadata": "read"}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
