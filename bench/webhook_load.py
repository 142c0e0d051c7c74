"""The App under load: webhook acknowledgement latency at a fixed rate, and reviews per minute per worker process.

Part 1, intake. A `drbot serve --web-only` subprocess (real Redis, a key prefix of its own, removed afterwards)
receives signed deliveries of GitHub's real example payloads (`pull_request` of several actions, `issue_comment`,
as the tests build them: about 25 kB each) at `--rate` per second for `--duration` seconds, from an open-loop sender
on loopback: request i is due at t0 + i / rate whatever the earlier ones are doing, and its latency runs from that
due time to the end of the answer, so a stall of the server shows as the latency of every request due during it
(no coordinated omission). A share of the deliveries (`--duplicates`) is sent again with the same delivery id, as
GitHub redelivers, a few milliseconds to two seconds after the first copy. Checked afterwards: every distinct
delivery was answered 202 exactly once, every copy 200 "duplicate", and the stream holds each delivery id exactly
once, each `delivery:{id}` mark naming the entry of its id (nothing consumes the stream in this part).

Part 2, reviews. `--reviews` pull requests are opened on a small world in the suite's fake GitHub (the installed
diffusers' DDPM and unCLIP pipeline files; each PR adds an ignored `eta` argument, one finding), their `opened`
events are delivered to a `--web-only` intake, and 1, then 2 `drbot serve --worker-only` processes (4 consumers
each, the default; write pacing off) consume them; timed from the first delivery until every PR has its summary
comment, with the content writes per review counted (what the 1 s write pacing of production turns into a cap per
installation). Each phase has its own key prefix and work directory (so its analysis cache starts empty), and starts
the clock only when every worker's consumers are registered in the group.

Run: `.venv/bin/python bench/webhook_load.py [--rate 200] [--duration 60] [--reviews 48] [--record]`
(`--duration 5` for a quick run; `--no-reviews` or `--no-intake` for one part).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import redis  # noqa: E402
from fakegithub import FakeGitHub, delivery, issue_comment_payload, pull_request_payload  # noqa: E402
from served import Served  # noqa: E402

from bot.store import EVENTS_GROUP, Keys  # noqa: E402


REPO = "huggingface/diffusers"
SECRET = "bench-secret"
REDIS_URL = "redis://127.0.0.1:6379/0"
TARGET_P99_MS = 50.0
COPY_SPREAD = 400  # a redelivery follows its first copy by 1 to this many requests
PR_ACTIONS = ("opened", "synchronize", "reopened", "labeled", "closed", "ready_for_review", "assigned")
COMMENTS = ("/drbot help", "/drbot review", "looks good to me", "/drbot explain DRB201")
DDPM = "src/diffusers/pipelines/ddpm/pipeline_ddpm.py"
UNCLIP = "src/diffusers/pipelines/stable_diffusion/pipeline_stable_unclip_img2img.py"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- part 1: intake ---------------------------------------------------------------------------------------------


@dataclass
class Request:
    delivery: str
    headers: dict
    body: bytes
    copy: bool  # a redelivery of an id sent before
    together: bool = False  # sent at the same moment as the request before it (its first copy)


@dataclass
class Sent:
    latencies_ms: list[float] = field(default_factory=list)
    answers: list[tuple[str, int, str]] = field(default_factory=list)  # delivery, status, "status" field
    errors: list[str] = field(default_factory=list)
    sender_lag_ms: list[float] = field(default_factory=list)  # how late the sender issued each request
    first_answered: dict[str, float] = field(default_factory=dict)  # delivery -> when its first copy was answered
    copies_due: list[tuple[str, float]] = field(default_factory=list)  # delivery, when its copy was sent


def deliveries(count: int, duplicates: float, seed: int = 13) -> list[Request]:
    """`count` requests: distinct signed deliveries of real payloads, with about `duplicates` of them being copies
    (same delivery id and body) of one sent 1 to COPY_SPREAD requests earlier."""
    rng = random.Random(seed)
    templates = []
    for i, action in enumerate(PR_ACTIONS):
        templates.append(("pull_request", pull_request_payload(REPO, 100 + i, action)))
    for i, text in enumerate(COMMENTS):
        templates.append(("issue_comment", issue_comment_payload(REPO, 200 + i, text)))
    requests: list[Request] = []
    copies: dict[int, list[Request]] = {}
    while len(requests) < count:
        for copy in copies.pop(len(requests), []):
            requests.append(copy)
        if len(requests) >= count:
            break
        event, payload = templates[rng.randrange(len(templates))]
        payload = dict(payload, number=rng.randrange(1, 10_000))  # each body differs, as real ones do
        headers, body = delivery(event, json.dumps(payload).encode(), SECRET)
        request = Request(headers["X-GitHub-Delivery"], headers, body, False)
        requests.append(request)
        if rng.random() < duplicates:
            if rng.random() < 0.25:  # both copies at once: the intake's atomic check decides which is queued
                requests.append(replace(request, copy=True, together=True))
            else:
                copies.setdefault(len(requests) + rng.randrange(1, COPY_SPREAD), []).append(
                    replace(request, copy=True)
                )
    return requests[:count]


async def send_all(url: str, requests: list[Request], rate: float) -> tuple[Sent, float]:
    """Send the requests `rate` a second on a fixed schedule (open loop: a twin copy goes with its first copy) and
    record each one's latency from its due time."""
    import aiohttp

    sent = Sent()
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=30)
    loop = asyncio.get_running_loop()

    async def one(request: Request, due: float) -> None:
        try:
            async with session.post(url, data=request.body, headers=request.headers) as response:
                answer = await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            sent.errors.append(f"{request.delivery}: {type(error).__name__} {error}")
            sent.latencies_ms.append((loop.time() - due) * 1000)
            return
        sent.latencies_ms.append((loop.time() - due) * 1000)
        if request.copy:
            sent.copies_due.append((request.delivery, due))
        else:
            sent.first_answered[request.delivery] = loop.time()  # the first copy's answer (a twin may come first)
        try:
            kind = json.loads(answer).get("status", "")
        except ValueError:
            kind = ""
        sent.answers.append((request.delivery, status, kind))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        t0 = loop.time() + 0.2
        slot = -1
        for request in requests:
            slot += 0 if request.together else 1
            due = t0 + slot / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.sender_lag_ms.append(max(0.0, loop.time() - due) * 1000)
            tasks.append(asyncio.create_task(one(request, due)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - t0
    return sent, elapsed


def check_queue(client: redis.Redis, keys: Keys, distinct: set[str]) -> dict:
    """What the stream holds against the distinct delivery ids sent: each exactly once, each mark naming its entry."""
    seen: dict[str, list[str]] = {}
    start = "-"
    while True:
        batch = client.xrange(keys.events, min=start, max="+", count=500)
        for raw_id, fields in batch:
            seen.setdefault(fields[b"delivery"].decode(), []).append(raw_id.decode())
        if len(batch) < 500:
            break
        start = "(" + batch[-1][0].decode()
    twice = {d: ids for d, ids in seen.items() if len(ids) > 1}
    missing = distinct - seen.keys()
    unexpected = seen.keys() - distinct
    ids = sorted(distinct)
    wrong_marks = 0
    for i in range(0, len(ids), 1000):
        chunk = ids[i : i + 1000]
        for delivery_id, mark in zip(chunk, client.mget([keys.delivery(d) for d in chunk]), strict=True):
            if mark is None or [mark.decode()] != seen.get(delivery_id):
                wrong_marks += 1
    return {"entries": sum(len(v) for v in seen.values()), "queued_twice": len(twice), "missing": len(missing),
            "unexpected": len(unexpected), "wrong_marks": wrong_marks}  # fmt: skip


def remove_prefix(client: redis.Redis, prefix: str) -> None:
    batch = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def measure_intake(github, rate: float, duration: float, duplicates: float) -> dict:
    requests = deliveries(int(rate * duration), duplicates)
    distinct = {r.delivery for r in requests}
    copies = sum(r.copy for r in requests)
    prefix = f"drbot-bench-load-{uuid.uuid4().hex[:8]}:"
    keys = Keys(prefix)
    client = redis.Redis.from_url(REDIS_URL)
    with tempfile.TemporaryDirectory(prefix="drbot-load-") as tmp:
        web = Served(github, SECRET, log=Path(tmp) / "web.log", args=("--web-only",), DRBOT_KEY_PREFIX=prefix)
        try:
            web.start()
            print(f"intake: {len(requests)} requests ({len(distinct)} deliveries, {copies} copies) at {rate:g}/s",
                  flush=True)  # fmt: skip
            load_before = os.getloadavg()[0]
            sent, elapsed = asyncio.run(send_all(f"{web.url}/webhook", requests, rate))
            load_after = os.getloadavg()[0]
            assert web.process.poll() is None, f"drbot serve --web-only died:\n{web.output()}"
            queue = check_queue(client, keys, distinct)
        finally:
            remove_prefix(client, prefix)
            web.stop()
            client.close()
    accepted: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for delivery_id, status, kind in sent.answers:
        statuses[f"{status} {kind}".strip()] = statuses.get(f"{status} {kind}".strip(), 0) + 1
        if status == 202:
            accepted[delivery_id] = accepted.get(delivery_id, 0) + 1
    exactly_once = (
        not sent.errors
        and set(accepted) == distinct
        and set(accepted.values()) == {1}
        and statuses.get("200 duplicate", 0) == copies
        and queue["entries"] == len(distinct)
        and not (queue["queued_twice"] or queue["missing"] or queue["unexpected"] or queue["wrong_marks"])
    )
    latencies = sent.latencies_ms
    in_flight = sum(due < sent.first_answered.get(d, float("inf")) for d, due in sent.copies_due)
    return {
        "load": (load_before, load_after), "copies_in_flight": in_flight,
        "copies_together": sum(r.together for r in requests), "copy_gap_ms": (1000 / rate, COPY_SPREAD * 1000 / rate),
        "rate": rate, "duration": duration, "requests": len(requests), "distinct": len(distinct), "copies": copies,
        "achieved_rate": len(requests) / elapsed, "p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99), "p999": percentile(latencies, 99.9), "max": max(latencies),
        "mean": statistics.fmean(latencies), "sender_lag_max": max(sent.sender_lag_ms), "statuses": statuses,
        "errors": sent.errors[:5], "error_count": len(sent.errors), "queue": queue, "exactly_once": exactly_once,
    }  # fmt: skip


# -- part 2: reviews per minute per worker ----------------------------------------------------------------------


def consumers_by_process(client: redis.Redis, keys: Keys) -> dict[str, int]:
    try:
        consumers = client.xinfo_consumers(keys.events, EVENTS_GROUP)
    except redis.ResponseError:
        return {}
    counts: dict[str, int] = {}
    for consumer in consumers:
        process = consumer["name"].decode().rsplit("-", 1)[0]
        counts[process] = counts.get(process, 0) + 1
    return counts


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and every process below it (the analysis pool, finished git commands), from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        # utime, stime, and cutime, cstime: children it has reaped (the git commands of a workspace)
        times[int(entry)] = sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent and child not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(p, 0.0) for p in tree)


def with_eta(text: str, number: int) -> str:
    old = "return_dict: bool = True,"
    assert old in text
    return (
        text.replace(old, "return_dict: bool = True,\n        eta: float = 0.0,", 1) + f"\n# pull request {number}\n"
    )


def measure_reviews(github, workers: int, pulls: int, first: int, base: dict[str, str]) -> dict:
    prefix = f"drbot-bench-reviews-{uuid.uuid4().hex[:8]}:"
    keys = Keys(prefix)
    numbers = range(first, first + pulls)
    for number in numbers:
        github.add_pull(REPO, number, head_files={DDPM: with_eta(base[DDPM], number)})
    client = redis.Redis.from_url(REDIS_URL)
    with tempfile.TemporaryDirectory(prefix="drbot-reviews-") as tmp:
        env = {"DRBOT_KEY_PREFIX": prefix, "DRBOT_WORKDIR": tmp}
        web = Served(github, SECRET, log=Path(tmp) / "web.log", args=("--web-only",), **env)
        running = [
            Served(github, SECRET, log=Path(tmp) / f"worker-{i}.log", args=("--worker-only",), **env)
            for i in range(workers)
        ]
        try:
            for server in (web, *running):
                server.start()
            web.wait_for(lambda: sorted(consumers_by_process(client, keys).values()) == [4] * workers, 120)
            cpu_before = [cpu_seconds(s.process.pid) for s in running], time.process_time()
            calls_before = len(github.calls)
            start = time.perf_counter()
            for number in numbers:
                assert web.deliver("pull_request", github.pull_request_payload(REPO, number, "opened")) == 202
            web.wait_for(lambda: all(github.comments(REPO, n) for n in numbers), timeout=600)
            elapsed = time.perf_counter() - start
            worker_cpu = sum(cpu_seconds(s.process.pid) for s in running) - sum(cpu_before[0])
            bench_cpu = time.process_time() - cpu_before[1]
            handled = [
                int(s.metric("drbot_event_processing_seconds_count", event="pull_request", outcome="done"))
                for s in running
            ]
            writes = [
                c
                for c in github.calls[calls_before:]
                if c.method in ("POST", "PATCH", "PUT", "DELETE") and not c.path.startswith("/app/")
            ]
            duplicates = sum(
                len(github.comments(REPO, n)) != 1
                or len(github.reviews(REPO, n)) != 1
                or len(github.check_runs(REPO, github.pull(REPO, n)["head"]["sha"])) != 1
                for n in numbers
            )
        finally:
            for server in (web, *running):
                server.stop()
            remove_prefix(client, prefix)
            client.close()
    per_minute = pulls / elapsed * 60
    print(f"reviews: {workers} worker(s): {pulls} PRs in {elapsed:.1f} s = {per_minute:.0f}/min "
          f"({per_minute / workers:.0f}/min per worker), handled per worker {handled}, CPU s: workers {worker_cpu:.1f}"
          f" bench+fake {bench_cpu:.1f}", flush=True)  # fmt: skip
    return {"workers": workers, "pulls": pulls, "seconds": elapsed, "per_minute": per_minute,
            "per_worker": per_minute / workers, "handled": handled, "duplicates": duplicates,
            "worker_cpu": worker_cpu, "bench_cpu": bench_cpu, "writes_per_review": len(writes) / pulls}  # fmt: skip


# -- report -----------------------------------------------------------------------------------------------------


def report(intake: dict | None, reviews: list[dict]) -> str:
    lines = ["## Webhook intake under load, and reviews per minute per worker", ""]
    if intake is not None:
        q = intake["queue"]
        met = "met" if intake["p99"] < TARGET_P99_MS else "NOT met"
        lines += [
            f"`drbot serve --web-only` (one process) against the local Redis, fed signed deliveries of GitHub's example"
            f" payloads (`pull_request` of {len(PR_ACTIONS)} actions, `issue_comment`; about 25 kB each) by an"
            f" open-loop sender on loopback at {intake['rate']:g}/s for {intake['duration']:g} s: each request is due"
            " on a fixed schedule and its latency runs from its due time to the end of the answer, so a stall counts"
            " against every request due during it. The sender shares the machine's cores with the server, and the"
            f" machine was shared with other work (load average {intake['load'][0]:.1f} before the run,"
            f" {intake['load'][1]:.1f} after it).",
            "",
            "| requests | achieved rate | p50 | p90 | p99 | p99.9 | max | mean |",
            "|---|---|---|---|---|---|---|---|",
            f"| {intake['requests']} ({intake['distinct']} deliveries + {intake['copies']} redeliveries)"
            f" | {intake['achieved_rate']:.1f}/s | {intake['p50']:.1f} ms | {intake['p90']:.1f} ms"
            f" | **{intake['p99']:.1f} ms** | {intake['p999']:.1f} ms | {intake['max']:.1f} ms | {intake['mean']:.1f} ms |",
            "",
            f"Target p99 < {TARGET_P99_MS:g} ms: **{met}**. The sender issued every request within"
            f" {intake['sender_lag_max']:.1f} ms of its due time. Answers: "
            + ", ".join(f"{count} × {status}" for status, count in sorted(intake["statuses"].items()))
            + f"; {intake['error_count']} transport errors.",
            "",
            f"Queued exactly once: **{'yes' if intake['exactly_once'] else 'NO'}**: the stream holds {q['entries']}"
            f" entries for {intake['distinct']} distinct delivery ids ({q['queued_twice']} queued twice,"
            f" {q['missing']} missing, {q['unexpected']} unknown, {q['wrong_marks']} `delivery:` marks not naming"
            f" their entry). Of the {intake['copies']} redeliveries (same id and body), {intake['copies_together']}"
            f" went out at the same moment as their first copy and the others {intake['copy_gap_ms'][0]:.0f} ms to"
            f" {intake['copy_gap_ms'][1] / 1000:.0f} s after it ({intake['copies_in_flight']} in all before the first"
            " copy's answer came back)"
            + (
                "; of each pair exactly one was answered 202 and queued, the other 200 `duplicate`."
                if intake["exactly_once"]
                else "."
            ),
            "",
        ]
    if reviews:
        lines += [
            "Reviews: pull requests on a small world in the suite's fake GitHub (the DDPM and unCLIP pipeline files of"
            " diffusers 0.42.1; each PR adds an ignored `eta`: one finding, a check run, a summary and a review),"
            " their `opened` events delivered to the intake at once and consumed by `drbot serve --worker-only`"
            " processes (4 consumers each); from the first delivery until every PR has its summary comment. The fake"
            " GitHub runs in the bench's process on the same two cores.",
            "",
            "| worker processes | PRs | seconds | reviews/min | per worker | events handled per worker |"
            " CPU s: workers (with their analysis processes) / fake GitHub and bench | PRs with a duplicate post |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in reviews:
            lines.append(
                f"| {row['workers']} | {row['pulls']} | {row['seconds']:.1f} | **{row['per_minute']:.0f}** |"
                f" {row['per_worker']:.0f} | {' / '.join(map(str, row['handled']))} |"
                f" {row['worker_cpu']:.1f} / {row['bench_cpu']:.1f} | {row['duplicates']} |"
            )
        if len(reviews) == 2:
            lines += ["", f"Two workers / one: **{reviews[1]['per_minute'] / reviews[0]['per_minute']:.2f}x**."]
        writes = reviews[0]["writes_per_review"]
        lines += [
            "",
            f"Write pacing was off here (`DRBOT_WRITE_SPACING=0`), so these are what the workers can do. Each review"
            f" made {writes:.0f} content writes (check run created and completed, summary comment, review, labels);"
            " with the default spacing of 1 s, writes to one installation go one at a time, a second apart, across"
            f" every worker, so one installation (huggingface/diffusers) gets at most about {60 / writes:.0f} reviews"
            " a minute however many workers run: more workers shorten the analysis queue, not the writes.",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="deliveries per second (default 200)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--duplicates", type=float, default=0.02, help="share of deliveries sent twice (0.02)")
    parser.add_argument("--reviews", type=int, default=48, help="pull requests per worker-count phase (48)")
    parser.add_argument("--no-intake", action="store_true", help="skip the intake part")
    parser.add_argument("--no-reviews", action="store_true", help="skip the reviews part")
    parser.add_argument("--record", action="store_true", help="write the webhook-load section of BENCHMARKS.md")
    args = parser.parse_args()

    from analyzers.scan import installed_diffusers

    package = installed_diffusers()
    base = {path: (package / path.removeprefix("src/diffusers/")).read_text() for path in (DDPM, UNCLIP)}
    intake, reviews = None, []
    with FakeGitHub() as github:
        if not args.no_intake:
            intake = measure_intake(github, args.rate, args.duration, args.duplicates)
            print(json.dumps({k: v for k, v in intake.items() if k != "errors"}, indent=1), flush=True)
            for error in intake["errors"]:
                print("error:", error)
        if not args.no_reviews:
            github.add_repo(REPO, installation_id=1, files=base, private=False)
            for phase, workers in enumerate((1, 2)):
                reviews.append(measure_reviews(github, workers, args.reviews, 1 + phase * 1000, base))
    body = report(intake, reviews)
    print(body)
    if args.record:
        from bench._record import record

        command = (
            f"python bench/webhook_load.py --rate {args.rate:g} --duration {args.duration:g} --reviews {args.reviews}"
        )
        record("webhook-load", command + " --record", body)
    ok = (intake is None or (intake["exactly_once"] and intake["p99"] < TARGET_P99_MS)) and not any(
        row["duplicates"] for row in reviews
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
