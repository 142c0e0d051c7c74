"""`drbot dashboard`: families from paths, counts equal to `drbot analyze` per release, tracking.md, and the page as
a real headless Chromium draws it (matrix and trend), with a screenshot kept under tests/artifacts/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from analyzers.dashboard import (
    TRACKING_END,
    TRACKING_START,
    Release,
    build_data,
    from_registry,
    tracking_section,
    with_tracking_section,
)
from analyzers.families import family
from analyzers.findings import Finding, with_fingerprints
from analyzers.patterns import PATTERNS


ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
UNCLIP = "pipelines/stable_diffusion/pipeline_stable_unclip_img2img.py"
TRANSFORMER = "models/transformers/transformer_flux.py"


@pytest.mark.parametrize(
    "path, expected",
    [
        ("diffusers/pipelines/flux/pipeline_flux.py", "flux"),
        ("src/diffusers/pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py", "stable_diffusion_xl"),
        ("diffusers/pipelines/wan/pipeline_wan_i2v.py", "wan"),
        ("diffusers/pipelines/pipeline_utils.py", "pipelines"),
        ("diffusers/pipelines/deprecated/alt_diffusion/pipeline_alt_diffusion.py", "deprecated"),
        ("diffusers/models/transformers/transformer_flux.py", "models/transformers"),
        ("diffusers/models/autoencoders/autoencoder_kl.py", "models/autoencoders"),
        ("diffusers/models/attention_dispatch.py", "models"),
        ("diffusers/modular_pipelines/flux/before_denoise.py", "modular_pipelines/flux"),
        ("diffusers/modular_pipelines/modular_pipeline.py", "modular_pipelines"),
        ("diffusers/schedulers/scheduling_ddim.py", "schedulers"),
        ("diffusers/loaders/lora_pipeline.py", "loaders"),
        ("diffusers/training_utils.py", "core"),
        ("tests/pipelines/flux/test_pipeline_flux.py", "flux"),
        ("tests/models/transformers/test_models_transformer_flux.py", "models/transformers"),
        ("tests/others/test_config.py", "tests/others"),
        ("tests/conftest.py", "tests"),
    ],
)
def test_a_family_is_what_maintainers_call_it(path, expected):
    assert family(path) == expected


def _finding(path: str, symbol: str, pattern: int = 2, line: int = 1) -> Finding:
    return Finding("DRB201", pattern, path, line, line, "P.__call__", symbol, f"`{symbol}` is ignored.", "error")


def test_new_and_fixed_since_the_previous_release_go_by_fingerprint():
    old = with_fingerprints([_finding("diffusers/pipelines/flux/p.py", "eta"), _finding("diffusers/x/y.py", "a", 5)])
    new = with_fingerprints(
        [_finding("diffusers/pipelines/flux/p.py", "eta", line=40), _finding("diffusers/pipelines/wan/w.py", "b")]
    )
    data = build_data([Release("0.1.0", old, ref="v0.1.0"), Release("0.2.0", new, ref="v0.2.0")])
    assert data["compared_to"] == "0.1.0" and data["current"] == "0.2.0"
    assert [(f["family"], f["symbol"]) for f in data["new"]] == [("wan", "b")]
    assert [(f["family"], f["symbol"]) for f in data["fixed"]] == [("x", "a")]
    # a moved line is the same finding; its link points at the current release's line
    (flux,) = [f for f in data["findings"] if f["family"] == "flux"]
    assert flux["url"].endswith("/blob/v0.2.0/src/diffusers/pipelines/flux/p.py#L40")
    assert data["fixed"][0]["url"].startswith("https://github.com/huggingface/diffusers/blob/v0.1.0/")
    totals = {(t["release"], t["pattern"]): t["count"] for t in data["totals"]}
    assert totals[("0.1.0", 5)] == 1 and totals[("0.2.0", 5)] == 0 and totals[("0.2.0", 2)] == 2


def test_the_registry_view_counts_live_entries_and_splits_statuses():
    entries = {
        "a" * 16: {"code": "DRB201", "pattern": 2, "path": "diffusers/pipelines/flux/p.py", "scope": "P.__call__",
                   "symbol": "eta", "status": "tracked", "issue": 13635},
        "b" * 16: {"code": "DRB201", "pattern": 2, "path": "diffusers/pipelines/wan/w.py", "scope": "W.__call__",
                   "symbol": "eta", "status": "fixed", "fixed_by": 7},
        "c" * 16: {"code": "DRB501", "pattern": 5, "path": "diffusers/pipelines/wan/w.py", "scope": "W.prepare",
                   "symbol": "latents", "status": "open", "added_by": 8},
        "d" * 16: {"code": "DRB501", "pattern": 5, "path": "diffusers/pipelines/wan/w.py", "scope": "W.other",
                   "symbol": "latents", "status": "suppressed"},
    }  # fmt: skip
    data = from_registry(entries, repo="huggingface/diffusers")
    assert data["registry"] == {"open": 1, "tracked": 1, "suppressed": 1, "fixed": 1}
    cells = {(c["family"], c["pattern"]): c["count"] for c in data["cells"]}
    assert cells == {("flux", 2): 1, ("wan", 5): 1}
    assert [f["symbol"] for f in data["fixed"]] == ["eta"] and [f["scope"] for f in data["new"]] == ["W.prepare"]
    assert data["tracking_issues"] == {"2": [13635]}
    assert "#13635" in tracking_section(data)


def test_the_tracking_section_is_replaced_in_place_and_nothing_else_changes():
    data = from_registry({}, repo="huggingface/diffusers")
    section = tracking_section(data)
    body = "Intro by a maintainer.\n\n- [x] a checklist item\n"
    first = with_tracking_section(body, section)
    assert first.startswith(body) and first.count(TRACKING_START) == 1
    edited = first.replace("a checklist item", "an edited item") + "\nA closing remark.\n"
    stale = edited.replace(section, f"{TRACKING_START}\nold table\n{TRACKING_END}")
    again = with_tracking_section(stale, section)
    assert again == edited  # the section is back, and every other character is the maintainer's
    assert with_tracking_section(again, section) == again


# -- the command line on two small releases, and the page in a real browser


TOY = textwrap.dedent(
    """
    from ..pipeline_utils import DiffusionPipeline


    class {name}(DiffusionPipeline):
        def __call__(self, prompt, {params}):
            return self.run(prompt{used})
    """
)


def _tree(root: Path, diffusers_dir: Path, toys: dict[str, tuple[str, str, str]], real: tuple[str, ...]) -> Path:
    package = root / "diffusers"
    (package / "pipelines").mkdir(parents=True)
    (package / "pipelines" / "pipeline_utils.py").write_text("class DiffusionPipeline:\n    pass\n")
    for folder, (name, params, used) in toys.items():
        (package / "pipelines" / folder).mkdir()
        source = TOY.format(name=name, params=params, used=used)
        (package / "pipelines" / folder / f"pipeline_{folder}.py").write_text(source)
    for path in real:
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(diffusers_dir / path, package / path)
    return root


def drbot(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "DRBOT_CACHE_DIR": os.environ["DRBOT_CACHE_DIR"]}
    return subprocess.run([sys.executable, "-m", "drbot", *args], cwd=ROOT, capture_output=True, text=True, env=env)


class _Page(HTMLParser):
    """The matrix (family -> {pattern: count}) and the trend's traces, from the DOM Chromium dumped."""

    def __init__(self) -> None:
        super().__init__()
        self.matrix: dict[str, dict[int, int]] = {}
        self.traces = 0
        self.legend: list[str] = []
        self._family: str | None = None
        self._pattern: int | None = None
        self._in_legend = False
        self._texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        attr = dict(attrs)
        classes = (attr.get("class") or "").split()
        if tag == "tr" and "data-family" in attr:
            self._family = attr["data-family"]
            self.matrix[self._family] = {}
        elif tag == "td" and "count" in classes and self._family is not None:
            self._pattern = int(attr["data-pattern"])
            self.matrix[self._family][self._pattern] = 0
        elif tag == "g" and "trace" in classes and "scatter" in classes:
            self.traces += 1
        elif tag == "text" and "legendtext" in classes:
            self._in_legend = True

    def handle_endtag(self, tag):
        if tag == "tr":
            self._family = None
        elif tag == "td":
            self._pattern = None
        elif tag == "text" and self._in_legend:
            self._in_legend = False
            self.legend.append("".join(self._texts))
            self._texts = []

    def handle_data(self, data):
        if self._family is not None and self._pattern is not None and data.strip():
            self.matrix[self._family][self._pattern] = int(data)
        if self._in_legend:
            self._texts.append(data)


def _analyze_counts(tree: Path) -> Counter:
    result = drbot("analyze", str(tree), "--format", "json", "-j", "1", "--no-cache")
    assert result.returncode in (0, 1), result.stderr
    return Counter(f["pattern"] for f in json.loads(result.stdout)["findings"])


def test_two_releases_build_a_site_whose_counts_equal_analyze_and_chromium_draws_it(tmp_path, diffusers_dir):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make system-deps installs it)"
    old = _tree(
        tmp_path / "old", diffusers_dir,
        {"flux": ("FluxPipeline", "eta=0.0, guidance_rescale=0.0", ""), "wan": ("WanPipeline", "eta=0.0", "")},
        (UNCLIP, TRANSFORMER),
    )  # fmt: skip
    new = _tree(
        tmp_path / "new", diffusers_dir,
        {"flux": ("FluxPipeline", "eta=0.0, guidance_rescale=0.0, true_cfg_scale=1.0, clip_skip=None", ""),
         "wan": ("WanPipeline", "eta=0.0", ", eta"), "ddpm": ("DDPMPipeline", "eta=0.0", "")},
        (UNCLIP, TRANSFORMER),
    )  # fmt: skip
    site = tmp_path / "site"
    result = drbot("dashboard", "--out", str(site), "-j", "1", "--no-cache", f"0.1.0={old}", f"0.2.0={new}")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in site.iterdir()} == {"index.html", "data.json", "tracking.md", "plotly.min.js"}

    data = json.loads((site / "data.json").read_text())
    assert data["releases"] == ["0.1.0", "0.2.0"]
    for name, tree in (("0.1.0", old), ("0.2.0", new)):
        expected = _analyze_counts(tree)
        totals = {t["pattern"]: t["count"] for t in data["totals"] if t["release"] == name and t["count"]}
        from_cells = Counter()
        for cell in data["cells"]:
            if cell["release"] == name:
                from_cells[cell["pattern"]] += cell["count"]
        assert totals == dict(expected) == dict(from_cells), name
    assert _analyze_counts(new)[2] > _analyze_counts(old)[2]  # the trend has something to show
    assert {f["symbol"] for f in data["fixed"]} == {"eta"}  # wan's
    assert {"true_cfg_scale", "clip_skip"} <= {f["symbol"] for f in data["new"]}

    tracking = (site / "tracking.md").read_text().splitlines()
    rows = [line for line in tracking if line.startswith("| ") and line[2:3].isdigit()]
    assert [int(row[2:].split(".")[0]) for row in rows] == sorted(PATTERNS)
    assert "Fixed since 0.1.0" in tracking[0]

    url = (site / "index.html").as_uri()
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--run-all-compositor-stages-before-draw",
               "--virtual-time-budget=5000", "--window-size=1400,1100"]  # fmt: skip
    dom = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-rendered="yes"' in dom.stdout, "the page's script did not finish"
    page = _Page()
    page.feed(dom.stdout)
    expected_cells = {(c["family"], c["pattern"]): c["count"] for c in data["cells"] if c["release"] == "0.2.0"}
    drawn = {(fam, p): n for fam, row in page.matrix.items() for p, n in row.items() if n}
    assert drawn == expected_cells
    assert set(page.matrix) == set(data["families"]) and {"flux", "ddpm", "models/transformers"} <= set(page.matrix)
    live_patterns = {t["pattern"] for t in data["totals"] if t["count"]}
    assert page.traces == len(live_patterns) and page.traces >= 2
    assert sorted(page.legend) == sorted(f"P{p} {PATTERNS[p][0]}" for p in live_patterns)

    # the filters, as a link sets them: only flux-like families and pattern 2, in the matrix, the trend and the lists
    dom = subprocess.run([*command, "--dump-dom", url + "?pattern=2&family=flux"], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    filtered = _Page()
    filtered.feed(dom.stdout)
    assert set(filtered.matrix) == {"flux"} and set(filtered.matrix["flux"]) == {2}
    assert filtered.matrix["flux"][2] == expected_cells[("flux", 2)]
    assert filtered.traces == 1 and filtered.legend == [f"P2 {PATTERNS[2][0]}"]
    # a family alone narrows the trend to the patterns that family has
    dom = subprocess.run([*command, "--dump-dom", url + "?family=models"], capture_output=True, text=True, timeout=120)
    models = _Page()
    models.feed(dom.stdout)
    assert set(models.matrix) == {"models/transformers"}
    assert models.legend == [f"P{p} {PATTERNS[p][0]}" for (fam, p) in expected_cells if fam == "models/transformers"]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    cell = "#cell/flux/2"
    taken = subprocess.run([*command, f"--screenshot={shot}", url + cell], capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_usage_errors_name_the_fix(tmp_path):
    for args, named in (
        (["0.42.1"], "NAME=PATH"),
        ([f"0.1.0={tmp_path / 'missing'}"], "no such file"),
        ([], "--registry"),
        ([f"a={tmp_path}", f"a={tmp_path}"], "own name"),
    ):
        result = drbot("dashboard", "--out", str(tmp_path / "site"), *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert named in result.stderr.strip().splitlines()[-1], result.stderr
    assert not (tmp_path / "site").exists()


def test_the_registry_alone_makes_a_dashboard(tmp_path):
    import uuid

    import redis

    prefix = f"drbot-test-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    entries = {
        "a" * 16: {"code": "DRB201", "pattern": 2, "path": "diffusers/pipelines/flux/p.py", "line": 12,
                   "scope": "P.__call__", "symbol": "eta", "status": "tracked", "issue": 13635},
        "b" * 16: {"code": "DRB501", "pattern": 5, "path": "diffusers/models/transformers/t.py", "scope": "T.f",
                   "symbol": "x", "status": "fixed", "fixed_by": 9},
    }  # fmt: skip
    key = f"{prefix}known:huggingface/diffusers"
    client.hset(key, mapping={fp: json.dumps(entry) for fp, entry in entries.items()})
    try:
        site = tmp_path / "site"
        result = drbot("dashboard", "--out", str(site), "--registry", "huggingface/diffusers", "--key-prefix", prefix)
    finally:
        client.delete(key)
        client.close()
    assert result.returncode == 0, result.stderr
    data = json.loads((site / "data.json").read_text())
    assert data["registry"] == {"open": 0, "tracked": 1, "suppressed": 0, "fixed": 1}
    assert data["cells"] == [{"release": "main", "family": "flux", "pattern": 2, "count": 1}]
    (finding,) = data["findings"]
    assert finding["url"] == "https://github.com/huggingface/diffusers/blob/main/src/diffusers/pipelines/flux/p.py#L12"
    assert "#13635" in (site / "tracking.md").read_text()


def test_a_mapping_links_the_last_releases_findings_to_tracking_issues(tmp_path, diffusers_dir):
    tree = _tree(
        tmp_path / "r", diffusers_dir, {"flux": ("FluxPipeline", "eta=0.0", ""), "wan": ("W", "eta=0.0", "")}, ()
    )
    mapping = tmp_path / "known-issues.yml"
    mapping.write_text("- issue: 13578\n  patterns: [2]\n  family: flux\n")
    site = tmp_path / "site"
    result = drbot("dashboard", "--out", str(site), "--mapping", str(mapping), "-j", "1", f"0.42.1={tree}")
    assert result.returncode == 0, result.stderr
    data = json.loads((site / "data.json").read_text())
    assert {f["family"]: f.get("issue") for f in data["findings"]} == {"flux": 13578, "wan": None}
    assert data["tracking_issues"] == {"2": [13578]}
    row = next(line for line in (site / "tracking.md").read_text().splitlines() if line.startswith("| 2. "))
    assert row.endswith("#13578 |")
    mapping.write_text("- issue: nope\n")
    broken = drbot("dashboard", "--out", str(site), "--mapping", str(mapping), "-j", "1", f"0.42.1={tree}")
    assert broken.returncode == 2 and "--mapping" in broken.stderr and "Traceback" not in broken.stderr
