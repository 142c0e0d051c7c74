"""Sample findings (seeded, every rule covered) and write docs/precision.md with their verdicts.

The wheel sample is drawn from the full scan of the installed diffusers 0.42.1 package: up to `PER_RULE`
findings of every rule that has any, then more at random until `SIZE` are sampled. Pattern 10 (test coverage)
is sampled the same way from a scan of a diffusers repository checkout, which is kept outside this project
(`--checkout PATH`; without it the pattern 10 section is left as it was).

"At random" is a seeded ranking: each finding ranks by sha256 of the seed and its fingerprint (line-independent),
so the sample is reproducible and a rule change that adds or drops findings moves only those findings in or out.

Verdicts live in docs/precision-judgments.json ({fingerprint: {"verdict": "TP"|"FP"|"debatable", "reason": ...}}),
each judged by reading the code: TP a defect, FP not one, debatable a reasonable maintainer might not call it a
defect. Precision of `error` and `warning` findings counts debatable against it; notes are reported apart.

Run: `.venv/bin/python bench/precision.py [--checkout PATH] [--scan FILE] [--sample-only]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzers.core import all_rules  # noqa: E402
from analyzers.scan import installed_diffusers, scan  # noqa: E402


#: the sample of issue 12 item 5 ("Precision kept honest"); the earlier samples used 13656
SEED = 20261207
JUDGMENTS = ROOT / "docs" / "precision-judgments.json"
PAGE = ROOT / "docs" / "precision.md"
#: findings sampled from the wheel, and from the checkout's pattern 10 findings
SIZE = 100
SIZE_P10 = 30
#: the sample takes up to this many findings of each rule before filling at random
PER_RULE = 3
VERDICTS = ("TP", "FP", "debatable")
SEVERITIES = ("error", "warning", "note")
#: precision (TP over judged, debatable counting against) that errors and warnings together must reach
TARGET = 0.95


def rank(finding, seed: int = SEED) -> str:
    """The finding's place in the seeded random order."""
    return hashlib.sha256(f"{seed}:{finding.fingerprint}".encode()).hexdigest()


def sample(findings, size: int = SIZE, per_rule: int = PER_RULE, seed: int = SEED) -> list:
    """Up to `per_rule` findings of each rule, then the next in the seeded order until `size`; sorted by rule."""
    ordered = sorted(findings, key=lambda f: rank(f, seed))
    picked: list = []
    taken: Counter = Counter()
    for f in ordered:
        if taken[f.code] < per_rule:
            picked.append(f)
            taken[f.code] += 1
    chosen = {f.fingerprint for f in picked}
    picked += [f for f in ordered if f.fingerprint not in chosen][: max(0, size - len(picked))]
    return sorted(picked, key=lambda f: (f.code, f.path, f.line, f.fingerprint))


def precision(verdicts: Counter) -> str:
    judged = sum(verdicts[v] for v in VERDICTS)
    return f"{100 * verdicts['TP'] / judged:.1f}%" if judged else "n/a"


def tally(picked, judgments) -> dict[str, Counter]:
    """Verdict counts per rule code and per severity (keys: codes, severities, and "errors+warnings")."""
    out: dict[str, Counter] = {}
    for f in picked:
        verdict = judgments.get(f.fingerprint, {}).get("verdict", "?")
        for key in (f.code, f.severity) + (("errors+warnings",) if f.severity != "note" else ()):
            out.setdefault(key, Counter())[verdict] += 1
    return out


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def _section(key: str, title: str, where: str, report, judgments, size: int) -> tuple[str, dict[str, Counter]]:
    findings = report.findings
    picked = sample(findings, size)
    counts = tally(picked, judgments)
    in_scan = Counter(f.code for f in findings)
    severity_of = {f.code: f.severity for f in findings}
    unjudged = sum(1 for f in picked if f.fingerprint not in judgments)
    lines = [
        f"<!-- precision:{key}:start -->",
        f"## {title}",
        "",
        f"{len(picked)} of {len(findings)} findings sampled from {where}, {PER_RULE} or all of each rule's, "
        "the rest at random." + (f" **{unjudged} not judged yet.**" if unjudged else ""),
        "",
        "### Per severity",
        "",
        "| severity | sampled | TP | FP | debatable | precision | all judged | precision over all judged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    everything = tally(findings, judgments)
    for sev in (*SEVERITIES, "errors+warnings"):
        c, a = counts.get(sev, Counter()), everything.get(sev, Counter())
        if sev in SEVERITIES and not c:
            continue
        name = f"**{sev}**" if sev == "errors+warnings" else sev
        lines.append(
            f"| {name} | {sum(c.values())} | {c['TP']} | {c['FP']} | {c['debatable']} | {precision(c)} | "
            f"{sum(a.values()) - a['?']} of {sum(a.values())} | {precision(a)} |"
        )
    lines += [
        "",
        "### Per rule",
        "",
        "The sample's verdicts, then under *all judged* the verdicts of every finding of the scan judged so far, "
        "the sample included (they count for no target).",
        "",
        "| rule | severity | findings | sampled | TP | FP | debatable | all judged | TP | FP | debatable |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for code in sorted(in_scan):
        c, a = counts.get(code, Counter()), everything.get(code, Counter())
        lines.append(
            f"| {code} | {severity_of[code]} | {in_scan[code]} | {sum(c.values())} | {c['TP']} | {c['FP']} | "
            f"{c['debatable']} | {in_scan[code] - a['?']} | {a['TP']} | {a['FP']} | {a['debatable']} |"
        )
    lines += [
        "",
        "### The sample",
        "",
        "| # | rule | severity | where | scope | symbol | verdict | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(picked, start=1):
        judged = judgments.get(f.fingerprint, {"verdict": "?", "reason": "not judged yet"})
        lines.append(
            f"| {i} | {f.code} | {f.severity} | `{f.path}:{f.line}` | `{_cell(f.scope)}` | `{_cell(f.symbol)}` | "
            f"**{judged['verdict']}** | {_cell(judged['reason'])} |"
        )
    others = [(i, f) for i, f in enumerate(picked, start=1) if judgments.get(f.fingerprint, {}).get("verdict") != "TP"]
    lines += ["", "### Not true positives", ""]
    lines += [
        f"- #{i} {f.code} ({f.severity}) `{f.path}:{f.line}`: **{judgments.get(f.fingerprint, {}).get('verdict', '?')}**, "
        f"{judgments.get(f.fingerprint, {}).get('reason', 'not judged yet')}"
        for i, f in others
    ] or ["None."]
    lines.append(f"<!-- precision:{key}:end -->")
    return "\n".join(lines), counts


HEADER = """# Precision

A sample of the findings, each judged by reading the code: **TP** (a defect), **FP** (not one) or
**debatable** (a reasonable maintainer might not call it a defect). The sample takes {per_rule} findings of
every rule that has any (all of them when it has fewer), then more at random until it holds {size}; the random
order ranks each finding by `sha256("{seed}:<fingerprint>")`, so the sample is reproducible and a finding that
comes or goes moves only itself (the issue 12 sample; the earlier ones used seed 13656).

Precision is TP over the judged findings. For `error` and `warning` findings a debatable verdict counts against
it; the target is at least {target:.0%} for errors and warnings together. Notes (maintenance, documentation,
feature gaps) are reported apart. Taking every rule's findings first over-weights the rules with few findings,
so the sample's precision is a stricter number than the whole scan's: the tables also give the verdicts of every
finding judged so far (for issue 12 every finding of both scans; the many findings of DRB102, DRB103, DRB501,
DRB014 and DRB015 outside the sample share one idiom each and were judged from a listing of their lines or a
grep of the tests, with one reason each).

Verdicts live in `docs/precision-judgments.json`, keyed by fingerprint (a finding whose fingerprint changes is
judged again; `previous` keeps an earlier verdict that changed). Regenerate with:

```
.venv/bin/python bench/precision.py --checkout PATH
```

where PATH holds a diffusers repository checkout (`src/`, `tests/`) for pattern 10, e.g.
`git -C /work/.mirror/huggingface+diffusers/repo archive {commit} src tests | tar -x -C PATH`
(diffusers main of 2026-08-23, the checkout judged here). Without `--checkout` the pattern 10 section stays
as it is; `--scan FILE` and `--checkout-scan FILE` read findings from `drbot analyze --no-cache --format json`
output instead of scanning again.
"""

WHEEL_TITLE = "Diffusers 0.42.1 (the pinned wheel)"
WHEEL_WHERE = "the installed diffusers 0.42.1 package"
#: the diffusers commit of the checkout the pattern 10 section was judged on (main on 2026-08-23)
CHECKOUT_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"


def _from_json(path: Path, pattern: int | None = None) -> SimpleNamespace:
    """Findings as `drbot analyze --format json` wrote them (it does not say how many files it read)."""
    data = json.loads(path.read_text())
    findings = [SimpleNamespace(**f) for f in data["findings"] if pattern is None or f["pattern"] == pattern]
    return SimpleNamespace(findings=findings, files=None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, help="a diffusers repository checkout, for pattern 10")
    parser.add_argument("--scan", type=Path, help="the wheel's findings as `drbot analyze --format json` wrote them")
    parser.add_argument("--checkout-scan", type=Path, help="the checkout's findings as JSON, instead of --checkout")
    parser.add_argument("--sample-only", action="store_true", help="print the unjudged sampled findings as JSON lines")
    parser.add_argument("--record", action="store_true", help="also write the per-severity numbers to BENCHMARKS.md")
    args = parser.parse_args()
    judgments = json.loads(JUDGMENTS.read_text()) if JUDGMENTS.exists() else {}
    wheel = _from_json(args.scan) if args.scan else scan([installed_diffusers()])
    checkout = _from_json(args.checkout_scan, pattern=10) if args.checkout_scan else None
    if args.checkout:
        report = scan([args.checkout], [rule for rule in all_rules() if rule.pattern == 10])
        checkout = SimpleNamespace(findings=[f for f in report.findings if f.pattern == 10], files=report.files)
    groups = [("wheel", wheel, SIZE)] + ([("p10", checkout, SIZE_P10)] if checkout else [])
    if args.sample_only:
        for _, report, size in groups:
            for f in sample(report.findings, size):
                if f.fingerprint not in judgments:
                    print(json.dumps(vars(f) if isinstance(f, SimpleNamespace) else f.to_dict()))
        return 0
    old = PAGE.read_text() if PAGE.exists() else ""
    text, counts = _section(
        "wheel",
        "Diffusers 0.42.1 (the pinned wheel)",
        "the installed diffusers 0.42.1 package",
        wheel,
        judgments,
        SIZE,
    )
    sections = [text]
    if checkout is not None:
        text, p10 = _section(
            "p10",
            "Pattern 10: test coverage (diffusers checkout)",
            "a diffusers repository checkout (`src/`, `tests/`)",
            checkout,
            judgments,
            SIZE_P10,
        )
        sections.append(text)
        print(f"pattern 10: {dict(p10.get('errors+warnings', Counter()))}, notes {dict(p10.get('note', Counter()))}")
    else:
        kept = re.search(r"<!-- precision:p10:start -->.*?<!-- precision:p10:end -->", old, re.S)
        if kept:
            sections.append(kept.group(0))
    for sev in (*SEVERITIES, "errors+warnings"):
        c = counts.get(sev, Counter())
        print(
            f"{sev}: {sum(c.values())} sampled, {c['TP']} TP, {c['FP']} FP, {c['debatable']} debatable, "
            f"{c['?']} unjudged, precision {precision(c)}"
        )
    header = HEADER.format(per_rule=PER_RULE, size=SIZE, seed=SEED, target=TARGET, commit=CHECKOUT_COMMIT)
    PAGE.write_text(header + "\n" + "\n\n".join(sections) + "\n")
    if args.record:
        from bench._record import record

        rows = "\n".join(
            f"| {sev} | {sum(counts.get(sev, Counter()).values())} | {counts.get(sev, Counter())['TP']} "
            f"| {counts.get(sev, Counter())['FP']} | {counts.get(sev, Counter())['debatable']} "
            f"| {precision(counts.get(sev, Counter()))} |"
            for sev in (*SEVERITIES, "errors+warnings")
        )
        ew = counts.get("errors+warnings", Counter())
        judged = sum(ew[v] for v in VERDICTS)
        met = judged and ew["TP"] >= TARGET * judged
        body = (
            "## Precision of the findings on diffusers 0.42.1\n\n"
            f"A seeded sample of {len(sample(wheel.findings))} of {len(wheel.findings)} findings (every rule's first "
            f"{PER_RULE}, the rest at random), each judged by reading the code; debatable verdicts count against "
            "errors and warnings. Verdicts and reasons: docs/precision.md.\n\n"
            "| severity | sampled | TP | FP | debatable | precision |\n|---|---|---|---|---|---|\n"
            f"{rows}\n\n"
            f"Target: errors and warnings at least {TARGET:.0%}: **{'met' if met else 'NOT met'}**."
        )
        record("precision", "python bench/precision.py --record", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
