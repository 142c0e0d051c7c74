"""Say why a subprocess failed: the command, its exit status (or the signal that killed it) and what it printed."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence


#: how much of a failed command's output an error message keeps (the end: git's `fatal:` line comes last)
MAX_OUTPUT_CHARS = 2000


def exit_status(returncode: int) -> str:
    """`exit status 128`, or `killed by signal 9 (SIGKILL)` for a negative return code."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = f" ({signal.Signals(-returncode).name})"
    except ValueError:
        name = ""
    return f"killed by signal {-returncode}{name}"


def _text(output: str | bytes | None) -> str:
    if output is None:
        return ""
    if isinstance(output, bytes):
        output = output.decode("utf-8", "replace")
    output = output.strip()
    return output if len(output) <= MAX_OUTPUT_CHARS else "…" + output[-MAX_OUTPUT_CHARS:]


def describe_failure(
    command: Sequence[str], returncode: int, stderr: str | bytes | None, stdout: str | bytes | None = None
) -> str:
    """`git commit -q -m base failed (exit status 128): fatal: …`: stderr, else stdout (some commands, `git commit`
    among them, explain themselves there), else a note that the command printed nothing."""
    said = _text(stderr) or _text(stdout) or "it printed nothing"
    return f"{' '.join(command)} failed ({exit_status(returncode)}): {said}"


def describe_completed(result: subprocess.CompletedProcess, command: Sequence[str] | None = None) -> str:
    """`describe_failure` for a finished `subprocess.run` (`command`: how to name it, default its argv)."""
    argv = command if command is not None else [str(part) for part in result.args]
    return describe_failure(argv, result.returncode, result.stderr, result.stdout)


def describe_start_failure(command: Sequence[str], error: OSError) -> str:
    """The command could not be started at all (not installed, not executable, no such directory)."""
    return f"{' '.join(command)} could not be started: {error.strerror or error}"
