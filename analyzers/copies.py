"""diffusers' `# Copied from diffusers.<module>.<object>` contract (`utils/check_copies.py`), the part DRB801 and
`drbot fix` share: the marker, and where a copied object's body lies in its source, line by line on text."""

from __future__ import annotations

import io
import re
from typing import NamedTuple


COPY_RE = re.compile(r"^(\s*)#\s*Copied from\s+diffusers\.(\S+\.\S+)\s*($|\S.*$)")


def lines(text: str) -> list[str]:
    """`text` as lines that keep their `\\n`, as check_copies reads a file."""
    return io.StringIO(text, newline="\n").readlines()


def should_continue(line: str, indent: str) -> bool:
    return line.startswith(indent) or len(line) <= 1 or re.search(r"^\s*\)(\s*->.*:|:)\s*$", line) is not None


class Missing(Exception):
    """The module of the copied object exists but the object does not (check_copies raises)."""


class Located(NamedTuple):
    """The body of a copied object in its source: `lines[start:end]` of the file at `path`."""

    path: str
    lines: list[str]
    start: int
    end: int


def locate_code(project, object_name: str) -> Located | None:
    """Where `find_code_in_diffusers` finds the body of `object_name` (after its `def`/`class` line), or None when
    the module is not in the project view; raise `Missing` when the module has no such object."""
    parts = object_name.split(".")
    i = 0
    module = parts[0]
    path = f"diffusers/{module}.py"
    text = project.source(path)
    while i < len(parts) and text is None:
        i += 1
        if i < len(parts):
            module = f"{module}/{parts[i]}"
            path = f"diffusers/{module}.py"
            text = project.source(path)
    if text is None:
        return None
    found = lines(text)
    indent = ""
    line_index = 0
    for name in parts[i + 1 :]:
        pattern = re.compile(rf"^{indent}(class|def)\s+{re.escape(name)}(\(|\:)")
        while line_index < len(found) and pattern.search(found[line_index]) is None:
            line_index += 1
        indent += "    "
        line_index += 1
    if line_index >= len(found):
        raise Missing(object_name)
    start_index = line_index
    while line_index < len(found) and should_continue(found[line_index], indent):
        line_index += 1
    while len(found[line_index - 1]) <= 1:
        line_index -= 1
    return Located(path, found, start_index, line_index)


def find_code(project, object_name: str) -> str | None:
    """`find_code_in_diffusers`: the body of `object_name`, or None when its module is not in the project view."""
    located = locate_code(project, object_name)
    return None if located is None else "".join(located.lines[located.start : located.end])
