"""libcst's parser without its per-node validation: the parse every analysed file and every neighbour goes through.

Every libcst node checks itself when it is built (`CSTNode.__post_init__` calls `_validate`: parentheses
balanced, the whitespace a keyword needs, ...). That guards trees that code builds by hand. A tree that the
parser builds from source text is valid by construction, and checking it again is about an eighth of
`libcst.parse_module`'s time (7% of a full scan of diffusers). libcst says as much beside the call: "It might
make more sense to move validation work into the visitor, which would allow us to avoid validating the tree when
parsing a file." libcst has no switch for it, so `parse_module` swaps the hook out for the length of one parse.

- The trees are the same: the hook only checks, it never changes a node. On 4,000 files (diffusers, the
  packages installed beside it, the standard library) both parses accept and reject the same files and give
  back the same code (`tests/analyzers/test_parsing.py` checks a sample of them).
- Nodes built by hand are still checked: the hook is back as soon as the parse returns or raises.
- While one thread parses, a node another thread builds is not checked either. Parses take a lock, so two
  never overlap. Scans and reviews analyse in one thread per process.
- If libcst ever validates some other way (another `__post_init__`, or one of its own in a node class),
  `parse_module` is plain `libcst.parse_module`.
"""

from __future__ import annotations

import threading

import libcst as cst


CSTNode = cst.CSTNode
_CHECK = CSTNode.__dict__.get("__post_init__")
_LOCK = threading.Lock()


def _unchecked(self: CSTNode) -> None:
    """`CSTNode.__post_init__` during a parse: nothing to check."""


def _hook_is_shared() -> bool:
    """Whether every libcst node validates through `CSTNode.__post_init__` alone, as in libcst 1.x."""
    if _CHECK is None or getattr(_CHECK, "__qualname__", "") != "CSTNode.__post_init__":
        return False
    stack = list(CSTNode.__subclasses__())
    while stack:
        kind = stack.pop()
        if "__post_init__" in kind.__dict__:
            return False
        stack.extend(kind.__subclasses__())
    return True


SKIPS_VALIDATION = _hook_is_shared()


def parse_module(source: str) -> cst.Module:
    """`libcst.parse_module(source)`, the same tree and the same errors, without checking each node as it is built."""
    if not SKIPS_VALIDATION:
        return cst.parse_module(source)
    with _LOCK:
        CSTNode.__post_init__ = _unchecked  # type: ignore[method-assign]
        try:
            return cst.parse_module(source)
        finally:
            CSTNode.__post_init__ = _CHECK  # type: ignore[method-assign, assignment]
