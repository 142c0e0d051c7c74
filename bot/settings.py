"""Server settings, read from the environment once at start-up (never at import)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import unquote


class SettingsError(Exception):
    """A required setting is missing or malformed; `drbot serve` exits with status 2 and this message."""


#: field metadata: a secret, never printed (repr shows `***`)
SECRET = {"secret": "value"}
#: field metadata: a URL whose credentials (`user:password@`, `?password=`) are never printed
SECRET_IN_URL = {"secret": "url"}
REDACTED = "***"

# what urllib and redis-py take as the userinfo: everything up to the last `@` before the query; and `password=`
_URL_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^?#]*)@")
_URL_PASSWORD_ARG = re.compile(r"(?P<name>[?&;]password=)(?P<value>[^&;#]*)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` fit for logs: `redis://user:pw@host` -> `redis://user:***@host`, `?password=pw` -> `?password=***`.

    A userinfo with no `:` is masked whole (it may be a token); everything else is kept as written.
    """
    match = _URL_USERINFO.match(url)
    if match:
        user, colon, _ = match["userinfo"].partition(":")
        userinfo = f"{user}:{REDACTED}" if colon else REDACTED
        url = f"{match['scheme']}{userinfo}@{url[match.end() :]}"
    return _URL_PASSWORD_ARG.sub(lambda m: m["name"] + REDACTED, url)


def url_secrets(url: str) -> set[str]:
    """The credentials `redact_url` masks, as written and percent-decoded (redis-py sends the decoded form)."""
    found: set[str] = set()
    match = _URL_USERINFO.match(url)
    if match:
        user, colon, password = match["userinfo"].partition(":")
        found.add(password if colon else user)
    found.update(m["value"] for m in _URL_PASSWORD_ARG.finditer(url))
    return {form for value in found if value for form in (value, unquote(value))}


@dataclass(frozen=True)
class Settings:
    webhook_secret: str = field(metadata=SECRET)
    app_id: str | None = None
    private_key: str | None = field(default=None, metadata=SECRET)
    api_url: str = field(default="https://api.github.com", metadata=SECRET_IN_URL)
    redis_url: str = field(default="redis://127.0.0.1:6379/0", metadata=SECRET_IN_URL)
    port: int = 8080
    host: str = "0.0.0.0"
    #: every Redis key drbot writes starts with this (tests use one prefix each)
    key_prefix: str = "drbot:"
    #: concurrent event consumers in one process
    consumers: int = 4
    #: a message pending longer than this (its consumer died) is claimed by another consumer
    visibility_timeout_s: float = 300.0
    #: a consumer idle this long holding no entry is removed from its group (a restarted process names new ones)
    stale_consumer_s: float = 3600.0
    #: deliveries of one message before it moves to the dead-letter stream
    max_attempts: int = 5
    delivery_ttl_s: int = 7 * 24 * 3600
    max_body_bytes: int = 25 * 1024 * 1024
    #: a webhook body must arrive whole within this many seconds of its headers (GitHub sends it at once): else 408
    read_timeout_s: float = 5.0
    #: a connection must complete its request headers within this many seconds of opening or of its last response
    #: (aiohttp's keep-alive timer, which also closes idle connections); a slowloris is closed with no answer
    header_timeout_s: float = 10.0
    #: /metrics reads Redis at most once per this many seconds, however often it is asked
    metrics_cache_s: float = 5.0
    #: minimum spacing between content-creating requests of one installation (GitHub's secondary limits)
    write_spacing_s: float = 1.0
    #: retries of a GitHub request answered 5xx or with a secondary rate limit
    max_retries: int = 5
    #: a PR with more changed Python files than this is reviewed on the first ones only, with a note
    max_review_files: int = 300
    workdir: str | None = None
    #: where rule documentation links in comments point (None: drbot's own docs, analyzers.render.DOCS_URL)
    docs_url: str | None = None
    #: PR files are parsed in a pool of worker processes (engine.isolation), each file under these limits; a file
    #: over one is reported as not analysed: wall seconds per file, address space per worker, bytes per file
    analysis_timeout_s: float = 30.0
    analysis_memory_bytes: int = 2 << 30
    max_file_bytes: int = 2 << 20
    #: wall seconds for all the files of one review (past it, the rest are not analysed)
    analysis_budget_s: float = 240.0
    #: worker processes of the pool, and the tasks a worker runs before it is replaced by a fresh one
    analysis_workers: int = 1
    analysis_max_tasks: int = 500
    #: a PR whose tarball is larger than this, expands to more bytes or holds more entries than these, is not
    #: reviewed (a completed check run says why)
    max_tarball_bytes: int = 256 << 20
    max_extract_bytes: int = 1 << 30
    max_extract_files: int = 100_000
    #: keep each merge base unpacked between reviews and build heads on it from the blobs they change (off: two
    #: tarballs per review, the old way), and the bytes those bases may take on disk (least recently used go first)
    review_state: bool = True
    max_bases_bytes: int = 2 << 30
    #: the repositories whose registry GET /dashboard shows (the first by default; others by `?repo=`): public ones
    #: only, since the page is served to anyone; empty turns the page off
    dashboard_repos: tuple[str, ...] = ("huggingface/diffusers",)
    #: seconds a rendered dashboard is served before the registry is read again
    dashboard_cache_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read `GITHUB_*`, `REDIS_URL`, `DRBOT_*`; the webhook secret is required (fail closed)."""
        env = os.environ if env is None else env
        secret = env.get("GITHUB_WEBHOOK_SECRET", "")
        if not secret:
            raise SettingsError(
                "GITHUB_WEBHOOK_SECRET is not set: drbot refuses to accept unsigned webhooks; set it to the "
                "secret of the App's webhook"
            )
        private_key = env.get("GITHUB_PRIVATE_KEY") or None
        key_path = env.get("GITHUB_PRIVATE_KEY_PATH")
        if private_key is None and key_path:
            try:
                private_key = Path(key_path).read_text()
            except OSError as error:
                raise SettingsError(f"GITHUB_PRIVATE_KEY_PATH={key_path}: {error.strerror or error}") from None

        def number(name: str, default, kind=int):
            raw = env.get(name)
            if raw in (None, ""):
                return default
            try:
                return kind(raw)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise SettingsError(f"{name}={raw!r} is not {what}") from None

        return cls(
            webhook_secret=secret,
            app_id=env.get("GITHUB_APP_ID") or None,
            private_key=private_key,
            api_url=(env.get("GITHUB_API_URL") or cls.api_url).rstrip("/"),
            redis_url=env.get("REDIS_URL") or cls.redis_url,
            port=number("DRBOT_PORT", cls.port),
            host=env.get("DRBOT_HOST") or cls.host,
            key_prefix=env.get("DRBOT_KEY_PREFIX") or cls.key_prefix,
            consumers=number("DRBOT_CONSUMERS", cls.consumers),
            visibility_timeout_s=number("DRBOT_VISIBILITY_TIMEOUT", cls.visibility_timeout_s, float),
            stale_consumer_s=number("DRBOT_STALE_CONSUMER", cls.stale_consumer_s, float),
            write_spacing_s=number("DRBOT_WRITE_SPACING", cls.write_spacing_s, float),
            max_review_files=number("DRBOT_MAX_REVIEW_FILES", cls.max_review_files),
            read_timeout_s=number("DRBOT_READ_TIMEOUT", cls.read_timeout_s, float),
            header_timeout_s=number("DRBOT_HEADER_TIMEOUT", cls.header_timeout_s, float),
            metrics_cache_s=number("DRBOT_METRICS_CACHE", cls.metrics_cache_s, float),
            workdir=env.get("DRBOT_WORKDIR") or None,
            docs_url=env.get("DRBOT_DOCS_URL") or None,
            analysis_timeout_s=number("DRBOT_ANALYSIS_TIMEOUT", cls.analysis_timeout_s, float),
            analysis_memory_bytes=number("DRBOT_ANALYSIS_MEMORY_BYTES", cls.analysis_memory_bytes),
            max_file_bytes=number("DRBOT_MAX_FILE_BYTES", cls.max_file_bytes),
            analysis_budget_s=number("DRBOT_ANALYSIS_BUDGET", cls.analysis_budget_s, float),
            analysis_workers=number("DRBOT_ANALYSIS_WORKERS", cls.analysis_workers),
            analysis_max_tasks=number("DRBOT_ANALYSIS_MAX_TASKS", cls.analysis_max_tasks),
            max_tarball_bytes=number("DRBOT_MAX_TARBALL_BYTES", cls.max_tarball_bytes),
            max_extract_bytes=number("DRBOT_MAX_EXTRACT_BYTES", cls.max_extract_bytes),
            max_extract_files=number("DRBOT_MAX_EXTRACT_FILES", cls.max_extract_files),
            review_state=(env.get("DRBOT_REVIEW_STATE") or "1").lower() not in ("0", "false", "no", "off"),
            max_bases_bytes=number("DRBOT_MAX_BASES_BYTES", cls.max_bases_bytes),
            dashboard_repos=tuple(
                repo.strip()
                for repo in env.get("DRBOT_DASHBOARD_REPOS", ",".join(cls.dashboard_repos)).split(",")
                if repo.strip()
            ),
            dashboard_cache_s=number("DRBOT_DASHBOARD_CACHE", cls.dashboard_cache_s, float),
        )

    def __repr__(self) -> str:
        """Every field, secrets masked and URL credentials redacted: safe to log."""
        shown = []
        for item in fields(self):
            value, kind = getattr(self, item.name), item.metadata.get("secret")
            if value and kind == "value":
                value = REDACTED
            elif value and kind == "url":
                value = redact_url(value)
            shown.append(f"{item.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def secrets(self) -> set[str]:
        """The values no log line or answer may hold: secret fields and the credentials in URL fields."""
        found: set[str] = set()
        for item in fields(self):
            value, kind = getattr(self, item.name), item.metadata.get("secret")
            if value and kind == "value":
                found.add(value)
            elif value and kind == "url":
                found |= url_secrets(value)
        return found

    def redact(self, text: str) -> str:
        """`text` (an error message, say) with every secret of these settings replaced by `***`."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def links(self):
        """The rule-documentation links the App posts: always absolute (a relative one resolves under `/pull/N/`)."""
        from analyzers.render import Links

        return Links() if self.docs_url is None else Links(docs_base=self.docs_url.rstrip("/") + "/")

    def require_app_credentials(self) -> tuple[str, str]:
        """The worker talks to GitHub as the App: it needs the App id and private key (returned, as set)."""
        if not self.app_id or not self.private_key:
            raise SettingsError(
                "GITHUB_APP_ID and GITHUB_PRIVATE_KEY (or GITHUB_PRIVATE_KEY_PATH) are required to talk to GitHub"
            )
        return self.app_id, self.private_key
