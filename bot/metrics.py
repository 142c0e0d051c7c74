"""Prometheus metrics of one drbot process (its own registry, so tests and several apps never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


#: the `event` label of a request whose signature was not checked or did not match: its headers are not trusted
UNVERIFIED = "unverified"
#: the `event` label of a verified delivery of an event drbot has no label for
OTHER_EVENT = "other"


class Metrics:
    """Labels come only from fixed sets (event names drbot knows, outcomes, rule codes), never from a request as
    sent: a label per value an attacker can choose would grow /metrics without bound."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "drbot_webhook_deliveries",
            "Webhook deliveries received, by event and outcome (accepted, duplicate, ignored, rejected, timeout, "
            f"error); `{UNVERIFIED}` counts requests whose signature was missing or wrong, or never read.",
            ["event", "outcome"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "drbot_queue_depth", "Events waiting or pending in the event stream.", registry=self.registry
        )
        self.processing = Histogram(
            "drbot_event_processing_seconds",
            "Time to handle one event, by event and outcome (done, retry, dead).",
            ["event", "outcome"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.github_calls = Counter(
            "drbot_github_requests",
            "Requests sent to GitHub, by method and status code.",
            ["method", "status"],
            registry=self.registry,
        )
        self.rate_limit_remaining = Gauge(
            "drbot_github_rate_limit_remaining",
            "x-ratelimit-remaining of the last GitHub answer, by installation.",
            ["installation"],
            registry=self.registry,
        )
        self.findings_posted = Counter(
            "drbot_findings_posted",
            "New findings published on pull requests, by rule code.",
            ["code"],
            registry=self.registry,
        )

        self.rule_feedback = Gauge(
            "drbot_rule_feedback",
            "Findings of a rule posted on pull requests and ignored by maintainers (`/drbot ignore`), from Redis.",
            ["code", "kind"],
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
