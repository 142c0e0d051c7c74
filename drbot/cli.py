"""The `drbot` command line: parses arguments and imports each subcommand's code lazily."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
FORMATS = ("text", "json", "sarif", "markdown", "github")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its usage line
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _split(values: Sequence[str] | None) -> list[str]:
    return [part for value in values or () for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="drbot", description="Review huggingface/diffusers code for the bug patterns of #13656.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    analyze = sub.add_parser("analyze", help="run the rules on files or directories")
    analyze.add_argument("paths", nargs="*", type=Path, help="files or directories (default: the installed diffusers)")
    analyze.add_argument("--format", choices=FORMATS, default=None, help="output format (default: text)")
    analyze.add_argument("--select", action="append", metavar="CODES", help="rule codes, prefixes or P<n> patterns")
    analyze.add_argument("--ignore", action="append", metavar="CODES", help="rule codes, prefixes or P<n> to skip")
    analyze.add_argument("--jobs", "-j", type=int, default=None, help="worker processes (default: all cores)")
    analyze.add_argument("--docs-base", default="docs/rules/", help="URL or path prefix of the rule pages")
    analyze.add_argument("--output", "-o", type=Path, help="write the report to this file instead of stdout")
    analyze.add_argument(
        "--include-deprecated", action="store_true", help="also scan diffusers/pipelines/deprecated/ (frozen upstream)"
    )

    review = sub.add_parser("review", help="print the review the App would post for a local git diff")
    review.add_argument("--base", required=True, help="base revision (e.g. main or a merge-base)")
    review.add_argument("--head", default="HEAD", help="head revision (default: HEAD)")
    review.add_argument("--repo", type=Path, default=Path("."), help="the git repository (default: .)")
    review.add_argument("--select", action="append", metavar="CODES")
    review.add_argument("--ignore", action="append", metavar="CODES")
    review.add_argument("--docs-base", default="docs/rules/", help="URL or path prefix of the rule pages")

    rules = sub.add_parser("rules", help="list the rules, or print one rule's documentation")
    rules.add_argument("code", nargs="?", help="a rule code such as DRB201")

    serve = sub.add_parser(
        "serve",
        help="run the GitHub App: webhook intake and event worker (settings from the environment)",
        description="Settings: GITHUB_WEBHOOK_SECRET (required), GITHUB_APP_ID, GITHUB_PRIVATE_KEY or "
        "GITHUB_PRIVATE_KEY_PATH, GITHUB_API_URL, REDIS_URL, DRBOT_PORT.",
    )
    known = sub.add_parser("known", help="the known-findings registry in Redis (import, export, list, stats)")
    known_sub = known.add_subparsers(dest="known_command", required=True, parser_class=_Parser)
    for name, text in (
        ("import", "scan a checkout or the installed package and record every finding as known"),
        ("export", "print the registry as JSON"),
        ("list", "print the registry as a table"),
        ("stats", "per-rule feedback: findings posted and ignored by maintainers"),
    ):
        command = known_sub.add_parser(name, help=text)
        command.add_argument("--repo", default="huggingface/diffusers", help="owner/name (default: %(default)s)")
        command.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        command.add_argument("--key-prefix", default=os.environ.get("DRBOT_KEY_PREFIX", "drbot:"))
        if name == "import":
            command.add_argument("paths", nargs="*", help="a checkout or package (default: the installed diffusers)")
            command.add_argument("--mapping", help="known-issues.yml (default: ./known-issues.yml when present)")
            command.add_argument("-j", "--jobs", type=int, default=None)
        if name == "list":
            command.add_argument("--status", choices=("open", "tracked", "suppressed", "fixed"))
            command.add_argument("--format", choices=("table", "json"), default="table")

    contracts = sub.add_parser("contracts", help="run the contract tests on tiny offline pipelines")
    contracts.add_argument("pipelines", nargs="*", help="pipeline classes (default: every one with a tiny factory)")
    contracts.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    contracts.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None)
    contracts.add_argument("--contract", action="append", metavar="CODES", help="only these contracts (DRC001,...)")
    contracts.add_argument("--format", choices=("text", "json"), default="text")
    contracts.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    contracts.add_argument("--offload", action="store_true", help="enable_model_cpu_offload onto --device")

    worker = sub.add_parser("worker", help="a contract runner: consume jobs from Redis (group `runners`)")
    worker.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    worker.add_argument("--key-prefix", default=os.environ.get("DRBOT_KEY_PREFIX", "drbot:"))
    worker.add_argument("--device", default="cpu")
    worker.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None)
    worker.add_argument(
        "--visibility-timeout", type=float, default=900.0, help="seconds before a dead runner's job is claimed"
    )
    worker.add_argument("--burst", action="store_true", help="run the queued jobs, then exit")
    worker.add_argument("--name", default=None, help="runner name without Redis ACL users (default: the host name)")
    worker.add_argument(
        "--unsandboxed",
        action="store_true",
        help="run jobs without the sandbox: local development only, never on a runner that serves a repository",
    )

    acl = sub.add_parser(
        "redis-acl",
        help="write a Redis ACL file: the bot's user, one user per runner (DESIGN §7), and their passwords",
        description="Write a Redis ACL file (aclfile) with the bot's user, an admin user and one user per runner, "
        "and one password file per user (the matching component's REDIS_URL uses it); re-running keeps existing "
        "passwords. docs/security.md explains each user's rules.",
    )
    acl.add_argument("--prefix", default="drbot:", help="drbot's key prefix (DRBOT_KEY_PREFIX; default: %(default)s)")
    acl.add_argument("--bot-user", default="drbot", help="the bot's user name (default: %(default)s)")
    acl.add_argument("--runner", action="append", default=[], metavar="NAME", help="a runner's user name (repeat)")
    acl.add_argument("--acl-file", type=Path, required=True, help="where to write the ACL file")
    acl.add_argument("--secrets", type=Path, required=True, help="directory for the password files (mode 600)")

    roles = serve.add_mutually_exclusive_group()
    roles.add_argument("--worker-only", action="store_true", help="consume events; no webhook endpoint")
    roles.add_argument("--web-only", action="store_true", help="accept webhooks; no event worker")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(version("drbot"))
        except PackageNotFoundError:
            print("drbot (not installed)")
        return EXIT_CLEAN
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        commands = {
            "analyze": _analyze, "review": _review, "rules": _rules, "serve": _serve, "known": _known,
            "contracts": _contracts, "worker": _worker, "redis-acl": _redis_acl,
        }  # fmt: skip
        return commands[args.command](args)
    except BrokenPipeError:
        return EXIT_CLEAN
    except KeyboardInterrupt:
        return 130


def _selected_rules(args: argparse.Namespace):
    from analyzers.core import all_rules, select_rules

    rules = select_rules(all_rules(), _split(args.select), _split(args.ignore))
    if not rules:
        raise SystemExit(_fail("no rule matches --select/--ignore"))
    return rules


def _fail(message: str) -> int:
    print(f"drbot: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _analyze(args: argparse.Namespace) -> int:
    from analyzers import render
    from analyzers.scan import UsageError, installed_diffusers, scan, tty_progress
    from engine.isolation import Failure, Limits, Pool
    from engine.review import worker_modules

    rules = _selected_rules(args)
    # every file is parsed in a worker process under time and memory limits: a file that crashes libcst (deep
    # nesting) or never finishes is reported as not analysed, and the scan goes on
    with Pool(Limits(), args.jobs or os.cpu_count() or 1, preload=(*worker_modules(), "analyzers.scan")) as pool:

        def isolate(function, items):
            return [o.reason if isinstance(o, Failure) else o for o in pool.map(function, items)]

        try:
            paths = args.paths or [installed_diffusers()]
            progress = tty_progress if sys.stderr.isatty() else None
            report = scan(paths, rules, jobs=args.jobs, progress=progress, include_frozen=args.include_deprecated,
                          isolate=isolate)  # fmt: skip
        except UsageError as error:
            return _fail(str(error))
    errors = [(e.path, e.message) for e in report.errors]
    links = render.Links(docs_base=args.docs_base)
    fmt = args.format or "text"
    if fmt == "json":
        out = render.to_json(report.findings, errors)
    elif fmt == "sarif":
        out = render.to_sarif(report.findings, errors, rules=rules, version=_version(), links=links)
    elif fmt == "github":
        out = render.to_github(report.findings, errors, rules=rules)
    elif fmt == "markdown":
        out = render.to_markdown(report.findings, errors, rules=rules, links=links)
    else:
        out = render.to_text(report.findings, errors, files=report.files, skipped=report.skipped)
    if args.output:
        args.output.write_text(out, encoding="utf-8")
    else:
        sys.stdout.write(out)
    return EXIT_FINDINGS if report.findings else EXIT_CLEAN


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("drbot")
    except PackageNotFoundError:
        return "0"


def _review(args: argparse.Namespace) -> int:
    from analyzers import render
    from engine.review import GitError, review

    rules = _selected_rules(args)
    try:
        data = review(args.repo, args.base, args.head, rules=rules)
    except GitError as error:
        return _fail(str(error))
    sys.stdout.write(render.review_markdown(data, rules=rules, links=render.Links(docs_base=args.docs_base)))
    return EXIT_FINDINGS if data.new else EXIT_CLEAN


def _rules(args: argparse.Namespace) -> int:
    from analyzers.core import all_rules
    from analyzers.docs import rule_page

    rules = all_rules()
    if args.code:
        wanted = args.code.upper()
        for rule in rules:
            if rule.code == wanted:
                sys.stdout.write(rule_page(rule))
                return EXIT_CLEAN
        return _fail(f"no rule {args.code}; `drbot rules` lists them")
    width = max(len(rule.name) for rule in rules)
    for rule in rules:
        print(f"{rule.code}  {rule.name:<{width}}  P{rule.pattern:<2} {rule.title}")
    patterns = sorted({r.pattern for r in rules if r.pattern})
    print(f"\n{len(rules)} rules for {len(patterns)} patterns of #13656: {', '.join(map(str, patterns))}.")
    return EXIT_CLEAN


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    try:
        from bot.settings import Settings, SettingsError
    except ImportError as error:  # the [bot] extra is not installed
        print(f"drbot serve needs the App's dependencies: pip install 'drbot[bot]' ({error})", file=sys.stderr)
        return EXIT_ERROR
    try:
        settings = Settings.from_env()
        if not args.web_only:
            settings.require_app_credentials()
    except SettingsError as error:
        print(f"drbot serve: {error}", file=sys.stderr)
        return EXIT_ERROR
    from bot.service import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings, web_enabled=not args.worker_only, worker_enabled=not args.web_only))
    return EXIT_CLEAN


def _known(args: argparse.Namespace) -> int:
    try:
        from bot.known_cli import main as known_main
    except ImportError as error:  # the [bot] extra is not installed
        print(f"drbot known needs the App's dependencies: pip install 'drbot[bot]' ({error})", file=sys.stderr)
        return EXIT_ERROR
    from redis.exceptions import RedisError

    try:
        return known_main(args)
    except (OSError, RedisError) as error:  # Redis unreachable
        from bot.settings import redact_url

        print(f"drbot known: Redis at {redact_url(args.redis_url)}: {error}", file=sys.stderr)
        return EXIT_ERROR


def _contracts(args: argparse.Namespace) -> int:
    try:
        from runners.cli import main as contracts_main
    except ImportError as error:  # the [runner] extra is not installed
        print(f"drbot contracts needs torch and diffusers: pip install 'drbot[runner]' ({error})", file=sys.stderr)
        return EXIT_ERROR
    return contracts_main(args)


def _redis_acl(args: argparse.Namespace) -> int:
    from bot.acl import run

    return run(args)


def _worker(args: argparse.Namespace) -> int:
    try:
        from runners.worker import main as worker_main
    except ImportError as error:  # the [runner] extra is not installed
        print(f"drbot worker needs the runner's dependencies: pip install 'drbot[runner]' ({error})", file=sys.stderr)
        return EXIT_ERROR
    return worker_main(args)
