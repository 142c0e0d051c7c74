"""`drbot known import|export|list|stats`: the registry from the command line."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from bot.known import KnownRegistry, MappingError, parse_mapping
from bot.store import Keys, connect


def _mapping(path: str | None):
    if path is None:
        default = Path("known-issues.yml")
        if not default.is_file():
            return [], None
        path = str(default)
    try:
        return parse_mapping(Path(path).read_text()), path
    except OSError as error:
        raise SystemExit(f"drbot known: {path}: {error.strerror or error}") from None
    except MappingError as error:
        raise SystemExit(f"drbot known: {path}: {error}") from None


async def _import(args) -> int:
    from analyzers.core import all_rules
    from analyzers.scan import installed_diffusers, scan

    links, mapping_path = _mapping(args.mapping)
    paths = [Path(p) for p in args.paths] or [installed_diffusers()]
    start = time.perf_counter()
    report = scan(paths, all_rules(), jobs=args.jobs)
    scanned = time.perf_counter() - start
    redis = connect(args.redis_url)
    try:
        registry = KnownRegistry(redis, Keys(args.key_prefix), args.repo)
        counts = await registry.import_findings(report.findings, links)
        total = await redis.hlen(registry.key)
    finally:
        await redis.aclose()
    seconds = time.perf_counter() - start
    linked = f", mapping {mapping_path} ({len(links)} entries)" if mapping_path else ""
    print(
        f"{args.repo}: {len(report.findings)} findings in {report.files} files{linked}; "
        f"{counts['added']} added, {counts['updated']} updated, {counts['unchanged']} unchanged; "
        f"{total} known in all. Scan {scanned:.1f} s, total {seconds:.1f} s."
    )
    return 0


async def _read(args) -> dict[str, dict]:
    redis = connect(args.redis_url)
    try:
        return await KnownRegistry(redis, Keys(args.key_prefix), args.repo).all()
    finally:
        await redis.aclose()


async def _export(args) -> int:
    entries = await _read(args)
    json.dump({"repo": args.repo, "known": dict(sorted(entries.items()))}, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


async def _list(args) -> int:
    entries = await _read(args)
    rows = sorted(
        (e for e in entries.items() if args.status is None or e[1].get("status") == args.status),
        key=lambda item: (item[1]["pattern"], item[1]["path"], item[1]["code"]),
    )
    if args.format == "json":
        json.dump([{"fingerprint": fp, **entry} for fp, entry in rows], sys.stdout, indent=2)
        print()
        return 0
    print(f"{'fingerprint':16}  {'code':6}  {'status':10}  {'issue':>6}  location")
    for fp, entry in rows:
        issue = f"#{entry['issue']}" if entry.get("issue") else ""
        print(
            f"{fp:16}  {entry['code']:6}  {entry['status']:10}  {issue:>6}  {entry['path']} {entry['scope']} {entry['symbol']}"
        )
    print(f"{len(rows)} entries")
    return 0


async def _stats(args) -> int:
    from bot.feedback import Feedback

    redis = connect(args.redis_url)
    try:
        counts = await Feedback(redis, Keys(args.key_prefix)).all()
        entries = await KnownRegistry(redis, Keys(args.key_prefix), args.repo).all()
    finally:
        await redis.aclose()
    by_status: dict[str, int] = {}
    for entry in entries.values():
        by_status[entry.get("status", "open")] = by_status.get(entry.get("status", "open"), 0) + 1
    print(f"{args.repo}: {len(entries)} known findings " + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())))
    print(f"{'rule':6}  {'posted':>6}  {'ignored':>7}  kept by maintainers")
    for code, row in sorted(counts.items()):
        posted, ignored = row.get("posted", 0), row.get("ignored", 0)
        kept = f"{(posted - ignored) / posted:.0%}" if posted else "-"
        print(f"{code:6}  {posted:>6}  {ignored:>7}  {kept}")
    return 0


def main(args) -> int:
    handler = {"import": _import, "export": _export, "list": _list, "stats": _stats}[args.known_command]
    return asyncio.run(handler(args))
