"""Redis ACL users for drbot's trust zones (DESIGN §7), written once here and used by deployments and tests.

- The bot's user does the rest of drbot's work under the key prefix, without administrative commands.
- Each runner has its own user: it may take jobs from the jobs stream (read and claim, never add or acknowledge),
  read the newest requested head of a PR, write its own results under `runner:{name}:` and announce them on the
  results stream. It cannot read or write events, job records, PR state, the registry or another runner's keys,
  so neither a runner host nor the code a job runs can queue a forged command or plant a passing result.
- `default` is switched off; an `admin` user is for operators (backups, redis-cli).

`drbot redis-acl` writes an ACL file (`aclfile` in redis.conf) with fresh passwords, stored only as SHA-256 in the
file and in plain text in one file per user that the matching component reads (REDIS_URL).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import secrets
import sys
from urllib.parse import quote


USER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

#: what the bot's user may run: data commands of every kind drbot uses, scripts (whose own commands are checked
#: against the same rules), and nothing administrative (no CONFIG, KEYS, FLUSHALL, DEBUG, MONITOR, ACL writes)
BOT_COMMANDS = (
    "-@all", "+@read", "+@write", "+@stream", "+@hash", "+@string", "+@set", "+@keyspace", "+@scripting",
    "+@connection", "+@transaction", "-@dangerous", "-@admin", "+acl|whoami",
)  # fmt: skip
#: what every runner may run on no key at all (connection housekeeping)
#: (redis-py's CLIENT SETINFO on connect is refused and ignored: Redis 7.0 has no such subcommand to allow)
RUNNER_COMMANDS = ("-@all", "+ping", "+hello", "+auth", "+acl|whoami", "+select")


def _glob(prefix: str) -> str:
    """The key prefix as a literal in an ACL key pattern (glob characters escaped)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix)


def bot_rules(prefix: str = "drbot:") -> list[str]:
    return ["resetkeys", "resetchannels", f"~{_glob(prefix)}*", *BOT_COMMANDS]


def runner_rules(name: str, prefix: str = "drbot:") -> list[str]:
    """One runner's rules: Redis 7 selectors, each a set of commands on a set of keys."""
    if not USER_NAME.match(name):
        raise ValueError(f"runner name {name!r}: use letters, digits, `.`, `_` and `-` (at most 64)")
    p = _glob(prefix)
    return [
        "resetkeys", "resetchannels", *RUNNER_COMMANDS,
        f"(~{p}jobs +xreadgroup +xautoclaim +xclaim +xpending +xgroup|create)",
        f"(~{p}results +xadd)",
        f"(~{p}runner:{name}:* +set +get +exists)",
        f"(%R~{p}jobhead:* +get)",
    ]  # fmt: skip


def admin_rules() -> list[str]:
    return ["resetkeys", "resetchannels", "~*", "&*", "+@all"]


async def apply(redis, user: str, password: str, rules: list[str]) -> None:
    """Create or reset a user on a live server (ACL SETUSER), as tests and a one-off migration do."""
    await redis.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", *rules)


def acl_line(user: str, password: str, rules: list[str]) -> str:
    digest = hashlib.sha256(password.encode()).hexdigest()
    return " ".join(["user", user, "on", f"#{digest}", *rules])


def redis_url(user: str, password: str, host: str, port: int = 6379, db: int = 0) -> str:
    return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{db}"


def run(args: argparse.Namespace) -> int:
    """`drbot redis-acl` (arguments in drbot/cli.py): write the ACL file and one password file per user."""
    users = {args.bot_user: bot_rules(args.prefix), "admin": admin_rules()}
    for name in args.runner:
        if name in users:
            print(f"drbot redis-acl: user {name!r} given twice", file=sys.stderr)
            return 2
        try:
            users[name] = runner_rules(name, args.prefix)
        except ValueError as error:
            print(f"drbot redis-acl: {error}", file=sys.stderr)
            return 2
    args.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = ["user default off"]  # an ACL file has no comments: this one is documented in docs/security.md
    for user, rules in users.items():
        secret_file = args.secrets / f"{user}.password"
        if secret_file.exists():  # re-running keeps existing passwords (add a runner without rotating the rest)
            password = secret_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(32)
            secret_file.touch(mode=0o600)
            secret_file.write_text(password + "\n")
        lines.append(acl_line(user, password, rules))
    args.acl_file.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.acl_file} ({len(users)} users) and passwords under {args.secrets}/", file=sys.stderr)
    return 0
