"""Slash commands: `/drbot <verb> [args]` parsed from a comment into a `SlashCommand` (pure, no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass


PREFIX = "/drbot"
VERBS = ("help", "review", "explain", "fix", "contracts", "ignore", "pause", "resume")
#: verbs that change what drbot does on the repository: write, maintain or admin permission only
WRITE_VERBS = frozenset({"contracts", "ignore", "pause", "resume"})
FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
CODE = re.compile(r"^DRB\d{3}$", re.I)

HELP = """\
**drbot commands** (in a comment on a pull request, on the first line):

| command | what it does | who |
|---|---|---|
| `/drbot help` | this list | anyone |
| `/drbot review` | review the pull request again now | anyone |
| `/drbot explain DRBnnn` | what a rule checks and why | anyone |
| `/drbot fix` | the fixes of this pull request's new findings, as one unified diff to apply (drbot never pushes) | anyone |
| `/drbot contracts [@sha] [Pipeline …]` | run the contract tests on GPU runners, on the head you reviewed (or the commit `@sha` names; default pipelines: those this PR changes, then up to 16 that use a model, scheduler or shared module it changes) | write access |
| `/drbot ignore <fingerprint or DRBnnn> <reason>` | suppress a finding (or a rule's findings on this PR) everywhere it recurs | write access |
| `/drbot pause` · `/drbot resume` | stop or restart reviews of this pull request | write access |

Fingerprints are listed in the check run's annotations and by `drbot analyze --format json`."""


@dataclass(frozen=True)
class SlashCommand:
    verb: str  # one of VERBS, or "unknown"
    args: tuple[str, ...] = ()
    text: str = ""  # the whole command line, for replies

    @property
    def needs_write(self) -> bool:
        return self.verb in WRITE_VERBS


def parse(body: str | None) -> SlashCommand | None:
    """The command of a comment that starts with `/drbot`, or None. Only the first line counts."""
    if not body:
        return None
    line = body.strip().splitlines()[0].strip() if body.strip() else ""
    if not (line == PREFIX or line.startswith(PREFIX + " ") or line.startswith(PREFIX + "\t")):
        return None
    words = line.split()
    if len(words) == 1:
        return SlashCommand("help", (), line)
    verb = words[1].lower()
    args = tuple(words[2:])
    if verb not in VERBS:
        return SlashCommand("unknown", (verb, *args), line)
    return SlashCommand(verb, args, line)


def usage_error(command: SlashCommand) -> str | None:
    """A one-line message when the arguments cannot work, else None."""
    if command.verb == "explain" and (len(command.args) != 1 or not CODE.match(command.args[0])):
        return "Usage: `/drbot explain DRBnnn`, for example `/drbot explain DRB201`."
    if command.verb == "ignore":
        if len(command.args) < 2:
            return "Usage: `/drbot ignore <fingerprint or DRBnnn> <reason>`: a reason is required."
        target = command.args[0]
        if not (FINGERPRINT.match(target) or CODE.match(target)):
            return f"`{target[:40]}` is neither a 16-digit fingerprint nor a rule code such as DRB201."
    if command.verb in ("pause", "resume", "help", "review", "fix") and command.args:
        return f"`/drbot {command.verb}` takes no arguments."
    return None
