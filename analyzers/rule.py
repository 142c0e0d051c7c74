"""The rule base class, the cases every rule embeds (`Valid`, `Invalid`), and the checks a rule class must pass
when it is defined: its code, pattern, severity, documentation sections and cases."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import libcst as cst

from analyzers.context import FileContext
from analyzers.findings import SEVERITIES
from analyzers.fixes import Proposal
from analyzers.patterns import DRBOT_META, PATTERNS


CODE_RE = re.compile(r"^DRB\d{3}$")


@dataclass(frozen=True)
class Valid:
    """Code a rule must stay silent on. `files` adds other modules of the scanned tree, by path."""

    code: str
    path: str = "diffusers/pipelines/example/pipeline_example.py"
    files: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Invalid:
    """Code a rule must report; `message`, when given, is the exact message of the single finding.

    `fixed` is the code after the rule's fixes (`drbot fix`); None says that no finding of the case has a fix,
    which a rule's test checks too: a shape whose remedy is not certain must be offered none.
    """

    code: str
    message: str | None = None
    path: str = "diffusers/pipelines/example/pipeline_example.py"
    files: Mapping[str, str] = field(default_factory=dict)
    fixed: str | None = None


_SECTION_RE = re.compile(r"^## (?P<title>.+?)\s*$", re.MULTILINE)


def docstring_sections(doc: str) -> dict[str, str]:
    """Split a ruff-style rule docstring into {section title: body}."""
    doc = textwrap.dedent(doc or "").strip("\n")
    sections: dict[str, str] = {}
    matches = list(_SECTION_RE.finditer(doc))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(doc)
        sections[match["title"]] = doc[match.end() : end].strip("\n")
    return sections


def _slug(name: str) -> str:
    """`IPAdapterEmbedsNotExpanded` -> `ip-adapter-embeds-not-expanded`: a dash before each word, an acronym kept whole."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name).lower()


_RULE_CODES: dict[str, str] = {}


class Rule(cst.CSTVisitor):
    """Base class of drbot rules: one defect, one class, one file under `analyzers/rules/`.

    A rule looks at one `FileContext`. By default `check()` visits the whole module with the rule's
    `visit_*`/`leave_*` methods; a rule that only needs a few functions overrides `check()` and walks
    those (`analyzers.walk`). For libcst's `@m.visit`/`@m.leave` matcher decorators, subclass
    `analyzers.decorated.DecoratedRule` instead: `libcst.matchers` takes 0.3 s to import, which every
    `drbot` run would otherwise pay. `applies_to` is a cheap text prefilter: files no rule applies to are
    not parsed with libcst (only checked for syntax errors, `analyzers.analysis.check_syntax`).
    """

    code: ClassVar[str]
    pattern: ClassVar[int]
    message: ClassVar[str] = ""
    severity: ClassVar[str] = "warning"
    VALID: ClassVar[Sequence[Valid]] = ()
    INVALID: ClassVar[Sequence[Invalid]] = ()
    #: substrings of which at least one must occur in a file for this rule to run on it
    REQUIRES_ANY: ClassVar[tuple[str, ...]] = ()
    #: path fragments (`/pipelines/`) of which at least one must occur in the file's path
    PATHS: ClassVar[tuple[str, ...]] = ()
    #: the rule's fixes undo drift that other fixes of the same `drbot fix` run caused (a `# Copied from` copy of a
    #: source just fixed); they are attached only when the analysis asks (`analyze_file(drift_fixes=True)`), since
    #: alone the rule cannot tell a copy left behind from a copy fixed by hand, whose fix a sync would revert
    DRIFT_FIX: ClassVar[bool] = False

    name: ClassVar[str]
    #: whether the rule offers fixes: some INVALID case says what its fix makes of it (`Invalid.fixed`)
    fixable: ClassVar[bool]
    title: ClassVar[str]
    rationale: ClassVar[str]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract", False):
            return
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not CODE_RE.match(getattr(cls, "code", "")):
            raise TypeError(f"{where}: `code` must be DRB + 3 digits")
        if cls.code in _RULE_CODES and _RULE_CODES[cls.code] != where:
            raise TypeError(f"{where}: code {cls.code} is already used by {_RULE_CODES[cls.code]}")
        _RULE_CODES[cls.code] = where
        if cls.pattern not in PATTERNS and cls.pattern != DRBOT_META:
            raise TypeError(f"{where}: `pattern` must be one of the #13656 patterns 1-10")
        if cls.severity not in SEVERITIES:
            raise TypeError(f"{where}: `severity` must be one of {SEVERITIES}")
        sections = docstring_sections(cls.__doc__ or "")
        for required in ("What it does", "Why is this bad?"):
            if not sections.get(required):
                raise TypeError(f"{where}: the docstring needs a `## {required}` section")
        if not cls.VALID or not cls.INVALID:
            raise TypeError(f"{where}: at least one VALID and one INVALID case are required")
        cls.fixable = any(case.fixed is not None for case in cls.INVALID)
        cls.name = _slug(cls.__name__)
        cls.title = " ".join(sections["What it does"].split())
        cls.rationale = " ".join(sections["Why is this bad?"].split())

    def __init__(self, context: FileContext) -> None:
        super().__init__()
        self.context = context
        self.reports: list[tuple[cst.CSTNode, str, str, str | None, Proposal | None]] = []

    @classmethod
    def applies_to(cls, path: str, source: str) -> bool:
        """Cheap test on path and text; False skips the rule (and the parse, if no rule applies).

        Files under `tests/` (a checkout's test suite) are only for rules whose `PATHS` name `/tests/`.
        """
        if not cls.applies_to_path(path):
            return False
        if not cls.REQUIRES_ANY:
            return True
        if len(cls.REQUIRES_ANY) <= _FEW_NEEDLES:
            return any(needle in source for needle in cls.REQUIRES_ANY)
        return _needles(cls.REQUIRES_ANY).search(source) is not None

    @classmethod
    def applies_to_path(cls, path: str) -> bool:
        """The path half of `applies_to`: `PATHS`, and `tests/` only for rules that name it."""
        if path.startswith("tests/") and not any(fragment.startswith("/tests/") for fragment in cls.PATHS):
            return False
        if cls.PATHS:
            slashed = f"/{path}"
            return any(fragment in slashed for fragment in cls.PATHS)
        return True

    def check(self) -> None:
        """Look at the file and `report` defects. The default visits the whole module."""
        self.context.wrapper.visit(self)

    def report(
        self, node: cst.CSTNode, message: str, *, symbol: str, scope: str | None = None, fix: Proposal | None = None
    ) -> None:
        """Report a finding at `node`. `scope` defaults to the innermost class/function around it. `fix` is the
        remedy as libcst replacements (`analyzers.fixes`), given only where it is certain."""
        self.reports.append((node, message, symbol, scope, fix))


#: up to this many substrings are looked for one by one; more go into one regular expression, a single pass over the
#: text (DRB404's 102 import lines took 0.64 s of a full scan's prefilter one by one, 0.01 s as one pattern)
_FEW_NEEDLES = 4
_PATTERNS: dict[tuple[str, ...], re.Pattern[str]] = {}


def _needles(needles: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern that matches where any of `needles` occurs (longest first, so it finds the same texts)."""
    pattern = _PATTERNS.get(needles)
    if pattern is None:
        ordered = sorted(set(needles), key=len, reverse=True)
        pattern = _PATTERNS[needles] = re.compile("|".join(re.escape(needle) for needle in ordered))
    return pattern


class Prefilter:
    """`[rule for rule in rules if rule.applies_to(path, source)]`, with one pass over the text for the needles
    (`REQUIRES_ANY`) of every rule at once, an Aho-Corasick automaton (pyahocorasick) that finds every occurrence of
    every needle, overlapping ones included: the same answers as the rules' own substring tests, which scanned each
    file once per needle (1.6 s of a full scan of diffusers 0.42.1 for 255 needles; 0.55 s in one pass). A rule that
    overrides `applies_to` is asked itself."""

    def __init__(self, rules: Sequence[type[Rule]]) -> None:
        self.rules = tuple(rules)
        base = Rule.applies_to.__func__  # type: ignore[attr-defined]
        self._own = frozenset(rule for rule in self.rules if rule.applies_to.__func__ is not base)  # type: ignore[attr-defined]
        needles = sorted({needle for rule in self.rules if rule not in self._own for needle in rule.REQUIRES_ANY})
        self._automaton = _automaton(needles)
        number = {needle: index for index, needle in enumerate(needles)}
        self._wants = {
            rule: frozenset(number[n] for n in rule.REQUIRES_ANY) for rule in self.rules if rule not in self._own
        }

    def applicable(self, path: str, source: str) -> list[type[Rule]]:
        if self._automaton is None:
            return [rule for rule in self.rules if rule.applies_to(path, source)]
        found: set[int] | None = None
        chosen: list[type[Rule]] = []
        for rule in self.rules:
            if rule in self._own:
                if rule.applies_to(path, source):
                    chosen.append(rule)
                continue
            if not rule.applies_to_path(path):
                continue
            wants = self._wants[rule]
            if wants:
                if found is None:
                    found = {index for _, index in self._automaton.iter(source)}
                if found.isdisjoint(wants):
                    continue
            chosen.append(rule)
        return chosen


def _automaton(needles: Sequence[str]):
    """An Aho-Corasick automaton of `needles` (each reported as its index), or None without pyahocorasick."""
    try:
        import ahocorasick
    except ImportError:  # a declared dependency; without it each rule tests its own needles
        return None
    automaton = ahocorasick.Automaton()
    for index, needle in enumerate(needles):
        automaton.add_word(needle, index)
    if needles:
        automaton.make_automaton()
    return automaton


_PREFILTERS: dict[tuple[type[Rule], ...], Prefilter] = {}


def prefilter(rules: Sequence[type[Rule]]) -> Prefilter:
    """The `Prefilter` of this rule set, built once per process."""
    key = tuple(rules)
    found = _PREFILTERS.get(key)
    if found is None:
        if len(_PREFILTERS) > 16:
            _PREFILTERS.clear()
        found = _PREFILTERS[key] = Prefilter(key)
    return found
