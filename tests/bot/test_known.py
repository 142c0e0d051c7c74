"""The known-findings registry: mapping file, import of the pinned release, the `drbot known` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from analyzers.core import Finding
from bot.known import IssueLink, KnownRegistry, MappingError, issue_for, parse_mapping
from bot.store import Keys


ROOT = Path(__file__).resolve().parents[2]


def finding(**kw) -> Finding:
    base = dict(code="DRB201", pattern=2, path="diffusers/pipelines/wan/pipeline_wan_i2v.py", line=1, end_line=1,
                scope="WanImageToVideoPipeline.__call__", symbol="x", message="", fingerprint="aaaaaaaaaaaaaaaa")  # fmt: skip
    base.update(kw)
    return Finding(**base)


@pytest.fixture
async def registry():
    client = aioredis.from_url("redis://127.0.0.1:6379/0")
    keys = Keys(f"drbot-test-{uuid.uuid4().hex[:8]}:")
    yield KnownRegistry(client, keys, "huggingface/diffusers")
    async for key in client.scan_iter(match=f"{keys.prefix}*"):
        await client.delete(key)
    await client.aclose()


def test_the_mapping_links_the_most_specific_entry():
    links = parse_mapping(
        """
        - issue: 1
          family: wan
        - issue: 2
          patterns: [2]
          path: src/diffusers/pipelines/wan/*.py
        - issue: 3
          scope: WanImageToVideoPipeline
        - issue: 4
          fingerprint: aaaaaaaaaaaaaaaa
        """.replace("\n        ", "\n")
    )
    assert issue_for(finding(), links) == 4
    assert issue_for(finding(fingerprint="b" * 16), links) == 3
    assert issue_for(finding(fingerprint="b" * 16, scope="Other.__call__"), links) == 2
    assert issue_for(finding(fingerprint="b" * 16, scope="Other", pattern=5), links) == 1
    assert issue_for(finding(path="diffusers/pipelines/flux/pipeline_flux.py", fingerprint="c" * 16,
                             scope="FluxPipeline"), links) is None  # fmt: skip
    assert IssueLink(9, scope="Wan").matches(finding()) is False  # a prefix must end at a dot


@pytest.mark.parametrize(
    "text, message",
    [
        ("- issue: one\n  family: wan\n", "integer `issue`"),
        ("- issue: 1\n", "needs a selector"),
        ("- issue: 1\n  family: wan\n  colour: red\n", "unknown keys colour"),
        ("- issue: 1\n  family: wan\n  patterns: [11]\n", "pattern numbers"),
        ("- [unclosed\n", "not valid YAML"),
    ],
)
def test_a_malformed_mapping_names_its_entry(text, message):
    with pytest.raises(MappingError, match=message):
        parse_mapping(text)


def test_the_seeded_mapping_parses():
    links = parse_mapping((ROOT / "known-issues.yml").read_text())
    assert len(links) >= 20 and {13578, 13583, 13585} <= {link.issue for link in links}


@pytest.mark.slow
async def test_importing_the_pinned_release_records_every_finding_once(registry, full_scan):
    links = parse_mapping((ROOT / "known-issues.yml").read_text())
    first = await registry.import_findings(full_scan.findings, links)
    assert first == {"added": len(full_scan.findings), "updated": 0, "unchanged": 0}
    snapshot = await registry.all()
    second = await registry.import_findings(full_scan.findings, links)
    assert second == {"added": 0, "updated": 0, "unchanged": len(full_scan.findings)}
    assert await registry.all() == snapshot
    tracked = {e["issue"] for e in snapshot.values() if e["status"] == "tracked"}
    assert 13618 in tracked  # BriaFibo's missing attention mixin, linked through the mapping


async def test_a_maintainers_status_survives_a_new_import(registry):
    f = finding()
    await registry.import_findings([f])
    await registry.update(f.fingerprint, status="suppressed", suppressed_by="m", reason="by design")
    counts = await registry.import_findings([f], [IssueLink(7, fingerprint=f.fingerprint)])
    assert counts["unchanged"] == 1
    entry = (await registry.get_many([f.fingerprint]))[f.fingerprint]
    assert entry["status"] == "suppressed" and entry["issue"] is None


def test_the_known_commands(tmp_path, diffusers_dir):
    package = tmp_path / "diffusers"
    (package / "pipelines" / "ddpm").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pipelines" / "__init__.py").write_text("")
    (package / "pipelines" / "ddpm" / "__init__.py").write_text("")
    source = (diffusers_dir / "pipelines" / "ddpm" / "pipeline_ddpm.py").read_text()
    edited = source.replace("return_dict: bool = True,", "return_dict: bool = True,\n        eta: float = 0.0,", 1)
    (package / "pipelines" / "ddpm" / "pipeline_ddpm.py").write_text(edited)
    prefix = f"drbot-test-{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DRBOT_KEY_PREFIX": prefix}

    def known(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "drbot", "known", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env)  # fmt: skip

    try:
        first = known("import", str(package))
        assert first.returncode == 0, first.stderr
        assert "1 added, 0 updated, 0 unchanged" in first.stdout
        assert "0 added, 0 updated, 1 unchanged" in known("import", str(package)).stdout
        listed = json.loads(known("list", "--format", "json").stdout)
        assert [(e["code"], e["symbol"], e["status"]) for e in listed] == [("DRB201", "eta", "open")]
        exported = json.loads(known("export").stdout)
        assert exported["repo"] == "huggingface/diffusers" and len(exported["known"]) == 1
        assert "1 known findings open 1" in known("stats").stdout
        bad = known("list", "--redis-url", "redis://127.0.0.1:1/0")
        assert bad.returncode == 2 and "Redis at redis://127.0.0.1:1/0" in bad.stderr
    finally:
        import redis

        client = redis.Redis()
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
