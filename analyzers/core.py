"""The rule engine's public names in one place, for code that imports them from here.

Each lives in the module named for what it holds:

- `analyzers.findings`: `Finding`, `fingerprint`, `with_fingerprints`
- `analyzers.rule`: `Rule`, its cases `Valid` and `Invalid`, and the checks a rule class passes when defined
- `analyzers.ruleset`: `all_rules` (found under `analyzers.rules`, nothing to register), `select_rules`
- `analyzers.suppressions`: `# drbot: ignore[...]` comments and DRB000
- `analyzers.project`: `Project`, the read-only view of the scanned tree
- `analyzers.context`: `FileContext`, what rules see of one file, and its `Definition`s
- `analyzers.modules`: module names, relative imports, import tables, the root finding paths start at
- `analyzers.syntax`: `dotted_name`, `nested_blocks`
- `analyzers.analysis`: `analyze_file`, `analyze`, `run_case`: the prefilter, the parse, the rules run
"""

from analyzers.analysis import (
    FROZEN_PREFIXES,
    AnalysisError,
    FileResult,
    analyze,
    analyze_file,
    check_syntax,
    is_frozen,
    parse,
    run_case,
)
from analyzers.context import Definition, FileContext
from analyzers.findings import SEVERITIES, Finding, fingerprint, with_fingerprints
from analyzers.modules import module_imports, module_name_for, resolve_relative
from analyzers.project import Lister, Project, Reader
from analyzers.rule import CODE_RE, Invalid, Rule, Valid, docstring_sections
from analyzers.ruleset import all_rules, select_rules
from analyzers.suppressions import (
    BARE_IGNORE_CODE,
    BARE_IGNORE_MESSAGE,
    SUPPRESSION_RE,
    Suppression,
    apply_suppressions,
    suppressions,
)
from analyzers.syntax import dotted_name, nested_blocks


__all__ = [
    "BARE_IGNORE_CODE",
    "BARE_IGNORE_MESSAGE",
    "CODE_RE",
    "FROZEN_PREFIXES",
    "SEVERITIES",
    "SUPPRESSION_RE",
    "AnalysisError",
    "Definition",
    "FileContext",
    "FileResult",
    "Finding",
    "Invalid",
    "Lister",
    "Project",
    "Reader",
    "Rule",
    "Suppression",
    "Valid",
    "all_rules",
    "analyze",
    "analyze_file",
    "apply_suppressions",
    "check_syntax",
    "docstring_sections",
    "dotted_name",
    "fingerprint",
    "is_frozen",
    "module_imports",
    "module_name_for",
    "nested_blocks",
    "parse",
    "resolve_relative",
    "run_case",
    "select_rules",
    "suppressions",
    "with_fingerprints",
]
