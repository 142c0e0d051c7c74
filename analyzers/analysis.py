"""Analysing one file: the text prefilter, one parse shared by every rule that applies, the rules run with a
broken one contained, suppressions, fingerprints. A file is analysed, skipped as frozen, or has errors that say
why it was not (it does not parse, a rule raised)."""

from __future__ import annotations

import ast
import contextlib
import gc
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import libcst as cst

from analyzers import walk
from analyzers.context import FileContext
from analyzers.findings import Finding, Fix, with_fingerprints
from analyzers.fixes import apply_fixes, proposal_edits
from analyzers.parsing import parse_module
from analyzers.project import Project, parsed_already
from analyzers.rule import Invalid, Rule, Valid, prefilter
from analyzers.ruleset import all_rules
from analyzers.suppressions import apply_suppressions


class AnalysisError(Exception):
    """A file could not be analysed (it does not parse); the scan goes on without it."""


def parse(path: str, source: str, project: Project | None = None) -> cst.Module:
    """Parse `source`, raising AnalysisError with the position when libcst cannot. A file a rule already read as
    a neighbour (through `project`, or any view of this process recently) is not parsed again."""
    known = parsed_already(source) or (project.parsed(path, source) if project is not None else None)
    if known is not None:
        return known
    try:
        return parse_module(source)
    except cst.ParserSyntaxError as error:
        raise AnalysisError(
            f"libcst cannot parse this file: {error.message} (line {error.raw_line}, column {error.raw_column})"
        ) from None
    except RecursionError:
        raise AnalysisError("libcst cannot parse this file: nesting too deep") from None


def check_syntax(path: str, source: str) -> None:
    """Raise AnalysisError, as `parse` does, for a file that does not parse; cheaply for one that does.

    For the files no rule applies to, which are not parsed with libcst: Python's own parser (`ast`) is several
    times faster. Only a file that `ast` rejects is parsed with libcst, whose verdict and message count, so a
    file is an error whether or not a rule applies to it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # `invalid escape sequence` and the like: not ours to report
            compile(source, path, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        parse(path, source)


#: code diffusers no longer changes: its docs say deprecated pipelines are not tested and "won't accept any
#: changes", so findings there are noise for maintainers. Scanned only when asked (`include_frozen`).
FROZEN_PREFIXES = ("diffusers/pipelines/deprecated/",)


def is_frozen(path: str) -> bool:
    return path.startswith(FROZEN_PREFIXES)


#: a pipeline class that inherits this mixin is deprecated where it stands: diffusers warns on instantiation that
#: it "won't receive updates past" its `_last_supported_version`, and its tests are skipped
DEPRECATED_MIXIN = "DeprecatedPipelineMixin"


def deprecated_classes(module: cst.Module) -> frozenset[str]:
    """Top-level classes of `module` that list `DeprecatedPipelineMixin` among their bases."""
    names = set()
    for statement in module.body:
        if isinstance(statement, cst.ClassDef):
            for base in statement.bases:
                value = base.value
                name = value.attr.value if isinstance(value, cst.Attribute) else getattr(value, "value", None)
                if name == DEPRECATED_MIXIN:
                    names.add(statement.name.value)
    return frozenset(names)


def _in_classes(finding: Finding, classes: frozenset[str]) -> bool:
    return finding.scope.split(".", 1)[0] in classes


@dataclass
class FileResult:
    path: str
    findings: list[Finding]
    errors: list[str]
    skipped: bool = False


def analyze_file(
    path: str,
    source: str,
    *,
    project: Project | None = None,
    rules: Sequence[type[Rule]] | None = None,
    include_frozen: bool = False,
    drift_fixes: bool = False,
) -> FileResult:
    """Run `rules` on one file. A parse failure or a rule's exception becomes an error, never a raise. With
    `drift_fixes`, the findings of `Rule.DRIFT_FIX` rules carry their fixes too (`drbot fix` asks).

    Only a file that some rule's prefilter accepts (or that holds a `drbot:` comment) is parsed with libcst;
    any other file is only checked for syntax errors (`check_syntax`), so an unparsable file is an error either way.
    """
    with collector_paused():
        return _analyze_file(path, source, project, rules, include_frozen, drift_fixes)


def _analyze_file(
    path: str,
    source: str,
    project: Project | None,
    rules: Sequence[type[Rule]] | None,
    include_frozen: bool,
    drift_fixes: bool,
) -> FileResult:
    if is_frozen(path) and not include_frozen:
        return FileResult(path, [], [], skipped=True)
    rules = all_rules() if rules is None else rules
    applicable = prefilter(rules).applicable(path, source)
    try:
        if not applicable and "drbot:" not in source:
            check_syntax(path, source)
            return FileResult(path, [], [])
        module = parse(path, source, project)
    except AnalysisError as error:
        return FileResult(path, [], [str(error)])
    project = project or Project.from_mapping({path: source})
    context = FileContext(path, source, module, project)
    findings: list[Finding] = []
    errors: list[str] = []
    try:
        walk.prepare(module)
        _run_rules(context, applicable, findings, errors, drift_fixes)
    finally:
        walk.clear()
    if not include_frozen:
        deprecated = deprecated_classes(module)
        if deprecated:  # frozen upstream like pipelines/deprecated/, class by class
            findings = [f for f in findings if not _in_classes(f, deprecated)]
    findings = apply_suppressions(findings, path, source)
    return FileResult(path, with_fingerprints(findings), errors)


@contextlib.contextmanager
def collector_paused():
    """Python's cycle collector off while one file is analysed, back on (as it was) after.

    A file's syntax tree is some hundred thousand small acyclic objects, freed by reference counting when the file is
    done; its allocations still trigger collections that traverse everything alive, the project view's parsed
    neighbours included (`analyzers.scan.COLLECT_GROWTH` says what they cost a scan). What a file leaves in cycles
    is collected once the collector is on again.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _run_rules(
    context: FileContext,
    applicable: Sequence[type[Rule]],
    findings: list[Finding],
    errors: list[str],
    drift_fixes: bool = False,
) -> None:
    for rule_class in applicable:
        rule = rule_class(context)
        try:
            rule.check()
            for node, message, symbol, scope, proposal in rule.reports:
                line, end_line = context.position(node, scope)
                fix = None
                if proposal is not None and (drift_fixes or not rule.DRIFT_FIX):
                    edits = proposal_edits(context.module, context.source, proposal)
                    fix = Fix(proposal.description, edits) if edits else None
                findings.append(
                    Finding(
                        code=rule.code,
                        pattern=rule.pattern,
                        path=context.path,
                        line=line,
                        end_line=end_line,
                        scope=scope if scope is not None else context.enclosing_scope(line, end_line),
                        symbol=symbol,
                        message=message,
                        severity=rule.severity,
                        fix=fix,
                    )
                )
        except Exception as error:  # noqa: BLE001 - one broken rule must not stop the scan
            errors.append(f"{rule.code} raised {type(error).__name__}: {error}")


def analyze(
    path: str, source: str, *, project: Project | None = None, rules: Sequence[type[Rule]] | None = None
) -> list[Finding]:
    """Return the findings of `rules` (default: all) on one file; raise AnalysisError if it cannot be analysed."""
    result = analyze_file(path, source, project=project, rules=rules)
    if result.errors:
        raise AnalysisError("; ".join(result.errors))
    return result.findings


def run_case(rule: type[Rule], case: Valid | Invalid, *, drift_fixes: bool = False) -> list[Finding]:
    """Run one rule on one of its embedded cases (dedented), with the case's extra files as the project."""
    source = textwrap.dedent(case.code)
    files = {path: textwrap.dedent(text) for path, text in case.files.items()}
    files[case.path] = source
    result = analyze_file(
        case.path, source, project=Project.from_mapping(files), rules=[rule], drift_fixes=drift_fixes
    )
    if result.errors:
        raise AnalysisError("; ".join(result.errors))
    return result.findings


#: passes of `fix_case` (and of `drbot fix` over a file) before it stops: a fix that enables another converges fast
MAX_FIX_PASSES = 8


def fix_case(rule: type[Rule], case: Invalid, rules: Sequence[type[Rule]] | None = None) -> str:
    """The code of an INVALID case (dedented) after `rules` (default: `rule`) fixed it, pass after pass, until no
    finding has a fix left; what `Invalid.fixed` must equal."""
    source = textwrap.dedent(case.code)
    files = {path: textwrap.dedent(text) for path, text in case.files.items()}
    for _ in range(MAX_FIX_PASSES):
        project = Project.from_mapping({**files, case.path: source})
        result = analyze_file(case.path, source, project=project, rules=rules or [rule], drift_fixes=True)
        if result.errors:
            raise AnalysisError("; ".join(result.errors))
        fixable = [f for f in result.findings if f.fix]
        if not fixable:
            break
        source = apply_fixes(source, fixable)
    return source
