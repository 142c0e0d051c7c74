"""The ten recurring bug patterns of huggingface/diffusers meta issue #13656."""

META_ISSUE = 13656
META_ISSUE_URL = "https://github.com/huggingface/diffusers/issues/13656"

#: pattern number -> (title, url). Titles as the meta issue words them. Pattern 0 is drbot itself
#: (its own suppression comments), not a pattern of the meta issue.
PATTERNS: dict[int, tuple[str, str]] = {
    1: ("Batch and Conditioning Expansion Drift", META_ISSUE_URL),
    2: ("Public Arguments Accepted but Ignored", META_ISSUE_URL),
    3: ("Mask Handling Is Inconsistent Across Layers", META_ISSUE_URL),
    4: ("Optional Parameters Are Not Actually Optional", META_ISSUE_URL),
    5: ("Dtype, Device, and Config Assumptions Leak", META_ISSUE_URL),
    6: ("Output and Cleanup Contracts Diverge", META_ISSUE_URL),
    7: ("Validation Does Not Match Runtime Requirements", META_ISSUE_URL),
    8: ("Copy-Paste Divergence and Hidden Coupling", META_ISSUE_URL),
    9: ("Shared Infrastructure Invariants Are Weak", META_ISSUE_URL),
    10: ("Slow and Integration Coverage Is Uneven", META_ISSUE_URL),
}

DRBOT_META = 0


def pattern_title(pattern: int) -> str:
    """Return the title of a pattern, `Pattern N: Title` as the meta issue heads it."""
    if pattern == DRBOT_META:
        return "drbot suppression comments"
    return f"Pattern {pattern}: {PATTERNS[pattern][0]}"
