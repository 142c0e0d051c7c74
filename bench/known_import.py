"""Time `drbot known import` on the installed diffusers 0.42.1 into a scratch key prefix, twice (the second
run must change nothing), and record it in BENCHMARKS.md.

Run: `.venv/bin/python bench/known_import.py [--record]` (needs Redis at $REDIS_URL or 127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._record import record  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    prefix = f"drbot-bench-{uuid.uuid4().hex[:6]}:"
    drbot = [str(ROOT / ".venv" / "bin" / "drbot"), "known"]
    runs = []
    try:
        for _ in range(2):
            start = time.perf_counter()
            out = subprocess.run([*drbot, "import", "--key-prefix", prefix], capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 2
            runs.append((time.perf_counter() - start, out.stdout.strip()))
    finally:
        subprocess.run([*drbot, "export", "--key-prefix", prefix], capture_output=True, cwd=ROOT)
        import redis

        client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
    (first_s, first), (second_s, second) = runs
    unchanged = re.search(r"0 added, 0 updated, (\d+) unchanged", second)
    lines = [
        "## `drbot known import` on diffusers 0.42.1",
        "",
        "| run | wall seconds | what it did |",
        "|---|---|---|",
        f"| first (empty registry) | {first_s:.1f} | {first} |",
        f"| second (same package) | {second_s:.1f} | {second} |",
        "",
        "Nearly all of the time is the full scan; writing the registry (one HSET per 500 findings) is a few "
        "milliseconds. The second import " + ("changed nothing." if unchanged else "CHANGED ENTRIES (a bug)."),
    ]
    print("\n".join(lines))
    if args.record:
        record("known-import", "python bench/known_import.py --record", "\n".join(lines))
    return 0 if unchanged else 1


if __name__ == "__main__":
    sys.exit(main())
