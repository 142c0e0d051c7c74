"""The pattern dashboard: findings of one or more releases (or the known-findings registry) as families x patterns
counts, per-pattern trends, what is new and fixed since the previous release, and the meta issue's tracking table.

Pure: findings and registry entries in, `data.json`, `tracking.md` and `index.html` text out. The scan is the caller's
(`drbot dashboard` runs `drbot analyze`'s), and so is Redis (`bot.dashboard`). docs/dashboard.md describes the page.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from analyzers.families import family
from analyzers.findings import Finding
from analyzers.patterns import META_ISSUE, META_ISSUE_URL, PATTERNS, pattern_title
from analyzers.render import replace_marked


DATA_VERSION = 1
DOCS_URL = "https://github.com/huggingface/drbot/blob/main/docs/rules/"
#: the registry's statuses (bot.known.STATUSES), in the order the page shows them
STATUSES = ("open", "tracked", "suppressed", "fixed")
#: the statuses whose findings are still in the code (what the registry's matrix counts)
LIVE_STATUSES = frozenset({"open", "tracked"})
#: the marked section of the tracking issue's body that drbot keeps; nothing outside it is touched
TRACKING_START = "<!-- drbot:tracking -->"
TRACKING_END = "<!-- drbot:tracking:end -->"
#: tracking issues listed per pattern row before "and N more"
MAX_ISSUES_PER_ROW = 8
#: the chart library, bundled beside index.html (no CDN: the page works offline)
PLOTLY_JS = "plotly.min.js"


@dataclass(frozen=True)
class Release:
    """One scanned tree: its name (`0.42.1`), its findings as `drbot analyze` reports them, the files it could not
    analyse, and the git ref its source links point at (`v0.42.1`; None: no links to lines)."""

    name: str
    findings: Sequence[Finding]
    not_analysed: int = 0
    ref: str | None = None


def release_ref(name: str) -> str:
    """The diffusers tag of a release name: `0.42.1` and `v0.42.1` -> `v0.42.1`; anything else is used as is."""
    bare = name.removeprefix("v")
    return f"v{bare}" if bare[:1].isdigit() else name


def repo_path(path: str) -> str:
    """A finding's package path (`diffusers/x.py`) as the repository lays it out (`src/diffusers/x.py`)."""
    return path if path.startswith(("tests/", "src/")) else f"src/{path}"


def _finding_row(finding: Finding, repo: str, ref: str | None, docs_base: str, status: str | None) -> dict:
    path = repo_path(finding.path)
    url = None
    if ref:
        url = f"https://github.com/{repo}/blob/{ref}/{path}" + (f"#L{finding.line}" if finding.line else "")
    row = {
        "fingerprint": finding.fingerprint,
        "code": finding.code,
        "pattern": finding.pattern,
        "severity": finding.severity,
        "family": family(finding.path),
        "path": path,
        "line": finding.line,
        "scope": finding.scope,
        "symbol": finding.symbol,
        "message": finding.message,
        "url": url,
        "rule_url": f"{docs_base}{finding.code}.md",
    }
    if status is not None:
        row["status"] = status
    return row


def _pattern_rows(numbers: Iterable[int]) -> list[dict]:
    rows = []
    for number in sorted(set(numbers)):
        title, url = PATTERNS.get(number, ("drbot suppression comments", META_ISSUE_URL))
        rows.append({"number": number, "title": title, "heading": pattern_title(number), "url": url})
    return rows


def build_data(
    releases: Sequence[Release],
    *,
    repo: str = "huggingface/diffusers",
    registry: Mapping[str, dict] | None = None,
    docs_base: str = DOCS_URL,
    new: Sequence[Finding] | None = None,
    fixed: Sequence[Finding] | None = None,
    compared_to: str | None = None,
    issues: Mapping[str, int] | None = None,
) -> dict:
    """The dashboard's data (`data.json`): per release and (family, pattern) the number of findings, per release and
    pattern the totals (equal to `drbot analyze`'s count on that release), the last release's findings, what is new
    and fixed since the release before it (by fingerprint), and, with `registry`, its status split and tracking
    issues. `new`/`fixed`/`compared_to` replace the release comparison (the registry's view: merged PRs).
    `issues` (fingerprint -> tracking issue, known-issues.yml) links the last release's findings to issues too."""
    if not releases:
        raise ValueError("the dashboard needs at least one release")
    names = [release.name for release in releases]
    if len(set(names)) != len(names):
        raise ValueError(f"release names must differ: {', '.join(names)}")
    current = releases[-1]
    fixed_ref: str | None = None
    if new is None and fixed is None and len(releases) > 1:
        previous = releases[-2]
        before = {f.fingerprint: f for f in previous.findings}
        after = {f.fingerprint: f for f in current.findings}
        new = [f for fp, f in after.items() if fp not in before]
        fixed = [f for fp, f in before.items() if fp not in after]
        compared_to = previous.name
        fixed_ref = previous.ref
    new, fixed = list(new or ()), list(fixed or ())
    numbers = {n for n in PATTERNS} | {f.pattern for r in releases for f in r.findings}
    patterns = _pattern_rows(numbers)

    cells: list[dict] = []
    totals: list[dict] = []
    for release in releases:
        counts = Counter((family(f.path), f.pattern) for f in release.findings)
        cells += [
            {"release": release.name, "family": fam, "pattern": pattern, "count": count}
            for (fam, pattern), count in sorted(counts.items())
        ]
        per_pattern = Counter(f.pattern for f in release.findings)
        totals += [
            {"release": release.name, "pattern": p["number"], "count": per_pattern[p["number"]]} for p in patterns
        ]

    by_family = Counter(family(f.path) for f in current.findings)
    families = sorted(by_family, key=lambda name: (-by_family[name], name))

    def status_of(finding: Finding) -> str | None:
        if registry is None:
            return None
        entry = registry.get(finding.fingerprint)
        return entry.get("status", "open") if entry else "unregistered"

    ref = current.ref
    findings = [_finding_row(f, repo, ref, docs_base, status_of(f)) for f in current.findings]
    linked: dict[str, int] = dict(issues or {})
    for fp, entry in (registry or {}).items():
        if entry.get("issue") and entry.get("status") != "fixed":
            linked.setdefault(fp, int(entry["issue"]))
    for row in findings:
        if row["fingerprint"] in linked:
            row["issue"] = linked[row["fingerprint"]]
    data: dict = {
        "version": DATA_VERSION,
        "repo": repo,
        "releases": names,
        "current": current.name,
        "compared_to": compared_to,
        "refs": {release.name: release.ref for release in releases},
        "meta_issue": {"number": META_ISSUE, "url": META_ISSUE_URL},
        "patterns": patterns,
        "families": families,
        "cells": cells,
        "totals": totals,
        "not_analysed": {release.name: release.not_analysed for release in releases},
        "findings": findings,
        "new": [_finding_row(f, repo, ref, docs_base, status_of(f)) for f in new],
        "fixed": [_finding_row(f, repo, fixed_ref, docs_base, None) for f in fixed],
        "registry": None,
        "tracking_issues": {},
    }
    by_pattern: dict[int, set[int]] = defaultdict(set)
    for row in findings:
        if "issue" in row:
            by_pattern[row["pattern"]].add(row["issue"])
    if registry is not None:
        split = Counter(entry.get("status", "open") for entry in registry.values())
        data["registry"] = {status: split[status] for status in STATUSES}
        for entry in registry.values():
            if entry.get("issue") and entry.get("status") != "fixed":
                by_pattern[int(entry["pattern"])].add(int(entry["issue"]))
    data["tracking_issues"] = {str(p): sorted(found) for p, found in sorted(by_pattern.items())}
    return data


def registry_finding(fingerprint: str, entry: Mapping) -> Finding:
    """A registry entry (`known:{repo}`) as a Finding; entries record no message, and a line only when they have one."""
    line = int(entry.get("line") or 0)
    return Finding(
        code=str(entry.get("code", "")),
        pattern=int(entry.get("pattern", 0)),
        path=str(entry.get("path", "")),
        line=line,
        end_line=line,
        scope=str(entry.get("scope", "")),
        symbol=str(entry.get("symbol", "")),
        message=str(entry.get("note") or ""),
        severity=str(entry.get("severity", "warning")),
        fingerprint=fingerprint,
    )


def from_registry(entries: Mapping[str, dict], *, repo: str, ref: str = "main", docs_base: str = DOCS_URL) -> dict:
    """The dashboard of the registry alone (what the App serves): its open and tracked findings as one "release"
    named after `ref`; new = findings merged PRs added, fixed = findings merged PRs fixed."""
    ordered = sorted(entries.items(), key=lambda item: (item[1].get("path", ""), item[1].get("code", ""), item[0]))
    live = [registry_finding(fp, e) for fp, e in ordered if e.get("status", "open") in LIVE_STATUSES]
    added = [registry_finding(fp, e) for fp, e in ordered if e.get("added_by") and e.get("status") in LIVE_STATUSES]
    fixed = [registry_finding(fp, e) for fp, e in ordered if e.get("status") == "fixed"]
    release = Release(ref, live, ref=ref)
    return build_data(
        [release], repo=repo, registry=entries, docs_base=docs_base, new=added, fixed=fixed,
        compared_to="merged pull requests",
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- tracking.md


def tracking_rows(data: Mapping) -> list[dict]:
    """Per pattern of the meta issue: open findings, fixed and new since the comparison, and tracking issues."""
    current = data["current"]
    open_counts = {t["pattern"]: t["count"] for t in data["totals"] if t["release"] == current}
    new_counts = Counter(f["pattern"] for f in data["new"])
    fixed_counts = Counter(f["pattern"] for f in data["fixed"])
    rows = []
    for pattern in data["patterns"]:
        number = pattern["number"]
        if number not in PATTERNS:
            continue  # drbot's own suppression comments are no pattern of the meta issue
        rows.append({
            "pattern": number, "title": pattern["title"], "open": open_counts.get(number, 0),
            "fixed": fixed_counts[number], "new": new_counts[number],
            "issues": list(data["tracking_issues"].get(str(number), [])),
        })  # fmt: skip
    return rows


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def tracking_markdown(data: Mapping) -> str:
    """`tracking.md`: one table row per pattern, to paste into the meta issue (or keep there, `tracking_section`)."""
    since = data.get("compared_to")
    fixed_head = f"Fixed since {since}" if since else "Fixed"
    new_head = f"New since {since}" if since else "New"
    meta = data["meta_issue"]
    lines = [
        f"| Pattern | Open in {_md_cell(str(data['current']))} | {_md_cell(fixed_head)} | {_md_cell(new_head)} | Tracking |",
        "|---|---:|---:|---:|---|",
    ]
    for row in tracking_rows(data):
        issues = [f"#{n}" for n in row["issues"][:MAX_ISSUES_PER_ROW]]
        if len(row["issues"]) > MAX_ISSUES_PER_ROW:
            issues.append(f"and {len(row['issues']) - MAX_ISSUES_PER_ROW} more")
        tracking = ", ".join([f"[#{meta['number']}]({meta['url']})", *issues])
        title = _md_cell(f"{row['pattern']}. {row['title']}")
        lines.append(f"| {title} | {row['open']} | {row['fixed']} | {row['new']} | {tracking} |")
    totals = [sum(row[key] for row in tracking_rows(data)) for key in ("open", "fixed", "new")]
    lines.append(f"| **All patterns** | **{totals[0]}** | **{totals[1]}** | **{totals[2]}** | |")
    return "\n".join(lines) + "\n"


def tracking_section(data: Mapping) -> str:
    """The tracking issue's marked section: the table between drbot's markers."""
    return f"{TRACKING_START}\n{tracking_markdown(data)}{TRACKING_END}"


def with_tracking_section(body: str | None, section: str) -> str:
    """`body` with its marked section replaced by `section` (appended when it has none); the rest stays as it was."""
    body = body or ""
    replaced = replace_marked(body, TRACKING_START, TRACKING_END, section)
    if replaced is not None:
        return replaced
    separator = "" if not body else "\n\n" if not body.endswith("\n") else "\n"
    return body + separator + section + "\n"


# ------------------------------------------------------------------------------------------------ the site


def plotly_js_path() -> Path:
    """plotly.js as the `plotly` package ships it, found without importing the package (FileNotFoundError if absent)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed: pip install 'drbot[dashboard]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / PLOTLY_JS
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall plotly")
    return path


def data_json(data: Mapping) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def _script_json(data: Mapping) -> str:
    # inside <script>: no `</script>` or `<!--` can come out of a finding's text
    return json.dumps(data, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def index_html(data: Mapping, script_src: str = PLOTLY_JS) -> str:
    """The page: data inline (a file:// page cannot fetch data.json), drawn by the script below and plotly.js."""
    title = f"drbot dashboard: {data['repo']} {data['current']}"
    escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    src = script_src.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return PAGE.replace("{{title}}", escaped).replace("{{plotly}}", src).replace("{{data}}", _script_json(data))


def write_site(out: Path, data: Mapping, plotly_js: Path | None = None) -> list[Path]:
    """Write index.html, data.json, tracking.md and plotly.min.js into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    source = plotly_js or plotly_js_path()
    files = {
        "index.html": index_html(data).encode(),
        "data.json": data_json(data).encode(),
        "tracking.md": tracking_markdown(data).encode(),
        PLOTLY_JS: source.read_bytes(),
    }
    written = []
    for name, content in files.items():
        path = out / name
        path.write_bytes(content)
        written.append(path)
    return written


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<style>
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 2em; color: #1f2328; }
h1 { font-size: 1.5em; margin: 0 0 .2em; } h2 { font-size: 1.15em; margin: 1.4em 0 .4em; }
.sub { color: #59636e; margin: 0 0 1em; }
.filters { display: flex; gap: 1.5em; align-items: center; margin: .8em 0; flex-wrap: wrap; }
.grid { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 2em; align-items: start; }
table { border-collapse: collapse; } th, td { padding: 3px 7px; border: 1px solid #d1d9e0; }
#matrix td.count { text-align: right; min-width: 2.2em; } #matrix th.family { text-align: left; font-weight: 500; }
#matrix thead th { background: #f6f8fa; } #matrix td.count a { color: inherit; text-decoration: none; display: block; }
#matrix td.selected { outline: 2px solid #0969da; } #matrix td.total { font-weight: 600; text-align: right; }
#trend { height: 420px; } .split td { text-align: right; } .split th { text-align: left; font-weight: 500; }
ul.findings { padding-left: 1.2em; } ul.findings li { margin: .15em 0; } code { font-size: 12px; }
.muted { color: #59636e; } .new { color: #1a7f37; } .fixed { color: #cf222e; }
</style>
<script src="{{plotly}}"></script>
</head>
<body>
<h1 id="title"></h1>
<p class="sub" id="subtitle"></p>
<div class="filters">
<label>Pattern <select id="pattern-filter"><option value="">all patterns</option></select></label>
<label>Family <input id="family-filter" type="search" placeholder="flux, models/…"></label>
<span class="muted" id="shown"></span>
</div>
<div class="grid">
<section>
<h2>Open findings by family and pattern</h2>
<table id="matrix"><thead></thead><tbody></tbody></table>
</section>
<section>
<h2>Per-pattern trend</h2>
<div id="trend"></div>
<h2 id="changes-title">Since the previous release</h2>
<table class="split" id="changes"><tbody></tbody></table>
<div id="registry-block"><h2>The known-findings registry</h2><table class="split" id="registry"><tbody></tbody></table></div>
</section>
</div>
<section id="cell-findings"><h2 id="cell-title">Findings</h2><p class="muted" id="cell-hint">Choose a cell of the
matrix to list its findings.</p><ul class="findings" id="cell-list"></ul></section>
<section><h2 id="new-title">New</h2><ul class="findings" id="new-list"></ul>
<h2 id="fixed-title">Fixed</h2><ul class="findings" id="fixed-list"></ul></section>
<script id="dashboard-data" type="application/json">{{data}}</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("dashboard-data").textContent);
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value; else if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}
const patterns = DATA.patterns;
const current = DATA.current;
const counts = new Map();
for (const cell of DATA.cells) if (cell.release === current) counts.set(cell.family + "\\u0000" + cell.pattern, cell.count);
const max = Math.max(1, ...Array.from(counts.values()));
function colour(count) {
  if (!count) return "#ffffff";
  const t = Math.log(1 + count) / Math.log(1 + max);
  const hue = 50 - 50 * t, light = 92 - 45 * t;
  return `hsl(${hue}, 90%, ${light}%)`;
}
function filters() {
  return { pattern: $("pattern-filter").value, family: $("family-filter").value.trim().toLowerCase() };
}
function patternShown(number, f) { return !f.pattern || String(number) === f.pattern; }
function familyShown(name, f) { return !f.family || name.toLowerCase().includes(f.family); }
function findingItem(row) {
  const place = row.line ? `${row.path}:${row.line}` : row.path;
  const where = row.url ? el("a", { href: row.url }, place) : el("span", {}, place);
  const parts = [el("a", { href: row.rule_url, class: "rule" }, row.code), " ", el("code", {}, where), " "];
  parts.push(el("span", { class: "muted" }, `${row.scope} · ${row.symbol}`));
  if (row.status) parts.push(" ", el("span", { class: "muted" }, `[${row.status}]`));
  if (row.issue) parts.push(" ", el("a", { href: `https://github.com/${DATA.repo}/issues/${row.issue}` }, `#${row.issue}`));
  if (row.message) parts.push(el("br"), row.message);
  return el("li", { "data-family": row.family, "data-pattern": row.pattern }, ...parts);
}
let selected = null;
function drawMatrix() {
  const f = filters();
  const shownPatterns = patterns.filter((p) => patternShown(p.number, f));
  const shownFamilies = DATA.families.filter((name) => familyShown(name, f));
  const head = el("tr", {}, el("th", {}, "family"));
  for (const p of shownPatterns) head.append(el("th", { title: p.heading }, el("a", { href: p.url }, `P${p.number}`)));
  head.append(el("th", {}, "total"));
  $("matrix").tHead.replaceChildren(head);
  const rows = [];
  let total = 0;
  for (const name of shownFamilies) {
    const tr = el("tr", { "data-family": name }, el("th", { class: "family" }, name));
    let sum = 0;
    for (const p of shownPatterns) {
      const count = counts.get(name + "\\u0000" + p.number) || 0;
      sum += count;
      const td = el("td", { class: "count", "data-pattern": p.number, title: `${name} · ${p.heading}: ${count}` });
      td.style.background = colour(count);
      if (count) td.append(el("a", { href: `#cell/${encodeURIComponent(name)}/${p.number}` }, count));
      if (selected && selected.family === name && selected.pattern === p.number) td.classList.add("selected");
      tr.append(td);
    }
    total += sum;
    tr.append(el("td", { class: "total" }, sum));
    if (sum || !f.pattern) rows.push(tr);
  }
  $("matrix").tBodies[0].replaceChildren(...rows);
  $("shown").textContent = `${total} findings in ${rows.length} families shown`;
}
function drawCell() {
  const match = /^#cell\\/([^/]+)\\/(\\d+)$/.exec(location.hash);
  selected = match ? { family: decodeURIComponent(match[1]), pattern: Number(match[2]) } : null;
  if (!selected) { $("cell-list").replaceChildren(); $("cell-hint").hidden = false; $("cell-title").textContent = "Findings"; return; }
  const rows = DATA.findings.filter((r) => r.family === selected.family && r.pattern === selected.pattern);
  const p = patterns.find((q) => q.number === selected.pattern);
  $("cell-title").textContent = `${selected.family} · ${p ? p.heading : "P" + selected.pattern}: ${rows.length} findings`;
  $("cell-hint").hidden = true;
  $("cell-list").replaceChildren(...rows.map(findingItem));
}
function drawLists() {
  const f = filters();
  const keep = (r) => patternShown(r.pattern, f) && familyShown(r.family, f);
  const since = DATA.compared_to ? ` since ${DATA.compared_to}` : "";
  const fresh = DATA.new.filter(keep), gone = DATA.fixed.filter(keep);
  $("new-title").textContent = `New${since}: ${fresh.length}`;
  $("fixed-title").textContent = `Fixed${since}: ${gone.length}`;
  $("new-list").replaceChildren(...fresh.map(findingItem));
  $("fixed-list").replaceChildren(...gone.map(findingItem));
}
function drawChanges() {
  $("changes-title").textContent = DATA.compared_to ? `Since ${DATA.compared_to}` : "Since the previous release";
  const f = filters();
  const keep = (r) => patternShown(r.pattern, f) && familyShown(r.family, f);
  const newBy = new Map(), fixedBy = new Map();
  for (const r of DATA.new.filter(keep)) newBy.set(r.pattern, (newBy.get(r.pattern) || 0) + 1);
  for (const r of DATA.fixed.filter(keep)) fixedBy.set(r.pattern, (fixedBy.get(r.pattern) || 0) + 1);
  const rows = [el("tr", {}, el("th", {}, "pattern"), el("th", {}, "new"), el("th", {}, "fixed"))];
  for (const p of patterns) {
    const n = newBy.get(p.number) || 0, x = fixedBy.get(p.number) || 0;
    if (!n && !x) continue;
    rows.push(el("tr", { "data-pattern": p.number }, el("th", { title: p.heading }, `P${p.number} ${p.title}`),
      el("td", { class: "new" }, n ? `+${n}` : "0"), el("td", { class: "fixed" }, x ? `−${x}` : "0")));
  }
  if (rows.length === 1) rows.push(el("tr", {}, el("td", { colspan: 3, class: "muted" },
    DATA.compared_to ? "no change" : "one release given: nothing to compare")));
  $("changes").tBodies[0].replaceChildren(...rows);
}
function drawRegistry() {
  if (!DATA.registry) { $("registry-block").hidden = true; return; }
  const rows = Object.entries(DATA.registry).map(([status, n]) => el("tr", { "data-status": status },
    el("th", {}, status), el("td", {}, n)));
  $("registry").tBodies[0].replaceChildren(...rows);
}
function drawTrend() {
  const f = filters();
  const traces = [];
  for (const p of patterns) {
    if (!patternShown(p.number, f)) continue;
    // the totals, or with a family filter the sum of the shown families' cells
    const ys = DATA.releases.map((name) => {
      if (f.family) return DATA.cells.filter((c) => c.release === name && c.pattern === p.number &&
        familyShown(c.family, f)).reduce((sum, c) => sum + c.count, 0);
      const row = DATA.totals.find((t) => t.release === name && t.pattern === p.number);
      return row ? row.count : 0;
    });
    if (!ys.some((y) => y)) continue;
    traces.push({ x: DATA.releases, y: ys, name: `P${p.number} ${p.title}`, mode: "lines+markers", type: "scatter" });
  }
  if (typeof Plotly === "undefined") { $("trend").textContent = "plotly.min.js did not load"; return; }
  Plotly.react("trend", traces, {
    margin: { l: 40, r: 10, t: 10, b: 40 }, xaxis: { type: "category", title: { text: "release" } },
    yaxis: { title: { text: "findings" }, rangemode: "tozero" },
    showlegend: true, legend: { orientation: "h", y: -0.25, font: { size: 10 } },
  }, { displayModeBar: false, responsive: true });
}
function draw() { drawMatrix(); drawLists(); drawChanges(); drawTrend(); }
$("title").textContent = `drbot dashboard · ${DATA.repo} ${current}`;
$("subtitle").replaceChildren(`${DATA.findings.length} findings in ${DATA.families.length} families, grouped by the patterns of `,
  el("a", { href: DATA.meta_issue.url }, `#${DATA.meta_issue.number}`),
  `; releases: ${DATA.releases.join(", ")}.`);
for (const p of patterns) $("pattern-filter").append(el("option", { value: p.number }, `P${p.number} ${p.title}`));
// a link can carry the filters: index.html?pattern=2&family=flux
const query = new URLSearchParams(location.search);
if (patterns.some((p) => String(p.number) === query.get("pattern"))) $("pattern-filter").value = query.get("pattern");
if (query.get("family")) $("family-filter").value = query.get("family");
$("pattern-filter").addEventListener("change", draw);
$("family-filter").addEventListener("input", draw);
window.addEventListener("hashchange", () => { drawCell(); drawMatrix(); });
drawRegistry(); drawCell(); draw();
document.body.dataset.rendered = "yes";
</script>
</body>
</html>
"""
