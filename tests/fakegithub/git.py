"""Git objects and diffs for the fake: real blob, tree and commit SHAs, GitHub-style patches, tarballs."""

from __future__ import annotations

import difflib
import hashlib
import io
import re
import tarfile
from dataclasses import dataclass, field


# One fixed author date keeps commit SHAs deterministic from run to run.
EPOCH = 1_764_000_000
SIMILARITY = 0.5  # git's default rename threshold (-M50%)


def blob_sha(data: bytes) -> str:
    """The SHA git gives a blob with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class TreeEntry:
    path: str  # full path from the root
    mode: str  # as the REST API spells it: 100644 for a file, 040000 for a directory
    type: str  # "blob" or "tree"
    sha: str
    size: int | None = None


@dataclass
class Commit:
    sha: str
    tree: str
    parents: list[str]
    message: str
    files: dict[str, bytes]
    entries: list[TreeEntry] = field(default_factory=list)  # every blob and subtree, depth first
    trees: dict[str, list[TreeEntry]] = field(default_factory=dict)  # tree sha -> its direct entries


def make_commit(files: dict[str, bytes], parents: list[str], message: str) -> Commit:
    """Build the commit (and all its trees) git would make for this snapshot."""
    trees: dict[str, list[TreeEntry]] = {}
    entries: list[TreeEntry] = []

    def build(prefix: str, paths: dict[str, bytes]) -> str:
        children: dict[str, dict[str, bytes]] = {}
        direct: list[tuple[str, TreeEntry]] = []
        for path, data in paths.items():
            head, _, rest = path.partition("/")
            if rest:
                children.setdefault(head, {})[rest] = data
            else:
                direct.append((head, TreeEntry(prefix + head, "100644", "blob", blob_sha(data), len(data))))
        for name, sub in children.items():
            direct.append((name, TreeEntry(prefix + name, "040000", "tree", build(prefix + name + "/", sub))))
        # git orders tree entries by name, a directory compared as if its name ended in "/".
        direct.sort(key=lambda item: item[0] + ("/" if item[1].type == "tree" else ""))
        raw = b"".join(
            (b"40000" if entry.type == "tree" else b"100644") + b" " + name.encode() + b"\0" + bytes.fromhex(entry.sha)
            for name, entry in direct
        )
        sha = hashlib.sha1(b"tree %d\0" % len(raw) + raw).hexdigest()
        trees[sha] = [entry for _, entry in direct]
        return sha

    tree = build("", files)
    for sha in trees:
        entries.extend(trees[sha])
    entries.sort(key=lambda entry: entry.path)
    signature = f"Fake GitHub <fake@example.com> {EPOCH} +0000"
    text = f"tree {tree}\n" + "".join(f"parent {p}\n" for p in parents)
    text += f"author {signature}\ncommitter {signature}\n\n{message}\n"
    raw = text.encode()
    sha = hashlib.sha1(b"commit %d\0" % len(raw) + raw).hexdigest()
    return Commit(sha, tree, parents, message, dict(files), entries, trees)


def _text(data: bytes | None) -> list[str] | None:
    """The lines of a text file (keeping their endings), or None for a binary file."""
    if data is None:
        return []
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def _range(start: int, length: int) -> str:
    # git's hunk ranges: "3" for one line, "0,0" before the first line of an empty side.
    if length == 1:
        return str(start + 1)
    return f"{start if length == 0 else start + 1},{length}"


def _heading(lines: list[str], start: int) -> str:
    """git's default hunk heading: the last line before the hunk that starts with a letter, `_` or `$`."""
    for line in reversed(lines[:start]):
        if re.match(r"[A-Za-z_$]", line):
            return " " + line.rstrip()[:80]
    return ""


def patch(old: bytes | None, new: bytes | None) -> tuple[str | None, int, int]:
    """A GitHub `patch` (hunks only, no ---/+++ header) with its additions and deletions; None for binary files."""
    a, b = _text(old), _text(new)
    if a is None or b is None:
        return None, 0, 0
    out: list[str] = []
    additions = deletions = 0

    def emit(sign: str, line: str) -> None:
        out.append(sign + line.rstrip("\r\n") if line.endswith("\n") else sign + line)
        if not line.endswith("\n"):
            out.append("\\ No newline at end of file")

    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(3):
        first, last = group[0], group[-1]
        header = f"@@ -{_range(first[1], last[2] - first[1])} +{_range(first[3], last[4] - first[3])} @@"
        out.append(header + _heading(a, first[1]))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                for line in a[i1:i2]:
                    emit(" ", line)
                continue
            for line in a[i1:i2]:
                emit("-", line)
                deletions += 1
            for line in b[j1:j2]:
                emit("+", line)
                additions += 1
    return "\n".join(out), additions, deletions


def diff_lines(text: str | None) -> tuple[set[int], set[int], int]:
    """Lines of the old (LEFT) and new (RIGHT) file that a review comment may target, and the patch's positions."""
    left: set[int] = set()
    right: set[int] = set()
    positions = 0
    old = new = 0
    for number, line in enumerate((text or "").split("\n")):
        if line.startswith("@@"):
            header = line.split("@@")[1].split()
            old = int(header[0][1:].split(",")[0])
            new = int(header[1][1:].split(",")[0])
            if number:
                positions += 1  # a later hunk header still counts as a position; the first does not
            continue
        positions += 1
        if line.startswith("\\"):
            continue
        if line.startswith("-"):
            left.add(old)
            old += 1
        elif line.startswith("+"):
            right.add(new)
            new += 1
        else:
            left.add(old)
            right.add(new)
            old += 1
            new += 1
    return left, right, positions


@dataclass
class FileChange:
    filename: str
    status: str  # added, removed, modified, renamed
    old: bytes | None
    new: bytes | None
    previous_filename: str | None = None
    patch: str | None = None
    additions: int = 0
    deletions: int = 0


def changed_files(base: dict[str, bytes], head: dict[str, bytes]) -> list[FileChange]:
    """What GitHub lists under a pull request's files: sorted by name, renames paired as git -M50% would."""
    removed = {path: data for path, data in base.items() if path not in head}
    added = {path: data for path, data in head.items() if path not in base}
    changes: list[FileChange] = []
    for path in sorted(set(base) & set(head)):
        if base[path] != head[path]:
            changes.append(FileChange(path, "modified", base[path], head[path]))
    for new_path in sorted(added):
        best, best_ratio = None, SIMILARITY
        for old_path in sorted(removed):
            ratio = _similarity(removed[old_path], added[new_path])
            if ratio >= best_ratio and (best is None or ratio > best_ratio):
                best, best_ratio = old_path, ratio
        if best is not None:
            changes.append(FileChange(new_path, "renamed", removed.pop(best), added[new_path], previous_filename=best))
        else:
            changes.append(FileChange(new_path, "added", None, added[new_path]))
    changes += [FileChange(path, "removed", data, None) for path, data in removed.items()]
    for change in changes:
        if change.status == "renamed" and change.old == change.new:
            continue  # a pure rename has no patch
        change.patch, change.additions, change.deletions = patch(change.old, change.new)
    changes.sort(key=lambda change: change.filename)
    return changes


def _similarity(old: bytes, new: bytes) -> float:
    if old == new:
        return 1.0
    a, b = _text(old), _text(new)
    if a is None or b is None or not a or not b:
        return 0.0
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return matcher.ratio() if matcher.real_quick_ratio() >= SIMILARITY else 0.0


def tarball(commit: Commit, top: str) -> bytes:
    """A gzip tarball of the commit as `git archive` (and so GitHub) makes it: one top directory, pax comment = sha."""
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": commit.sha}
    ) as tar:
        root = tarfile.TarInfo(top + "/")
        root.type, root.mode, root.mtime = tarfile.DIRTYPE, 0o775, EPOCH
        tar.addfile(root)
        for entry in commit.entries:
            info = tarfile.TarInfo(f"{top}/{entry.path}")
            info.mtime = EPOCH
            if entry.type == "tree":
                info.type, info.mode = tarfile.DIRTYPE, 0o775
                tar.addfile(info)
            else:
                data = commit.files[entry.path]
                info.size, info.mode = len(data), 0o664
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
