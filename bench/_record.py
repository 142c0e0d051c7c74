"""Write one benchmark's section of BENCHMARKS.md, between markers, leaving the others alone."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path


BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def record(name: str, command: str, body: str) -> None:
    """Replace the section `name` of BENCHMARKS.md (or append it) with `body` and its command."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"{start}\n{body.rstrip()}\n\nCommand: `{command}` · {stamp} · {machine()}\n{end}"
    text = (
        BENCHMARKS.read_text()
        if BENCHMARKS.exists()
        else "# Benchmarks\n\nMeasured by the scripts in `bench/`; each section names the command that produced it.\n"
    )
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS.write_text(text)
