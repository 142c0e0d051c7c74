"""The `drbot` command line: parses arguments and imports each subcommand's code lazily."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn


EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
FORMATS = ("text", "json", "sarif", "markdown", "github")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 too; keep its usage line
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _split(values: Sequence[str] | None) -> list[str]:
    return [part for value in values or () for part in value.split(",") if part.strip()]


def _positive_int(text: str) -> int:
    """argparse type: a count of 1 or more (`-j -3` reached a process pool that raised ValueError)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


DEVICE_RE = re.compile(r"cpu|cuda(:\d+)?")


def _device(text: str) -> str:
    """argparse type: a torch device the contracts run on."""
    if not DEVICE_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device drbot runs contracts on; use cpu, cuda or cuda:N")
    return text


def _command(sub, name: str, text: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose `--help` opens with the line `drbot --help` shows for it."""
    kwargs.setdefault("description", text[0].upper() + text[1:] + ".")
    return sub.add_parser(name, help=text, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="drbot", description="Review huggingface/diffusers code for the bug patterns of #13656.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    key_prefix = os.environ.get("DRBOT_KEY_PREFIX", "drbot:")
    redis_help = "the Redis server (default: $REDIS_URL or redis://127.0.0.1:6379/0)"
    prefix_help = "prefix of every Redis key drbot uses (default: $DRBOT_KEY_PREFIX or drbot:)"
    select_help = "only these rules: codes (DRB201), code prefixes (DRB2) or patterns (P1), comma-separated"
    ignore_help = "skip these rules: codes, code prefixes or patterns, comma-separated"
    dtype_help = "run the pipelines in this dtype (default: the components' own, fp32)"
    cache_help = (
        "analyse every file again: neither read nor write the result cache "
        "($DRBOT_CACHE_DIR, else $XDG_CACHE_HOME/drbot or ~/.cache/drbot)"
    )

    analyze = _command(
        sub,
        "analyze",
        "run the rules on files or directories",
        description="Run the rules on files or directories. Exit status: 0 no findings, 1 findings or a file that "
        "could not be analysed, 2 usage or internal error.",
    )
    analyze.add_argument("paths", nargs="*", type=Path, help="files or directories (default: the installed diffusers)")
    analyze.add_argument("--format", choices=FORMATS, default=None, help="output format (default: text)")
    analyze.add_argument("--select", action="append", metavar="CODES", help=select_help)
    analyze.add_argument("--ignore", action="append", metavar="CODES", help=ignore_help)
    analyze.add_argument(
        "--jobs", "-j", type=_positive_int, default=None, help="worker processes (default: all cores)"
    )
    analyze.add_argument(
        "--docs-base", help="URL or path prefix of the rule pages (default: drbot's rule documentation on GitHub)"
    )
    analyze.add_argument("--output", "-o", type=Path, help="write the report to this file instead of stdout")
    analyze.add_argument(
        "--include-deprecated", action="store_true", help="also scan diffusers/pipelines/deprecated/ (frozen upstream)"
    )
    analyze.add_argument("--no-cache", action="store_true", help=cache_help)

    fix = _command(
        sub,
        "fix",
        "apply the rules' fixes to files or directories, or print them as a diff",
        description="Apply the rules' fixes in place (or print them as a unified diff with --diff). A fix is offered "
        "only where the remedy is certain; a file's fixes are kept only if it still compiles and no rule reports "
        "more on it. Exit status: 0 nothing left to fix or report, 1 findings remain (those without a fix, or a "
        "file that could not be analysed; with --diff, also fixes not yet applied), 2 usage or internal error.",
    )
    fix.add_argument("paths", nargs="*", type=Path, help="files or directories (default: the installed diffusers)")
    fix.add_argument("--select", action="append", metavar="CODES", help=select_help)
    fix.add_argument("--ignore", action="append", metavar="CODES", help=ignore_help)
    fix.add_argument("--diff", action="store_true", help="print the fixes as a unified diff; change no file")
    fix.add_argument("--jobs", "-j", type=_positive_int, default=None, help="worker processes (default: all cores)")
    fix.add_argument(
        "--include-deprecated", action="store_true", help="also fix diffusers/pipelines/deprecated/ (frozen upstream)"
    )
    fix.add_argument("--no-cache", action="store_true", help=cache_help)

    review = _command(sub, "review", "print the review the App would post for a local git diff")
    review.add_argument("--base", required=True, help="base revision (e.g. main or a merge-base)")
    review.add_argument("--head", default="HEAD", help="head revision (default: HEAD)")
    review.add_argument("--repo", type=Path, default=Path("."), help="the git repository (default: .)")
    review.add_argument("--select", action="append", metavar="CODES", help=select_help)
    review.add_argument("--ignore", action="append", metavar="CODES", help=ignore_help)
    review.add_argument(
        "--docs-base", help="URL or path prefix of the rule pages (default: drbot's rule documentation on GitHub)"
    )
    review.add_argument("--no-cache", action="store_true", help=cache_help)
    review.add_argument(
        "--format",
        choices=("markdown", "json", "sarif", "github"),
        default="markdown",
        help="the App's summary comment (markdown, the default), or the new findings and the files not analysed as "
        "json, sarif (code scanning) or github (workflow annotations)",
    )
    review.add_argument("--output", "-o", type=Path, help="write the review to this file instead of stdout")

    rules = _command(sub, "rules", "list the rules, or print one rule's documentation")
    rules.add_argument(
        "code", nargs="?", help="a rule code such as DRB201 (its page), or a prefix (DRB2) or pattern (P1) to list"
    )
    rules.add_argument(
        "--format",
        choices=("text", "markdown"),
        default="text",
        help="a rule page as text or Markdown (default: text)",
    )

    serve = _command(
        sub,
        "serve",
        "run the GitHub App: webhook intake and event worker (settings from the environment)",
        description="Run the GitHub App. Settings: GITHUB_WEBHOOK_SECRET (required), GITHUB_APP_ID, "
        "GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH, GITHUB_API_URL, REDIS_URL, DRBOT_PORT.",
    )
    roles = serve.add_mutually_exclusive_group()
    roles.add_argument("--worker-only", action="store_true", help="consume events; no webhook endpoint")
    roles.add_argument("--web-only", action="store_true", help="accept webhooks; no event worker")

    known = _command(sub, "known", "the known-findings registry in Redis (import, export, list, stats)")
    known_sub = known.add_subparsers(dest="known_command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, text in (
        ("import", "scan a checkout or the installed package and record every finding as known"),
        ("export", "print the registry as JSON"),
        ("list", "print the registry as a table"),
        ("stats", "per-rule feedback: findings posted and ignored by maintainers"),
    ):
        command = _command(known_sub, name, text)
        command.add_argument("--repo", default="huggingface/diffusers", help="owner/name (default: %(default)s)")
        command.add_argument("--redis-url", default=redis_url, help=redis_help)
        command.add_argument("--key-prefix", default=key_prefix, help=prefix_help)
        if name == "import":
            command.add_argument("paths", nargs="*", help="a checkout or package (default: the installed diffusers)")
            command.add_argument("--mapping", help="known-issues.yml (default: ./known-issues.yml when present)")
            command.add_argument(
                "-j", "--jobs", type=_positive_int, default=None, help="worker processes (default: all cores)"
            )
        if name == "list":
            command.add_argument(
                "--status", choices=("open", "tracked", "suppressed", "fixed"), help="only findings with this status"
            )
            command.add_argument(
                "--format", choices=("table", "json"), default="table", help="output format (default: table)"
            )

    dashboard = _command(
        sub,
        "dashboard",
        "write the pattern dashboard: a static site of findings by family and pattern across releases",
        description="Write the pattern dashboard into --out: index.html (families x patterns, per-pattern trend, "
        "new and fixed since the previous release; works offline), data.json and tracking.md (a row per pattern, "
        "for the meta issue). Releases are scanned as `drbot analyze` scans them, oldest first; with --registry, "
        "the known-findings registry in Redis adds its statuses, or is the dashboard when no release is given.",
    )
    dashboard.add_argument(
        "releases", nargs="*", metavar="RELEASE=PATH", help="a release name and the tree to scan, oldest first"
    )
    dashboard.add_argument("--out", type=Path, required=True, help="the directory to write the site into")
    dashboard.add_argument("--registry", metavar="REPO", help="also read the registry of owner/name from Redis")
    dashboard.add_argument(
        "--mapping", metavar="FILE", help="link the last release's findings to tracking issues (known-issues.yml)"
    )
    dashboard.add_argument("--redis-url", default=redis_url, help=redis_help)
    dashboard.add_argument("--key-prefix", default=key_prefix, help=prefix_help)
    dashboard.add_argument(
        "--jobs", "-j", type=_positive_int, default=None, help="worker processes (default: all cores)"
    )
    dashboard.add_argument(
        "--include-deprecated", action="store_true", help="also scan diffusers/pipelines/deprecated/ (frozen upstream)"
    )
    dashboard.add_argument("--no-cache", action="store_true", help=cache_help)
    dashboard.add_argument(
        "--docs-base", help="URL or path prefix of the rule pages (default: drbot's rule documentation on GitHub)"
    )

    contracts = _command(
        sub,
        "contracts",
        "run the contract tests on tiny offline pipelines",
        description="Run the contract tests on tiny offline pipelines. Exit status: 0 every contract passed or was "
        "skipped, 1 a contract failed, 2 usage error or a contract the harness could not run.",
    )
    contracts.add_argument(
        "pipelines", nargs="*", help="pipeline classes (default: every one with a tiny factory, or a fast test class)"
    )
    contracts.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    contracts.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None, help=dtype_help)
    contracts.add_argument("--contract", action="append", metavar="CODES", help="only these contracts (DRC001,...)")
    contracts.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    contracts.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads (default: 1)")
    contracts.add_argument("--offload", action="store_true", help="enable_model_cpu_offload onto --device")
    contracts.add_argument(
        "--source",
        metavar="CHECKOUT",
        help="a diffusers checkout: build each pipeline the way its fast test class in tests/pipelines does, with "
        "the checkout's src/ (default: drbot's tiny factories and the installed diffusers)",
    )

    worker = _command(
        sub, "worker", "a contract runner: consume contract jobs from Redis (group `runners`) and report their results"
    )
    worker.add_argument("--redis-url", default=redis_url, help=redis_help)
    worker.add_argument("--key-prefix", default=key_prefix, help=prefix_help)
    worker.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    worker.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None, help=dtype_help)
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

    acl = _command(
        sub,
        "redis-acl",
        "write a Redis ACL file: the bot's user, one user per runner (DESIGN §7), and their passwords",
        description="Write a Redis ACL file (aclfile) with the bot's user, an admin user and one user per runner, "
        "and one password file per user (the matching component's REDIS_URL uses it); re-running keeps existing "
        "passwords. docs/security.md explains each user's rules.",
    )
    acl.add_argument("--prefix", default="drbot:", help="drbot's key prefix (DRBOT_KEY_PREFIX; default: %(default)s)")
    acl.add_argument("--bot-user", default="drbot", help="the bot's user name (default: %(default)s)")
    acl.add_argument("--runner", action="append", default=[], metavar="NAME", help="a runner's user name (repeat)")
    acl.add_argument("--acl-file", type=Path, required=True, help="where to write the ACL file")
    acl.add_argument("--secrets", type=Path, required=True, help="directory for the password files (mode 600)")

    dead = _command(
        sub,
        "dead-letters",
        "inspect the dead-letter stream and replay or drop its entries (list, show, replay, drop)",
        description="Inspect the dead-letter stream (events and result notices that failed too often or are "
        "malformed) and replay or drop its entries. A replayed event is checked as the webhook intake checks a "
        "delivery (its signature with $GITHUB_WEBHOOK_SECRET first) and verified again by the worker that takes it.",
    )
    dead_sub = dead.add_subparsers(dest="dead_command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, text in (
        ("list", "one line per dead letter, oldest first"),
        ("show", "every field of dead letters and their error"),
        ("replay", "send dead letters back to their stream, through its checks"),
        ("drop", "delete dead letters"),
    ):
        command = _command(dead_sub, name, text)
        command.add_argument("--redis-url", default=redis_url, help=redis_help)
        command.add_argument("--key-prefix", default=key_prefix, help=prefix_help)
        if name == "list":
            command.add_argument("--count", type=_positive_int, help="only the newest COUNT (default: all)")
        if name in ("list", "show"):
            command.add_argument(
                "--format", choices=("text", "json"), default="text", help="output format (default: text)"
            )
        if name == "show":
            command.add_argument("ids", nargs="+", metavar="ID", help="dead-letter entry ids (from `list`)")
        if name in ("replay", "drop"):
            which = command.add_mutually_exclusive_group(required=True)
            which.add_argument("ids", nargs="*", default=[], metavar="ID", help="dead-letter entry ids (from `list`)")
            which.add_argument("--all", action="store_true", help="every dead letter")
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
            "analyze": _analyze, "fix": _fix, "review": _review, "rules": _rules, "serve": _serve, "known": _known,
            "contracts": _contracts, "worker": _worker, "redis-acl": _redis_acl, "dead-letters": _dead_letters,
            "dashboard": _dashboard,
        }  # fmt: skip
        return commands[args.command](args)
    except BrokenPipeError:
        return EXIT_CLEAN
    except KeyboardInterrupt:
        return 130


def _selected_rules(args: argparse.Namespace):
    from analyzers.core import all_rules, select_rules

    rules = all_rules()
    for option, values in (("--select", args.select), ("--ignore", args.ignore)):
        for value in _split(values):
            _check_selector(rules, option, value)
    chosen = select_rules(rules, _split(args.select), _split(args.ignore))
    if not chosen:
        raise SystemExit(_fail("--select and --ignore leave no rule to run"))
    return chosen


def _check_selector(rules, option: str, value: str) -> None:
    """Exit 2 on a selector that names no rule: a typo must not silently select nothing or ignore nothing."""
    from analyzers.core import BARE_IGNORE_CODE, select_rules

    if select_rules(rules, [value]):
        return
    if BARE_IGNORE_CODE.startswith(value.strip().upper()):
        # DRB000 is reported by the suppression comments themselves, whatever the rule selection
        why = f"{BARE_IGNORE_CODE} cannot be selected or ignored; name the rule in the comment, as in `ignore[DRB201]`"
    else:
        why = "no rule has this code, code prefix or pattern (P1-P10); `drbot rules` lists them"
    raise SystemExit(_fail(f"{option} {value}: {why}"))


def _fail(message: str) -> int:
    print(f"drbot: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _analyze(args: argparse.Namespace) -> int:
    from analyzers import render
    from analyzers.scan import UsageError, installed_diffusers

    rules = _selected_rules(args)
    if args.output is not None and (args.output.is_dir() or not args.output.parent.is_dir()):
        # checked before a scan that may take a minute
        why = "it is a directory" if args.output.is_dir() else f"no directory {args.output.parent}"
        return _fail(f"cannot write --output {args.output}: {why}")
    try:
        report = scan_report(args.paths or [installed_diffusers()], rules, args)
    except UsageError as error:
        return _fail(str(error))
    errors = [(e.path, e.message) for e in report.errors]
    links = render.Links() if args.docs_base is None else render.Links(docs_base=args.docs_base)
    fmt = args.format or "text"
    if fmt == "json":
        out = render.to_json(report.findings, errors, file_paths=report.file_paths)
    elif fmt == "sarif":
        out = render.to_sarif(report.findings, errors, rules=rules, version=_version(), links=links,
                              file_paths=report.file_paths, root=report.root)  # fmt: skip
    elif fmt == "github":
        out = render.to_github(report.findings, errors, rules=rules, file_paths=report.file_paths)
    elif fmt == "markdown":
        out = render.to_markdown(report.findings, errors, rules=rules, links=links)
    else:
        out = render.to_text(report.findings, errors, files=report.files, skipped=report.skipped)
    if args.output:
        try:
            args.output.write_text(out, encoding="utf-8")
        except OSError as error:
            return _fail(f"cannot write --output {args.output}: {error.strerror or error}")
    else:
        sys.stdout.write(out)
    failed = len({e.path for e in report.errors})
    if failed:
        # a file that was not analysed may hide findings: the scan is not clean
        print(
            f"drbot: {_plural(failed, 'file')} could not be analysed (see the errors); exit status 1", file=sys.stderr
        )
    return EXIT_FINDINGS if report.findings or failed else EXIT_CLEAN


def scan_report(paths: Sequence[Path], rules, args: argparse.Namespace):
    """`drbot analyze`'s scan of `paths` (options `jobs`, `include_deprecated`, `no_cache` from `args`): what
    `drbot dashboard` counts too, so that its numbers are analyze's. Raises analyzers.scan.UsageError."""
    from analyzers.scan import scan, tty_progress
    from engine.isolation import Failure, Limits, Pool
    from engine.review import worker_modules

    # every file is parsed in a worker process under time and memory limits: a file that crashes libcst (deep
    # nesting) or never finishes is reported as not analysed, and the scan goes on
    with Pool(Limits(), args.jobs or os.cpu_count() or 1, preload=(*worker_modules(), "analyzers.scan")) as pool:

        def isolate(function, items):
            return [o.reason if isinstance(o, Failure) else o for o in pool.map(function, items)]

        progress = tty_progress if sys.stderr.isatty() else None
        return scan(paths, rules, jobs=args.jobs, progress=progress, include_frozen=args.include_deprecated,
                    isolate=isolate, cache=_cache(args))  # fmt: skip


def _fix(args: argparse.Namespace) -> int:
    import tempfile

    from analyzers.cache import ResultCache
    from analyzers.fixes import unified_diff
    from analyzers.scan import UsageError, installed_diffusers
    from engine.fix import fix_tree
    from engine.isolation import Failure, Limits, Pool
    from engine.review import worker_modules

    rules = _selected_rules(args)
    fixable = [rule for rule in rules if rule.fixable]
    if not fixable:
        return _fail("--select and --ignore leave no rule with a fix; `drbot rules CODE` says whether one has")
    with contextlib.ExitStack() as stack:
        if args.no_cache:  # the passes still need a cache between them: a throwaway one
            cache = ResultCache(stack.enter_context(tempfile.TemporaryDirectory(prefix="drbot-fix-")))
        else:
            cache = ResultCache.default()
        pool = stack.enter_context(
            Pool(Limits(), args.jobs or os.cpu_count() or 1, preload=(*worker_modules(), "analyzers.scan"))
        )

        def isolate(function, items):
            return [o.reason if isinstance(o, Failure) else o for o in pool.map(function, items)]

        try:
            paths = args.paths or [installed_diffusers()]
            report = fix_tree(paths, rules, cache=cache, jobs=args.jobs, isolate=isolate,
                              include_frozen=args.include_deprecated, write=not args.diff)  # fmt: skip
        except UsageError as error:
            return _fail(str(error))
        except OSError as error:
            return _fail(f"cannot fix: {error}")
    if args.diff:
        for path, (old, new) in sorted(report.changed.items()):
            sys.stdout.write(unified_diff(report.file_paths.get(path, path), old, new))
    codes = {rule.code for rule in rules}
    remaining = report.remaining(codes)
    fixed = len(report.applied)
    verb = "would fix" if args.diff else "fixed"
    print(f"drbot: {verb} {_plural(fixed, 'finding')} in {_plural(len(report.changed), 'file')} "
          f"({report.passes} {'pass' if report.passes == 1 else 'passes'}); {_plural(len(remaining), 'finding')} of the selected rules "
          f"remain", file=sys.stderr)  # fmt: skip
    for finding, why in report.refused:
        print(f"drbot: not fixed: {finding.path}:{finding.line} {finding.code}: {why}", file=sys.stderr)
    for finding in report.gained():
        print(f"drbot: gained after the fixes: {finding.path}:{finding.line} {finding.code} {finding.message}",
              file=sys.stderr)  # fmt: skip
    failed = len({e.path for e in report.errors})
    if failed:
        print(f"drbot: {_plural(failed, 'file')} could not be analysed; exit status 1", file=sys.stderr)
    pending = args.diff and bool(report.changed)
    return EXIT_FINDINGS if remaining or failed or pending or report.gained() else EXIT_CLEAN


def _cache(args: argparse.Namespace):
    """The result cache of `analyze` and `review`, or None with `--no-cache`."""
    from analyzers.cache import ResultCache

    return None if args.no_cache else ResultCache.default()


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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
    if args.output is not None and (args.output.is_dir() or not args.output.parent.is_dir()):
        why = "it is a directory" if args.output.is_dir() else f"no directory {args.output.parent}"
        return _fail(f"cannot write --output {args.output}: {why}")
    try:
        data = review(args.repo, args.base, args.head, rules=rules, cache=_cache(args))
        root = _toplevel(args.repo)
    except GitError as error:
        return _fail(str(error))
    links = render.Links() if args.docs_base is None else render.Links(docs_base=args.docs_base)
    if args.format == "markdown":
        out = render.review_markdown(data, rules=rules, links=links)
    else:
        # the new findings (what the App posts inline), and every changed file drbot could not analyse
        errors = [*data.errors, *data.not_analysed]
        files = {path: _repo_file(root, path) for path in {f.path for f in data.new} | {p for p, _ in errors}}
        if args.format == "json":
            out = render.to_json(data.new, errors, file_paths=files)
        elif args.format == "sarif":
            out = render.to_sarif(data.new, errors, rules=rules, version=_version(), links=links, file_paths=files,
                                  root=root)  # fmt: skip
        else:
            out = render.to_github(data.new, errors, rules=rules, file_paths=files)
    if args.output:
        try:
            args.output.write_text(out, encoding="utf-8")
        except OSError as error:
            return _fail(f"cannot write --output {args.output}: {error.strerror or error}")
    else:
        sys.stdout.write(out)
    # a changed file drbot could not read, parse or analyse is not a clean review (the Markdown lists it)
    failed = len({path for path, _ in (*data.errors, *data.not_analysed)})
    if failed:
        print(
            f"drbot: {_plural(failed, 'file')} could not be analysed (see the review); exit status 1", file=sys.stderr
        )
    return EXIT_FINDINGS if data.new or failed else EXIT_CLEAN


def _toplevel(repo: Path) -> Path:
    from engine.review import _git

    return Path(_git(repo, "rev-parse", "--show-toplevel").strip())


def _repo_file(root: Path, path: str) -> str:
    """A finding's package path (`diffusers/…`) as the file's path in the repository (`src/diffusers/…`), which
    GitHub places annotations and code-scanning results by."""
    for candidate in (f"src/{path}", path):
        if (root / candidate).exists():
            return candidate
    return path if path.startswith("tests/") else f"src/{path}"


def _rules(args: argparse.Namespace) -> int:
    from analyzers.core import BARE_IGNORE_CODE, all_rules, select_rules
    from analyzers.docs import BARE_IGNORE_NAME, BARE_IGNORE_TITLE, as_text, page

    if args.code and (text := page(args.code)) is not None:
        sys.stdout.write(text if args.format == "markdown" else as_text(text))
        return EXIT_CLEAN
    rules = all_rules()
    # (code, name, pattern column, title); DRB000 has no rule class but is listed and documented like one
    rows = [(BARE_IGNORE_CODE, BARE_IGNORE_NAME, "-", BARE_IGNORE_TITLE)]
    rows += [(r.code, r.name, f"P{r.pattern}", r.title) for r in rules]
    listing_all = args.code is None or args.code.strip().upper() in ("", "ALL")
    if not listing_all:
        chosen = {r.code for r in select_rules(rules, [args.code])}
        if BARE_IGNORE_CODE.startswith(args.code.strip().upper()):
            chosen.add(BARE_IGNORE_CODE)
        rows = [row for row in rows if row[0] in chosen]
        if not rows:
            return _fail(f"no rule matches {args.code}: give a code (DRB201), a prefix (DRB2) or a pattern (P1-P10)")
    width = max(len(name) for _, name, _, _ in rows)
    for code, name, pattern, title in rows:
        print(f"{code}  {name:<{width}}  {pattern:<3} {title}")
    if listing_all:
        patterns = ", ".join(map(str, sorted({r.pattern for r in rules if r.pattern})))
        print(f"\n{len(rules)} rules for the patterns {patterns} of #13656, and {BARE_IGNORE_CODE} for drbot's own "
              "suppression comments. `drbot rules CODE` prints a rule's page.")  # fmt: skip
    return EXIT_CLEAN


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
        print(f"drbot serve: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    from bot.service import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings, web_enabled=not args.worker_only, worker_enabled=not args.web_only))
    return EXIT_CLEAN


def _app_command(command: str, module: str, args: argparse.Namespace) -> int:
    """Run `main(args)` of a `bot` module that talks to Redis: a missing [bot] extra or an unreachable Redis is a
    one-line error, a closed stdout (`| head`) ends quietly in main()."""
    import importlib

    try:
        command_main = importlib.import_module(module).main
    except ImportError as error:  # the [bot] extra is not installed
        print(f"drbot {command} needs the App's dependencies: pip install 'drbot[bot]' ({error})", file=sys.stderr)
        return EXIT_ERROR
    from redis.exceptions import RedisError

    try:
        return command_main(args)
    except BrokenPipeError:
        raise
    except (OSError, RedisError) as error:  # Redis unreachable, or the user may not read what it asked for
        from bot.settings import redact_url

        print(f"drbot {command}: Redis at {redact_url(args.redis_url)}: {error}", file=sys.stderr)
        return EXIT_ERROR


def _known(args: argparse.Namespace) -> int:
    return _app_command("known", "bot.known_cli", args)


def _dead_letters(args: argparse.Namespace) -> int:
    return _app_command("dead-letters", "bot.dead_letters", args)


def _dashboard(args: argparse.Namespace) -> int:
    from drbot.dashboard import main as dashboard_main

    return dashboard_main(args)


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
