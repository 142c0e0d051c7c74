"""Fixes: a rule's mechanical remedy, proposed as libcst node replacements, turned into whole-line edits of the
file's text, applied, composed and shown as a unified diff.

A rule that is certain of the remedy passes `fix=Proposal(description, replacements)` to `report`. The engine
(`analyzers.analysis`) transforms the module with those replacements (libcst keeps every other byte: formatting,
comments) and diffs the result against the text by lines, so each `Edit` replaces whole lines: what a GitHub
`suggestion` block replaces, and what two fixes are checked for overlap by.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import libcst as cst

from analyzers import walk
from analyzers.findings import Edit, Finding, Fix


@dataclass(frozen=True)
class Replace:
    """Replace `old` (a node of the analysed module) with `new`: a node, or a `FlattenSentinel` of statements to
    insert around it (`FlattenSentinel([check, old])` inserts `check` before `old`), or `RemoveFromParent()`."""

    old: cst.CSTNode
    new: cst.CSTNode | cst.FlattenSentinel | cst.RemovalSentinel


@dataclass(frozen=True)
class Proposal:
    """What a rule hands to `report(..., fix=...)`: a description (an imperative phrase with backticked code) and
    the replacements that make it, which the engine turns into a `Fix` of line edits. A rule that works on the
    text's lines rather than its syntax (DRB801, as `make fix-copies` does) gives the `edits` themselves."""

    description: str
    replacements: tuple[Replace, ...] = ()
    edits: tuple[Edit, ...] = ()


class _Replacer(cst.CSTTransformer):
    def __init__(self, replacements: Iterable[Replace]) -> None:
        super().__init__()
        self.by_id = {id(r.old): r.new for r in replacements}

    def on_leave(self, original_node, updated_node):
        return self.by_id.get(id(original_node), updated_node)


def split_lines(text: str) -> list[str]:
    """`text` as lines that keep their `\\n` (only `\\n` ends a line, as GitHub and libcst count them)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def line_edits(old: str, new: str) -> tuple[Edit, ...]:
    """The whole-line edits that turn `old` into `new`, one per changed run of lines. A pure insertion takes the
    line after it (or before it, at the end of the file) into its edit, so that every edit replaces some lines."""
    a, b = split_lines(old), split_lines(new)
    spans: list[tuple[int, int, int, int]] = []  # (i1, i2, j1, j2): a[i1:i2] becomes b[j1:j2]
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if i1 == i2:  # an insertion: anchor it on a neighbouring line
            if i1 < len(a):
                i2, j2 = i1 + 1, j2 + 1
            elif i1 > 0:
                i1, j1 = i1 - 1, j1 - 1
            else:  # inserted into an empty file: no line to replace
                continue
        if spans and i1 < spans[-1][1]:  # shares its anchor line with the previous change: one edit for both
            p1, p2, q1, q2 = spans.pop()
            i1, i2, j1, j2 = p1, max(p2, i2), q1, max(q2, j2)
        spans.append((i1, i2, j1, j2))
    return tuple(Edit(i1 + 1, i2, "".join(b[j1:j2])) for i1, i2, j1, j2 in spans)


def proposal_edits(module: cst.Module, source: str, proposal: Proposal) -> tuple[Edit, ...]:
    """The line edits of `proposal` on `module` (whose text is `source`); empty when it changes nothing."""
    if proposal.edits:  # whole lines already, kept as the rule gives them (DRB801's span is the copy's body)
        return proposal.edits if apply_edits(source, proposal.edits) != source else ()
    new = _spliced(module, source, proposal.replacements)
    if new is None:
        changed = replaced(module, proposal.replacements)
        if not isinstance(changed, cst.Module):
            changed = module.visit(_Replacer(proposal.replacements))
        new = changed.code
    return line_edits(source, new) if new != source else ()


def _spliced(module: cst.Module, source: str, replacements: Sequence[Replace]) -> str | None:
    """`source` with `replacements` made, generating the code of the smallest statement that holds them all, before
    and after, instead of the whole file's (a pipeline module's code takes tens of milliseconds to generate). The
    statement's code is generated at its own indentation, as the whole file's generation would, and must occur
    exactly once in `source`; None when it does not, or when no statement holds the replacements (the caller then
    generates the whole file)."""
    if walk.order_of(module) is None or not replacements:
        return None
    chains = []
    for replacement in replacements:
        chain = _ancestors(module, replacement.old)
        if chain is None:
            return None
        chains.append(chain[:-1])  # the statements above: a replaced statement may become several
    shared = [node for node in chains[0] if all(any(n is node for n in chain) for chain in chains[1:])]
    statements = [index for index, node in enumerate(shared) if isinstance(node, cst.BaseStatement)]
    if not statements:
        return None
    statement = shared[statements[-1]]
    indents = [
        node.indent if node.indent is not None else module.default_indent
        for node in shared[: statements[-1]]
        if isinstance(node, cst.IndentedBlock)
    ]
    rebuilt = replaced(statement, replacements)
    if not isinstance(rebuilt, cst.BaseStatement):
        return None
    try:
        before, after = _code(statement, module, indents), _code(rebuilt, module, indents)
    except Exception:  # noqa: BLE001 - libcst's code generation state is not public: the whole file's is
        return None
    if not before or source.count(before) != 1:
        return None
    return source.replace(before, after, 1)


def _ancestors(root: cst.CSTNode, node: cst.CSTNode) -> list[cst.CSTNode] | None:
    """`root`, the nodes between, and `node`, from the prepared walk's spans; None when `node` is not under `root`."""
    target, found = walk.span(node), walk.span(root)
    if target is None or found is None or not found[0] <= target[0] < found[1]:
        return None
    chain = [root]
    while chain[-1] is not node:
        for child in walk._children(chain[-1]):
            bounds = walk.span(child)
            if bounds is not None and bounds[0] <= target[0] < bounds[1]:
                chain.append(child)
                break
        else:
            return None
    return chain


def _code(node: cst.CSTNode, module: cst.Module, indents: list[str]) -> str:
    """The code of `node` as `module.code` writes it, inside blocks indented by `indents`."""
    from libcst._nodes.internal import CodegenState

    state = CodegenState(default_indent=module.default_indent, default_newline=module.default_newline)
    for indent in indents:
        state.increase_indent(indent)
    node._codegen(state)
    return "".join(state.tokens)


class _Unsupported(Exception):
    """A replacement `replaced` leaves to libcst's transformer (a sentinel where one node must stand)."""


def replaced(root: cst.CSTNode, replacements: Sequence[Replace]) -> cst.CSTNode | None:
    """`root` (the module, or a node of it) with `replacements` made, as libcst's transformer makes them, but copying
    only the nodes above a replaced one (a transformer rebuilds every node of the file: 0.3 s for a pipeline
    module). Needs the file's walk (`walk.prepare`) to tell which nodes lie above; None when `root` is not in it, a
    replaced node is not, or a sentinel stands where one node must."""
    if walk.span(root) is None:
        return None
    targets = []
    for replacement in replacements:
        found = walk.span(replacement.old)
        if found is None:
            return None
        targets.append(found[0])
    by_id = {id(r.old): r.new for r in replacements}

    def rebuild(node: cst.CSTNode) -> cst.CSTNode | cst.FlattenSentinel | cst.RemovalSentinel:
        new = by_id.get(id(node))
        if new is not None:
            return new
        found = walk.span(node)  # None for whitespace and punctuation, which hold no replaced node
        if found is None or not any(found[0] <= target < found[1] for target in targets):
            return node
        changes: dict[str, object] = {}
        for field in dataclasses.fields(node):
            value = getattr(node, field.name)
            if isinstance(value, cst.CSTNode):
                rebuilt = rebuild(value)
                if rebuilt is not value:
                    if not isinstance(rebuilt, cst.CSTNode):
                        raise _Unsupported
                    changes[field.name] = rebuilt
            elif isinstance(value, (tuple, list)):
                items: list[object] = []
                for item in value:
                    rebuilt = rebuild(item) if isinstance(item, cst.CSTNode) else item
                    if isinstance(rebuilt, cst.FlattenSentinel):
                        items.extend(rebuilt.nodes)
                    elif not isinstance(rebuilt, cst.RemovalSentinel):
                        items.append(rebuilt)
                if len(items) != len(value) or any(a is not b for a, b in zip(items, value, strict=True)):
                    changes[field.name] = type(value)(items)
        return node.with_changes(**changes) if changes else node

    try:
        result = rebuild(root)
    except _Unsupported:
        return None
    return result if isinstance(result, cst.CSTNode) else None  # a sentinel in place of `root` itself: no node


def apply_edits(source: str, edits: Sequence[Edit]) -> str:
    """`source` with `edits` applied; they must be sorted and must not overlap (ValueError otherwise)."""
    lines = split_lines(source)
    out: list[str] = []
    at = 0  # lines[:at] are done
    for edit in sorted(edits, key=lambda e: (e.line, e.end_line)):
        start = edit.line - 1
        if start < at or edit.end_line > len(lines) or edit.end_line < edit.line - 1:
            raise ValueError(f"edit of lines {edit.line}-{edit.end_line} overlaps another or lies outside the file")
        out.extend(lines[at:start])
        out.append(edit.text)
        at = edit.end_line
    out.extend(lines[at:])
    return "".join(out)


def overlaps(a: Fix, b: Fix) -> bool:
    """Whether two fixes touch a common line (or abut on one), so they cannot be applied in one pass."""
    return any(x.line <= y.end_line and y.line <= x.end_line for x in a.edits for y in b.edits)


def compatible(findings: Iterable[Finding]) -> list[Finding]:
    """The fixable findings of one file that can be applied together: by rule code, then line, each one kept
    unless it overlaps one kept before it (the rest wait for the next pass, on the fixed text). Two findings that
    share one fix (the same edits) count once."""
    chosen: list[Finding] = []
    for finding in sorted((f for f in findings if f.fix is not None), key=lambda f: (f.code, f.line, f.symbol)):
        assert finding.fix is not None
        if any(finding.fix == other.fix for other in chosen):
            continue
        if not any(overlaps(finding.fix, other.fix) for other in chosen if other.fix is not None):
            chosen.append(finding)
    return chosen


def apply_fixes(source: str, findings: Sequence[Finding]) -> str:
    """`source` with the fixes of `findings` (compatible ones, as `compatible` picks) applied."""
    edits = [edit for f in compatible(findings) if f.fix is not None for edit in f.fix.edits]
    return apply_edits(source, edits)


def compiles(path: str, source: str) -> str | None:
    """None when `source` compiles as Python; else why not."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(source, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def unified_diff(path: str, old: str, new: str, *, prefix: tuple[str, str] = ("a/", "b/")) -> str:
    """A `git diff`-style unified diff of one file (empty when unchanged)."""
    lines = difflib.unified_diff(
        split_lines(old), split_lines(new), fromfile=prefix[0] + path, tofile=prefix[1] + path, n=3
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def suggestion(source: str, fix: Fix, line: int, end_line: int) -> str | None:
    """The body of a GitHub `suggestion` block that replaces lines `line`..`end_line` of `source` with what `fix`
    makes of them, or None when the fix reaches outside those lines (a suggestion can only replace its own)."""
    if not fix.edits or fix.line < line or fix.end_line > end_line:
        return None
    lines = split_lines(source)
    if end_line > len(lines):
        return None
    shifted = [Edit(e.line - line + 1, e.end_line - line + 1, e.text) for e in fix.edits]
    block = apply_edits("".join(lines[line - 1 : end_line]), shifted)
    return block if block.endswith("\n") or not block else block + "\n"


def statement_line(root: cst.CSTNode, statement: cst.BaseSmallStatement) -> cst.SimpleStatementLine | None:
    """The line under `root` that holds `statement` alone (`return x` on its own line, not `if y: return x` nor
    `a = 1; return x`): the line a fix can put statements before. None when there is no such line."""
    from analyzers import walk

    for line in walk.nodes(root, cst.SimpleStatementLine):
        if len(line.body) == 1 and line.body[0] is statement:
            return line
    return None


def insert_before(line: cst.SimpleStatementLine, code: str, module: cst.Module) -> Replace:
    """Insert the statements of `code` (at no indentation; the block's indentation is added) before `line`; the
    comments and blank lines above `line` stay above the inserted statements."""
    inserted = list(cst.parse_module(code, config=module.config_for_parsing).body)
    inserted[0] = inserted[0].with_changes(leading_lines=line.leading_lines)
    return Replace(line, cst.FlattenSentinel([*inserted, line.with_changes(leading_lines=())]))
