"""Contract results back in the PR: consume `drbot:results` and show them as the `drbot contracts` check run and
a section of the summary comment."""

from __future__ import annotations

import json
import logging
import re

from redis.exceptions import ResponseError

from analyzers.patterns import META_ISSUE_URL
from analyzers.render import code_span, md_escape
from bot import publish


log = logging.getLogger("drbot.results")
GROUP = "bot"
CHECK_NAME = "drbot contracts"
START, END = "<!-- drbot:contracts -->", "<!-- drbot:contracts:end -->"
_SECTION = re.compile(re.escape(START) + r".*?" + re.escape(END) + r"\n?", re.S)
ICONS = {"passed": "✅", "failed": "❌", "skipped": "⏭️", "error": "⚠️"}


def render_section(result: dict) -> str:
    """The summary's contract section: per pipeline x contract, failures first, each linked to its pattern."""
    rows = sorted(result.get("results", []), key=lambda r: (r["outcome"] != "failed", r["pipeline"], r["contract"]))
    runner = result.get("runner", {})
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("passed", "failed", "skipped", "error")}
    head = (f"### Contract tests: {result['status']}\n\n{', '.join(f'{v} {k}' for k, v in counts.items())} "
            f"on {md_escape(str(runner.get('device', '?')))} (diffusers {md_escape(str(runner.get('diffusers', '?')))}, "
            f"torch {md_escape(str(runner.get('torch', '?')))}).")  # fmt: skip
    lines = [START, head, ""]
    if rows:
        lines += ["| pipeline | contract | pattern | outcome | message |", "|---|---|---|---|---|"]
        for r in rows:
            message = md_escape(r.get("message", "")).replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(
                f"| {code_span(r['pipeline'])} | {r['contract']} | [{r['pattern']}]({META_ISSUE_URL}) | "
                f"{ICONS.get(r['outcome'], '')} {r['outcome']} | {message} |"
            )
    if result["status"] in ("timeout", "error") and result.get("log_tail"):
        lines += [
            "",
            "<details><summary>runner log</summary>",
            "",
            "```",
            result["log_tail"][-2000:].replace("```", "'''"),
            "```",
            "</details>",
        ]
    lines += ["", END, ""]
    return "\n".join(lines)


def with_section(body: str, section: str) -> str:
    if START in body:
        return _SECTION.sub(lambda _: section, body, count=1)
    marker = "<sub>drbot checks"
    index = body.rfind(marker)
    return body[:index] + section + body[index:] if index != -1 else body + section


async def publish_result(gh, store, job: dict, result: dict) -> None:
    """Write one job's result: the `drbot contracts` check run on its head sha and the summary section."""
    repo, number, head = job["repo"], job["pr"], job["head_sha"]
    failed = [r for r in result.get("results", []) if r["outcome"] == "failed"]
    conclusion = {"passed": "success", "failed": "failure", "timeout": "timed_out"}.get(result["status"], "neutral")
    section = render_section(result)
    title = (
        f"{len(failed)} contract{'s' if len(failed) != 1 else ''} failed"
        if failed
        else f"Contracts {result['status']}"
    )
    if result["status"] == "passed" and not any(r["outcome"] == "passed" for r in result.get("results", [])):
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
    state = publish.PullState(store.redis, store.keys, repo, number)
    comment_id = await state.get("summary_comment")
    if comment_id is None:
        return
    comment = await gh.getitem(f"/repos/{repo}/issues/comments/{comment_id}")
    body = with_section(comment["body"], section)
    if body != comment["body"]:
        await gh.patch(f"/repos/{repo}/issues/comments/{comment_id}", data={"body": body})


class ResultConsumer:
    """Group `bot` on `drbot:results`; each result is published once, then acknowledged."""

    def __init__(self, store, client_for) -> None:
        self.store = store
        self.client_for = client_for  # async (installation id) -> GitHub client
        self.stream = store.keys.results

    async def ensure_group(self) -> None:
        try:
            await self.store.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def handle(self, fields) -> None:
        result = json.loads(fields[b"payload"])
        raw = await self.store.redis.get(self.store.keys.job(result["job_id"]))
        if raw is None or not raw.startswith(b"{"):
            log.warning("result of unknown job %s dropped", result["job_id"])
            return
        job = json.loads(raw)
        gh = await self.client_for(job["installation"])
        await publish_result(gh, self.store, job, result)

    async def run_burst(self, consumer: str = "results-burst") -> int:
        await self.ensure_group()
        handled = 0
        while True:
            reply = await self.store.redis.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=10)
            entries = [e for _, batch in reply or [] for e in batch]
            if not entries:
                return handled
            for message_id, fields in entries:
                await self.handle(fields)
                await self.store.redis.xack(self.stream, GROUP, message_id)
                handled += 1

    async def run(self, stop, consumer: str = "results") -> None:
        """Publish results as they arrive until `stop` is set; a failed publish is retried (left pending)."""
        import asyncio

        from redis.exceptions import RedisError

        await self.ensure_group()
        while not stop.is_set():
            try:
                _, claimed, _ = await self.store.redis.xautoclaim(
                    self.stream, GROUP, consumer, min_idle_time=60_000, start_id="0-0", count=10
                )
                entries = [e for e in claimed if e[1] is not None]
                if not entries:
                    reply = await self.store.redis.xreadgroup(
                        GROUP, consumer, {self.stream: ">"}, count=10, block=1000
                    )
                    entries = [e for _, batch in reply or [] for e in batch]
                for message_id, fields in entries:
                    try:
                        await self.handle(fields)
                    except Exception as error:  # noqa: BLE001 - retried after the claim timeout
                        log.warning("publishing result %s failed: %s", message_id, error)
                        continue
                    await self.store.redis.xack(self.stream, GROUP, message_id)
            except (RedisError, OSError) as error:
                log.warning("redis unavailable (%s); retrying", error)
                await asyncio.sleep(1)
