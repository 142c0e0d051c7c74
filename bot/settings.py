"""Server settings, read from the environment once at start-up (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class SettingsError(Exception):
    """A required setting is missing or malformed; `drbot serve` exits with status 2 and this message."""


@dataclass(frozen=True)
class Settings:
    webhook_secret: str
    app_id: str | None = None
    private_key: str | None = None
    api_url: str = "https://api.github.com"
    redis_url: str = "redis://127.0.0.1:6379/0"
    port: int = 8080
    host: str = "0.0.0.0"
    #: every Redis key drbot writes starts with this (tests use one prefix each)
    key_prefix: str = "drbot:"
    #: concurrent event consumers in one process
    consumers: int = 4
    #: a message pending longer than this (its consumer died) is claimed by another consumer
    visibility_timeout_s: float = 300.0
    #: deliveries of one message before it moves to the dead-letter stream
    max_attempts: int = 5
    delivery_ttl_s: int = 7 * 24 * 3600
    max_body_bytes: int = 25 * 1024 * 1024
    #: minimum spacing between content-creating requests of one installation (GitHub's secondary limits)
    write_spacing_s: float = 1.0
    #: retries of a GitHub request answered 5xx or with a secondary rate limit
    max_retries: int = 5
    #: a PR with more changed Python files than this is reviewed on the first ones only, with a note
    max_review_files: int = 300
    workdir: str | None = None

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
                raise SettingsError(f"{name}={raw!r} is not a {kind.__name__}") from None

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
            write_spacing_s=number("DRBOT_WRITE_SPACING", cls.write_spacing_s, float),
            max_review_files=number("DRBOT_MAX_REVIEW_FILES", cls.max_review_files),
            workdir=env.get("DRBOT_WORKDIR") or None,
        )

    def require_app_credentials(self) -> None:
        """The worker talks to GitHub as the App: it needs the App id and private key."""
        if not self.app_id or not self.private_key:
            raise SettingsError(
                "GITHUB_APP_ID and GITHUB_PRIVATE_KEY (or GITHUB_PRIVATE_KEY_PATH) are required to talk to GitHub"
            )
