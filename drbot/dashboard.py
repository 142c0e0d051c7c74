"""`drbot dashboard`: scan releases as `drbot analyze` does, read the registry if asked, write the static site."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_release(text: str) -> tuple[str, Path]:
    """`0.42.1=/path/to/diffusers` -> ("0.42.1", Path(...)); ValueError with the fix otherwise."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ValueError(f"{text!r}: give a release as NAME=PATH, e.g. 0.42.1=path/to/diffusers")
    if not Path(path).exists():
        raise ValueError(f"{text!r}: no such file or directory {path}")
    return name.strip(), Path(path)


def _read_registry(args: argparse.Namespace) -> dict[str, dict]:
    import asyncio

    from bot.known import KnownRegistry
    from bot.store import Keys, connect

    async def read() -> dict[str, dict]:
        redis = connect(args.redis_url)
        try:
            return await KnownRegistry(redis, Keys(args.key_prefix), args.registry).all()
        finally:
            await redis.aclose()

    return asyncio.run(read())


def _mapped_issues(links, findings) -> dict[str, int]:
    """fingerprint -> tracking issue for the findings `known-issues.yml` links (its most specific entry)."""
    from bot.known import issue_for

    found = {f.fingerprint: issue_for(f, links) for f in findings}
    return {fp: issue for fp, issue in found.items() if issue is not None}


def main(args: argparse.Namespace) -> int:
    from analyzers import dashboard
    from analyzers.core import all_rules
    from analyzers.scan import UsageError
    from drbot.cli import EXIT_CLEAN, _fail, scan_report

    try:
        named = [parse_release(text) for text in args.releases]
    except ValueError as error:
        return _fail(str(error))
    if not named and not args.registry:
        return _fail("name at least one RELEASE=PATH, or --registry REPO")
    if len({name for name, _ in named}) != len(named):
        return _fail("each release needs its own name")
    try:
        plotly_js = dashboard.plotly_js_path()
    except FileNotFoundError as error:
        return _fail(str(error))
    docs_base = args.docs_base or dashboard.DOCS_URL
    links = None
    if args.mapping:  # read before the scans, which take minutes: a broken file fails at once
        try:
            from bot.known import parse_mapping

            links = parse_mapping(Path(args.mapping).read_text(encoding="utf-8"))
        except ImportError as error:
            return _fail(f"--mapping needs PyYAML: pip install 'drbot[bot]' ({error})")
        except (OSError, ValueError) as error:
            return _fail(f"--mapping {args.mapping}: {error}")
    registry = None
    if args.registry:
        try:
            registry = _read_registry(args)
        except ImportError as error:
            return _fail(f"--registry needs the App's dependencies: pip install 'drbot[bot]' ({error})")
        except OSError as error:
            return _fail(f"--registry: Redis unreachable: {error}")
    releases = []
    rules = all_rules()
    for name, path in named:
        try:
            report = scan_report([path], rules, args)
        except UsageError as error:
            return _fail(str(error))
        not_analysed = len({e.path for e in report.errors})
        releases.append(dashboard.Release(name, report.findings, not_analysed, dashboard.release_ref(name)))
        per_pattern = ", ".join(
            f"P{t}: {sum(1 for f in report.findings if f.pattern == t)}"
            for t in sorted({f.pattern for f in report.findings})
        )
        print(f"{name}: {len(report.findings)} findings in {report.files} files ({per_pattern})", file=sys.stderr)
    repo = args.registry or "huggingface/diffusers"
    issues = _mapped_issues(links, releases[-1].findings) if links and releases else None
    if releases:
        data = dashboard.build_data(releases, repo=repo, registry=registry, docs_base=docs_base, issues=issues)
    else:
        assert registry is not None
        data = dashboard.from_registry(registry, repo=repo, docs_base=docs_base)
    try:
        written = dashboard.write_site(args.out, data, plotly_js)
    except OSError as error:
        return _fail(f"cannot write --out {args.out}: {error.strerror or error}")
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    return EXIT_CLEAN
