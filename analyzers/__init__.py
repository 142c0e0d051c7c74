"""drbot's static analyzers: libcst rules for the ten bug patterns of diffusers meta issue #13656."""

from analyzers.core import (
    AnalysisError,
    FileContext,
    Finding,
    Invalid,
    Project,
    Rule,
    Valid,
    all_rules,
    analyze,
    analyze_file,
    run_case,
    select_rules,
)


__all__ = [
    "AnalysisError",
    "FileContext",
    "Finding",
    "Invalid",
    "Project",
    "Rule",
    "Valid",
    "all_rules",
    "analyze",
    "analyze_file",
    "run_case",
    "select_rules",
]
