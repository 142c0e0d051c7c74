"""Per-repository settings from `.github/drbot.yml` on the default branch (never from a PR head)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import yaml

from analyzers.patterns import PATTERNS


CONFIG_PATH = ".github/drbot.yml"
DEFAULT_PATHS = ("src/diffusers/", "tests/")
FIXES_KNOWN_LABEL = "drbot: fixes known finding"
DUPLICATE_FIX_LABEL = "drbot: possible duplicate fix"
#: label colours: one per pattern, muted, so drbot's labels read as one family
PATTERN_COLOURS = {
    1: "c5def5", 2: "bfd4f2", 3: "d4c5f9", 4: "f9d0c4", 5: "fef2c0",
    6: "c2e0c6", 7: "e6e6e6", 8: "fbca04", 9: "bfdadc", 10: "d93f0b",
}  # fmt: skip


class ConfigError(ValueError):
    """`.github/drbot.yml` is malformed; the review goes on with the defaults and says why."""


@dataclass(frozen=True)
class RepoConfig:
    """What a repository can change. Example `.github/drbot.yml`:

    ```yaml
    paths: [src/diffusers/pipelines/, src/diffusers/models/, tests/]
    disabled_rules: [DRB015, P10]     # codes, code prefixes, or P<n> for a whole pattern
    inline_comments: true
    labels:
      patterns: {1: "bug: batch expansion"}   # per pattern; the rest keep "drbot: pattern N"
      fixes_known: "drbot: fixes known finding"
      duplicate_fix: "drbot: possible duplicate fix"
    tracking_issue: 13656   # drbot keeps a marked section of this issue's body (docs/dashboard.md)
    ```
    """

    paths: tuple[str, ...] = DEFAULT_PATHS
    disabled_rules: tuple[str, ...] = ()
    inline_comments: bool = True
    pattern_labels: Mapping[int, str] = field(default_factory=dict)
    fixes_known_label: str = FIXES_KNOWN_LABEL
    duplicate_fix_label: str = DUPLICATE_FIX_LABEL
    paused: bool = False
    tracking_issue: int | None = None

    def pattern_label(self, pattern: int) -> str:
        return self.pattern_labels.get(pattern, f"drbot: pattern {pattern}")

    def label_description(self, pattern: int) -> str:
        title = PATTERNS[pattern][0] if pattern in PATTERNS else f"Pattern {pattern}"
        return f"drbot found new code of #13656 {title}"[:100]

    def reviews(self, repo_path: str) -> bool:
        return repo_path.endswith(".py") and repo_path.startswith(self.paths)

    def rule_enabled(self, code: str, pattern: int) -> bool:
        for entry in self.disabled_rules:
            if entry.upper() == f"P{pattern}" or code.startswith(entry.upper()):
                return False
        return True


def parse_config(text: str | None) -> RepoConfig:
    """Parse the file's text (None: no file, the defaults). Raises ConfigError with a readable message."""
    if text is None or not text.strip():
        return RepoConfig()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{CONFIG_PATH} is not valid YAML: {error}") from None
    if data is None:
        return RepoConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{CONFIG_PATH} must be a mapping at the top level")
    unknown = set(data) - {"paths", "disabled_rules", "inline_comments", "labels", "tracking_issue"}
    if unknown:
        raise ConfigError(f"{CONFIG_PATH}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    config = RepoConfig()
    if "paths" in data:
        paths = data["paths"]
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
            raise ConfigError(f"{CONFIG_PATH}: `paths` must be a non-empty list of path prefixes")
        config = replace(config, paths=tuple(p.lstrip("/") for p in paths))
    if "disabled_rules" in data:
        rules = data["disabled_rules"]
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise ConfigError(f"{CONFIG_PATH}: `disabled_rules` must be a list of rule codes or P<n>")
        config = replace(config, disabled_rules=tuple(r.strip() for r in rules))
    if "inline_comments" in data:
        if not isinstance(data["inline_comments"], bool):
            raise ConfigError(f"{CONFIG_PATH}: `inline_comments` must be true or false")
        config = replace(config, inline_comments=data["inline_comments"])
    if "tracking_issue" in data:
        issue = data["tracking_issue"]
        if isinstance(issue, bool) or not isinstance(issue, int) or issue < 1:
            raise ConfigError(f"{CONFIG_PATH}: `tracking_issue` must be an issue number")
        config = replace(config, tracking_issue=issue)
    labels = data.get("labels") or {}
    if not isinstance(labels, dict):
        raise ConfigError(f"{CONFIG_PATH}: `labels` must be a mapping")
    patterns = labels.get("patterns") or {}
    if not isinstance(patterns, dict) or not all(
        isinstance(k, int) and k in PATTERNS and isinstance(v, str) and v for k, v in patterns.items()
    ):
        raise ConfigError(f"{CONFIG_PATH}: `labels.patterns` maps pattern numbers 1-10 to label names")
    for key in ("fixes_known", "duplicate_fix"):
        if key in labels and not (isinstance(labels[key], str) and labels[key]):
            raise ConfigError(f"{CONFIG_PATH}: `labels.{key}` must be a label name")
    return replace(
        config,
        pattern_labels=dict(patterns),
        fixes_known_label=labels.get("fixes_known", FIXES_KNOWN_LABEL),
        duplicate_fix_label=labels.get("duplicate_fix", DUPLICATE_FIX_LABEL),
    )
