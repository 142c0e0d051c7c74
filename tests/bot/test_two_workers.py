"""Two `drbot serve --worker-only` processes on one Redis stream share the reviews, and no pull request hears twice."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from harness import DDPM, REPO, SECRET, UNCLIP, with_eta
from served import Served

from analyzers.render import SUMMARY_MARKER
from bot.store import EVENTS_GROUP, Keys


CONSUMERS = 4  # the production default, so each worker process holds up to four events at once


def handled(server: Served) -> float:
    """The pull_request events this process handled to the end (its own /metrics)."""
    return server.metric("drbot_event_processing_seconds_count", event="pull_request", outcome="done")


def consumers_by_process(client: redis.Redis, keys: Keys) -> dict[str, int]:
    """Consumers registered in the events group, by process (a consumer is named `{process}-{i}`)."""
    try:
        consumers = client.xinfo_consumers(keys.events, EVENTS_GROUP)
    except redis.ResponseError:  # no stream or no group yet
        return {}
    by_process: dict[str, int] = {}
    for consumer in consumers:
        process = consumer["name"].decode().rsplit("-", 1)[0]
        by_process[process] = by_process.get(process, 0) + 1
    return by_process


@pytest.fixture
def cluster(github, sources, tmp_path):
    """An intake (`--web-only`) and two workers (`--worker-only`) sharing one key prefix, as deployed, ready: both
    workers' consumers are in the group, so neither can take every event by starting first."""
    github.add_repo(REPO, installation_id=1, files={DDPM: sources(DDPM), UNCLIP: sources(UNCLIP)})
    prefix = f"drbot-test-{uuid.uuid4().hex[:8]}:"
    keys = Keys(prefix)
    env = {"DRBOT_KEY_PREFIX": prefix, "DRBOT_CONSUMERS": str(CONSUMERS)}
    roles = {"web": ("--web-only",), "worker-a": ("--worker-only",), "worker-b": ("--worker-only",)}
    servers = [Served(github, SECRET, log=tmp_path / f"{name}.log", args=args, **env) for name, args in roles.items()]
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        for server in servers:
            server.start()
        web = servers[0]
        web.wait_for(lambda: sorted(consumers_by_process(client, keys).values()) == [CONSUMERS, CONSUMERS], 120)
        yield web, servers[1:], keys, client
    finally:
        for server in servers:
            server.stop()  # each removes the prefix's keys once it is down; the last one leaves none
        client.close()


def open_pulls(github, sources, count: int) -> range:
    numbers = range(1, count + 1)
    for number in numbers:
        # one new finding each, and a head tree of its own (identical trees would make them duplicates of each other)
        github.add_pull(REPO, number, head_files={DDPM: with_eta(sources) + f"\n# pull request {number}\n"})
    return numbers


def wait_until_handled(web: Served, workers: list[Served], keys: Keys, client: redis.Redis, events: int) -> list[int]:
    """Wait until the workers handled `events` events and the stream is empty; the events each one handled."""
    web.wait_for(lambda: client.xlen(keys.events) == 0 and sum(handled(w) for w in workers) == events, timeout=240)
    time.sleep(1)  # a stray write of any review would land by now
    assert client.xlen(keys.dead) == 0
    return [int(handled(worker)) for worker in workers]


def assert_posted_once(github, numbers: range) -> None:
    for number in numbers:
        head = github.pull(REPO, number)["head"]["sha"]
        summaries = [c for c in github.comments(REPO, number) if c["body"].startswith(SUMMARY_MARKER)]
        assert len(summaries) == 1, f"#{number}: {len(summaries)} summary comments"
        assert "**1 new finding**" in summaries[0]["body"] and "`eta`" in summaries[0]["body"]
        assert len(github.reviews(REPO, number)) == 1, f"#{number}: {len(github.reviews(REPO, number))} reviews"
        runs = github.check_runs(REPO, head)
        assert [(run["status"], run["output"]["title"]) for run in runs] == [("completed", "1 new finding")], (
            f"#{number}: {len(runs)} check runs"
        )
    posts = github.requests("POST", r"/issues/\d+/comments$")
    assert len(posts) == len(numbers), f"{len(posts)} summary comments posted for {len(numbers)} pull requests"


def test_two_worker_processes_share_the_reviews_and_post_each_once(cluster, github, sources):
    web, workers, keys, client = cluster
    numbers = open_pulls(github, sources, 6)
    for number in numbers:
        assert web.deliver("pull_request", github.pull_request_payload(REPO, number, "opened")) == 202

    counts = wait_until_handled(web, workers, keys, client, len(numbers))
    assert min(counts) >= 1, f"events handled per worker: {counts}"
    assert_posted_once(github, numbers)


def test_two_events_of_one_pull_request_on_two_workers_post_once(cluster, github, sources):
    # a pull request closed and reopened at once: two events of one head, taken by consumers of both workers at the
    # same time; unless they take turns, each finds no check run, summary or review yet, and each posts one
    web, workers, keys, client = cluster
    numbers = open_pulls(github, sources, 3)
    for number in numbers:
        for action in ("opened", "reopened"):
            assert web.deliver("pull_request", github.pull_request_payload(REPO, number, action)) == 202

    counts = wait_until_handled(web, workers, keys, client, 2 * len(numbers))
    assert min(counts) >= 1, f"events handled per worker: {counts}"
    assert_posted_once(github, numbers)
