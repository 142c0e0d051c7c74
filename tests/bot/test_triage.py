"""Known findings, fixes of known findings and duplicate fixes, end to end on real Redis and the fake GitHub."""

from __future__ import annotations

from harness import DDPM, REPO, UNCLIP, open_pr, with_eta

from analyzers.core import Finding, fingerprint
from bot.known import KnownRegistry


CLIP_SKIP_FIX = (
    "lora_scale=text_encoder_lora_scale,\n",
    "lora_scale=text_encoder_lora_scale,\n            clip_skip=clip_skip,\n",
)
CLIP_SKIP = Finding(
    "DRB201", 2, "diffusers/pipelines/stable_diffusion/pipeline_stable_unclip_img2img.py", 0, 0,
    "StableUnCLIPImg2ImgPipeline.__call__", "clip_skip", "",
    fingerprint=fingerprint("DRB201", "diffusers/pipelines/stable_diffusion/pipeline_stable_unclip_img2img.py",
                            "StableUnCLIPImg2ImgPipeline.__call__", "clip_skip", 0),
)  # fmt: skip
ETA_FP = fingerprint("DRB201", "diffusers/pipelines/ddpm/pipeline_ddpm.py", "DDPMPipeline.__call__", "eta", 0)


def fixed_unclip(sources) -> str:
    text = sources(UNCLIP)
    assert CLIP_SKIP_FIX[0] in text
    return text.replace(*CLIP_SKIP_FIX, 1)


async def track(harness, finding: Finding, issue: int) -> None:
    await KnownRegistry(harness.redis, harness.keys, REPO).update(
        finding.fingerprint, finding, status="tracked", issue=issue
    )


async def review(harness, github, number: int, action: str = "opened") -> None:
    assert await harness.deliver("pull_request", github.pull_request_payload(REPO, number, action)) == 202
    await harness.run()


async def test_a_known_finding_is_collapsed_with_its_tracking_issue_and_not_posted_inline(harness, github, sources):
    eta = Finding("DRB201", 2, "diffusers/pipelines/ddpm/pipeline_ddpm.py", 0, 0, "DDPMPipeline.__call__", "eta", "",
                  fingerprint=ETA_FP)  # fmt: skip
    await track(harness, eta, 13649)
    await track(harness, CLIP_SKIP, 13635)
    open_pr(github, sources, {DDPM: with_eta(sources), UNCLIP: sources(UNCLIP) + "\n# touched\n"})
    await review(harness, github, 1)
    (summary,) = github.comments(REPO, 1)
    body = summary["body"]
    assert "**0 new findings**" in body and "No new findings." in body
    known = body.split("<details>", 1)[1]
    assert "`eta`" in known and "tracked in #13649" in known
    assert "`clip_skip`" in known and "tracked in #13635" in known
    assert github.reviews(REPO, 1) == [] and github.review_comments(REPO, 1) == []
    assert github.labels(REPO, 1) == []


async def test_a_pr_that_fixes_a_known_finding_is_labelled_and_a_merge_marks_it_fixed(harness, github, sources):
    await track(harness, CLIP_SKIP, 13635)
    open_pr(github, sources, {UNCLIP: fixed_unclip(sources)})
    await review(harness, github, 1)
    (summary,) = github.comments(REPO, 1)
    fixed = summary["body"].split("### Fixed by this change", 1)[1]
    assert "`clip_skip`" in fixed and "tracked in #13635" in fixed
    assert github.labels(REPO, 1) == ["drbot: fixes known finding"]

    payload = github.pull_request_payload(REPO, 1, "closed")
    payload["pull_request"]["merged"] = True
    await harness.deliver("pull_request", payload)
    await harness.run()
    entry = (await KnownRegistry(harness.redis, harness.keys, REPO).get_many([CLIP_SKIP.fingerprint]))[
        CLIP_SKIP.fingerprint
    ]
    assert entry["status"] == "fixed" and entry["fixed_by"] == 1 and entry["issue"] == 13635


async def test_two_prs_fixing_one_finding_are_cross_referenced_and_the_later_is_labelled(harness, github, sources):
    open_pr(github, sources, {UNCLIP: fixed_unclip(sources)})
    github.add_pull(REPO, 2, head_files={UNCLIP: fixed_unclip(sources), DDPM: sources(DDPM) + "\n# also\n"})
    await review(harness, github, 1)
    assert "Possible duplicates" not in github.comments(REPO, 1)[0]["body"]
    await review(harness, github, 2)

    later = github.comments(REPO, 2)[0]["body"]
    assert "### Possible duplicates" in later and "also fixed by #1 (opened earlier)" in later
    assert "drbot: possible duplicate fix" in github.labels(REPO, 2)
    earlier = github.comments(REPO, 1)[0]["body"]  # refreshed when #2 was reviewed
    assert "also fixed by #2 (opened later)" in earlier
    assert "drbot: possible duplicate fix" not in github.labels(REPO, 1)

    # closing #1 (unmerged) takes it out of the sets: #2 is no longer a duplicate
    github.update_pull(REPO, 1, state="closed")
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "closed"))
    await harness.run()
    assert "Possible duplicates" not in github.comments(REPO, 2)[0]["body"]
    assert "drbot: possible duplicate fix" not in github.labels(REPO, 2)


async def test_prs_with_identical_head_trees_are_caught(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    github.add_pull(REPO, 2, head_files={DDPM: with_eta(sources)}, user="bob")
    await review(harness, github, 1)
    await review(harness, github, 2)
    later = github.comments(REPO, 2)[0]["body"]
    assert "head tree is identical to that of #1" in later
    assert "drbot: possible duplicate fix" in github.labels(REPO, 2)
    assert "head tree is identical to that of #2" in github.comments(REPO, 1)[0]["body"]
