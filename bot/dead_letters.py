"""`drbot dead-letters list|show|replay|drop`: inspect the dead-letter stream (`drbot:dead`) and send entries back.

`common.streams` moves an entry there, with its error, when it failed `max_attempts` times or is poison: an event
of `drbot:events` (a webhook delivery, with GitHub's signature) or a notice of `drbot:results` (a runner's "job
done"). Replaying never trusts the dead letter: an event is checked as the intake checks a delivery (the signature
over the body with the webhook secret, the headers drbot needs, a JSON object, an event drbot handles) before it
goes back to `drbot:events`, and its consumer verifies the signature again when it takes it; a result notice goes
back to `drbot:results`, where the result consumer checks the job, the runner's claim and the result as for any
notice. Everything printed from an entry is attacker-controlled text: control characters are escaped.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass

from bot.app import HANDLED_EVENTS, PayloadError, parse_payload, verify_signature
from bot.store import Keys, connect
from common.streams import as_text


#: the fields `common.streams.StreamConsumer.bury` adds to the entry's own
BURIAL_FIELDS = ("error", "attempts", "source", "source_id", "buried")
#: the fields the intake writes into an event entry, in order (bot.store._ACCEPT)
EVENT_FIELDS = ("delivery", "event", "body", "received", "signature")
#: the fields a runner's notice carries (bot.results.Notice)
NOTICE_FIELDS = ("job_id", "runner", "job_entry")

# Requeue an event: the entry goes back to the events stream and its delivery mark names the new entry (the
# consumer accepts only the entry a delivery was accepted as), and the dead letter goes, in one atomic step.
_REQUEUE_EVENT = """
if redis.call('XDEL', KEYS[3], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', 'delivery', ARGV[2], 'event', ARGV[3], 'body', ARGV[4],
                      'received', ARGV[5], 'signature', ARGV[6])
redis.call('SET', KEYS[1], id, 'EX', ARGV[7])
return id
"""
_REQUEUE_NOTICE = """
if redis.call('XDEL', KEYS[2], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[1], '*', 'job_id', ARGV[2], 'runner', ARGV[3], 'job_entry', ARGV[4])
"""


class ReplayRefused(Exception):
    """The dead letter cannot go back: it fails the checks its stream's intake makes, or it is gone."""


@dataclass(frozen=True)
class DeadLetter:
    id: str
    fields: dict[str, bytes]

    def text(self, name: str) -> str:
        return self.fields.get(name, b"").decode("utf-8", "replace")

    @property
    def source(self) -> str:
        return self.text("source")

    @property
    def buried(self) -> float:
        try:
            return float(self.text("buried"))
        except ValueError:
            return 0.0

    def what(self, keys: Keys) -> str:
        """One line: which event or job the entry is."""
        if self.source == keys.events:
            return f"{self.text('event') or '?'} delivery {self.text('delivery') or '?'}"
        if self.source == keys.results:
            return f"result of job {self.text('job_id') or '?'} from runner {self.text('runner') or '?'}"
        return "?"

    def reason(self) -> str:
        """The last line of the error (a traceback ends with the exception)."""
        lines = [line for line in self.text("error").splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def as_json(self) -> dict:
        data: dict[str, object] = {"id": self.id}
        for name, value in self.fields.items():
            text = value.decode("utf-8", "replace")
            data[name] = text
        if "body" in self.fields:
            try:
                data["body"] = json.loads(self.fields["body"])
            except (ValueError, RecursionError):
                pass
        return data


def printable(text: str, limit: int | None = None) -> str:
    """`text` safe for a terminal: control characters (escape sequences, carriage returns) shown escaped."""
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def _letter(raw_id, fields) -> DeadLetter:
    return DeadLetter(
        as_text(raw_id), {as_text(k): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}
    )


async def read_all(redis, keys: Keys, count: int | None = None) -> list[DeadLetter]:
    """The dead letters, oldest first (the newest `count` when given)."""
    if count is None:
        raw = await redis.xrange(keys.dead)
    else:
        raw = list(reversed(await redis.xrevrange(keys.dead, count=count)))
    return [_letter(i, f) for i, f in raw]


async def read_one(redis, keys: Keys, entry_id: str) -> DeadLetter | None:
    raw = await redis.xrange(keys.dead, min=entry_id, max=entry_id, count=1)
    return _letter(*raw[0]) if raw else None


def check_event(letter: DeadLetter, secret: str) -> None:
    """The intake's checks on a delivery, on the dead letter's fields: ReplayRefused when one fails."""
    body = letter.fields.get("body", b"")
    if not verify_signature(secret, body, letter.text("signature") or None):
        raise ReplayRefused(
            f"{letter.id}: the signature does not match the body with this webhook secret (a forged entry, or "
            "GITHUB_WEBHOOK_SECRET is not the one it was signed with); not replayed"
        )
    if not letter.text("delivery") or letter.text("event") not in HANDLED_EVENTS:
        raise ReplayRefused(f"{letter.id}: no delivery id, or an event drbot does not handle; not replayed")
    try:
        parse_payload(body)
    except PayloadError as error:
        raise ReplayRefused(f"{letter.id}: {error}; not replayed") from None


async def replay(redis, keys: Keys, letter: DeadLetter, secret: str | None, ttl_s: int = 7 * 24 * 3600) -> str:
    """Send a dead letter back to the stream it came from; returns its new entry id there."""
    if letter.source == keys.events:
        if not secret:
            raise ReplayRefused(
                "GITHUB_WEBHOOK_SECRET is not set: an event is replayed only once its signature checks"
            )
        check_event(letter, secret)
        script = redis.register_script(_REQUEUE_EVENT)
        delivery = letter.text("delivery")
        args = [letter.id, delivery, letter.text("event"), letter.fields.get("body", b""),
                f"{time.time():.3f}", letter.text("signature"), ttl_s]  # fmt: skip
        new_id = await script(keys=[keys.delivery(delivery), keys.events, keys.dead], args=args)
    elif letter.source == keys.results:
        if any(not letter.fields.get(name) for name in NOTICE_FIELDS):
            raise ReplayRefused(f"{letter.id}: a result notice without {', '.join(NOTICE_FIELDS)}; not replayed")
        script = redis.register_script(_REQUEUE_NOTICE)
        args = [letter.id, *(letter.fields[name] for name in NOTICE_FIELDS)]
        new_id = await script(keys=[keys.results, keys.dead], args=args)
    else:
        raise ReplayRefused(f"{letter.id}: from {letter.source or 'an unknown stream'!r}, which drbot cannot replay")
    if new_id is None:
        raise ReplayRefused(f"{letter.id}: no longer in {keys.dead} (replayed or dropped meanwhile)")
    return as_text(new_id)


# -- the command line ---------------------------------------------------------------------------------------------


def _age(seconds_since_epoch: float) -> str:
    if not seconds_since_epoch:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds_since_epoch))


async def _list(redis, keys: Keys, args) -> int:
    letters = await read_all(redis, keys, args.count)
    if args.format == "json":
        print(json.dumps([letter.as_json() for letter in letters], indent=2))
        return 0
    if not letters:
        print(f"{keys.dead}: no dead letters")
        return 0
    for letter in letters:
        source = letter.source.removeprefix(keys.prefix) or "?"
        print(printable(f"{letter.id}  {_age(letter.buried)} UTC  {source:<7}  {letter.what(keys)}  "
                        f"attempts {letter.text('attempts') or '?'}  {letter.reason()}", 400))  # fmt: skip
    total = await redis.xlen(keys.dead)
    print(f"{len(letters)} of {total} dead letters in {keys.dead}; `drbot dead-letters show ID` prints one")
    return 0


async def _show(redis, keys: Keys, args) -> int:
    status = 0
    for entry_id in args.ids:
        letter = await read_one(redis, keys, entry_id)
        if letter is None:
            print(f"drbot dead-letters: no entry {entry_id} in {keys.dead}", file=sys.stderr)
            status = 1
            continue
        if args.format == "json":
            print(json.dumps(letter.as_json(), indent=2))
            continue
        print(f"{letter.id}: {printable(letter.what(keys))}")
        for name in ("source", "source_id", "attempts"):
            print(f"  {name}: {printable(letter.text(name))}")
        print(f"  buried: {_age(letter.buried)} UTC")
        for name in (n for n in letter.fields if n not in BURIAL_FIELDS and n != "body"):
            print(f"  {name}: {printable(letter.text(name), 200)}")
        if "body" in letter.fields:
            print(f"  body: {len(letter.fields['body'])} bytes (`--format json` prints it)")
        print("  error:\n    " + printable(letter.text("error")).replace("\n", "\n    "))
    return status


async def _chosen(redis, keys: Keys, args) -> list[DeadLetter] | None:
    if args.all:
        return await read_all(redis, keys)
    letters = []
    for entry_id in args.ids:
        letter = await read_one(redis, keys, entry_id)
        if letter is None:
            print(f"drbot dead-letters: no entry {entry_id} in {keys.dead}", file=sys.stderr)
            return None
        letters.append(letter)
    return letters


async def _replay(redis, keys: Keys, args) -> int:
    import os

    letters = await _chosen(redis, keys, args)
    if letters is None:
        return 1
    secret = os.environ.get("GITHUB_WEBHOOK_SECRET") or None
    refused = 0
    for letter in letters:
        try:
            new_id = await replay(redis, keys, letter, secret)
        except ReplayRefused as why:
            print(f"drbot dead-letters: {printable(str(why))}", file=sys.stderr)
            refused += 1
            continue
        print(f"{letter.id} -> {letter.source} {new_id}")
    return 1 if refused else 0


async def _drop(redis, keys: Keys, args) -> int:
    letters = await _chosen(redis, keys, args)
    if letters is None:
        return 1
    dropped = await redis.xdel(keys.dead, *(letter.id for letter in letters)) if letters else 0
    print(f"dropped {dropped} dead letter{'s' if dropped != 1 else ''} from {keys.dead}")
    return 0


COMMANDS = {"list": _list, "show": _show, "replay": _replay, "drop": _drop}


async def _run(args) -> int:
    redis = connect(args.redis_url)
    try:
        return await COMMANDS[args.dead_command](redis, Keys(args.key_prefix), args)
    finally:
        await redis.aclose()


def main(args) -> int:
    return asyncio.run(_run(args))
