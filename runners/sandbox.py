"""Run one untrusted contract job in a bubblewrap sandbox: its own uid, no network, a read-only minimal filesystem,
a size-capped scratch, memory/CPU/process/output limits, and nothing left running afterwards (DESIGN §7).

`Sandbox(limits).run(argv, ro_binds=[(host, inside)], env={...}, wall_seconds=...)` returns an `Outcome`: the exit
status, the output (at most `limits.output_bytes`), and which limit ended the job, if one did. `check()` raises
`SandboxUnavailable`, naming the fix, when the kernel or the host cannot give that isolation; nothing here ever falls
back to running the job unsandboxed. `Unsandboxed` is the explicit twin for local development: same interface, same
time/output/rlimit caps, no isolation at all. docs/sandbox.md describes the isolation and what it does not cover.

Stdlib only: the worker imports it, and the job's own interpreter never does.
"""

from __future__ import annotations

import asyncio
import enum
import glob
import logging
import os
import shutil
import signal
import site
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


log = logging.getLogger("drbot.sandbox")

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SCRATCH = "/tmp"  # the sandbox's only writable place: HOME, TMPDIR and the HF cache live here
SHM_BYTES = 64 * MiB  # /dev/shm gets its own tmpfs; 64 MiB is Docker's default and plenty for semaphores
NOBODY = 65534
BWRAP, SETPRIV, PRLIMIT = "/usr/bin/bwrap", "/usr/bin/setpriv", "/usr/bin/prlimit"
CGROUP_PREFIX = "drbot-job-"


class SandboxUnavailable(RuntimeError):
    """The host cannot give the sandbox's isolation; the message names the fix. Never a reason to run unsandboxed."""


class Exceeded(str, enum.Enum):
    """Which limit ended a job. A `str` enum, so `outcome.limit == "memory"` reads naturally."""

    WALL_TIME = "wall_time"
    CPU_TIME = "cpu_time"
    MEMORY = "memory"
    OUTPUT = "output"
    PROCESSES = "processes"
    FILE_SIZE = "file_size"
    SCRATCH = "scratch"


@dataclass(frozen=True)
class Limits:
    """Per-job limits. The defaults fit a tiny-pipeline contract job on CPU or GPU: importing torch and diffusers
    takes about 400 MB resident, a tiny pipeline run a few hundred more, and CUDA's host-side libraries about 2 GB."""

    memory_bytes: int = 4 * GiB  # resident memory of the whole job, scratch files included (tmpfs is memory)
    cpu_seconds: int = 3600  # per process (RLIMIT_CPU); the wall clock is the real bound, this stops a lone spinner
    processes: int = 512  # tasks: processes *and* threads (torch starts one thread per core on big hosts)
    file_size_bytes: int = 512 * MiB  # largest file the job may write (RLIMIT_FSIZE)
    output_bytes: int = 8 * MiB  # stdout+stderr kept by the parent; more ends the job
    scratch_bytes: int = 1 * GiB  # size of the scratch tmpfs at SCRATCH

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}")


@dataclass(frozen=True)
class Outcome:
    """What a job did. `returncode` follows the shell's convention: 128+N when signal N ended the job."""

    returncode: int
    output: bytes
    limit: Exceeded | None
    duration_s: float
    peak_memory_bytes: int | None = None
    sandboxed: bool = True

    @property
    def signal(self) -> int | None:
        return self.returncode - 128 if self.returncode > 128 else None

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


# -- seccomp: the kernel surface an unprivileged job has no use for --------------------------------------------------
#
# The sandbox's uid has no capabilities, but an unprivileged user namespace would hand it a fresh set of them over
# objects it owns, and most recent local privilege escalations (nf_tables, fs_context, io_uring) start exactly there.
# bwrap's --disable-userns needs a user namespace of its own, which the root mode does not create, so a small
# classic-BPF filter refuses those calls in both modes. Numbers from asm/unistd_64.h and asm-generic/unistd.h.

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_BLOCKED_SYSCALLS = {
    #                       x86_64 aarch64
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "keyctl": (250, 219),  # the kernel keyring is not namespaced: one uid's keys are shared by every job
    "add_key": (248, 217),
    "request_key": (249, 218),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "acct": (163, 89),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "syslog": (103, 116),
    "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265),
}
_CLONE, _CLONE3 = (56, 220), (435, 435)
_CLONE_NEWUSER = 0x10000000
_X32_SYSCALL_BIT = 0x40000000


def seccomp_filter(machine: str | None = None) -> bytes:
    """The filter bwrap loads before exec: EPERM for the calls above and for clone(CLONE_NEWUSER), ENOSYS for
    clone3 (its flags sit in memory a filter cannot read; glibc then falls back to clone), kill on a foreign ABI."""
    machine = machine or os.uname().machine
    if machine not in _AUDIT_ARCH:
        raise SandboxUnavailable(f"no seccomp syscall table for {machine}: add one to runners/sandbox.py")
    column = 0 if machine == "x86_64" else 1
    # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_JMP|BPF_JSET|BPF_K, BPF_JMP|BPF_JGE|BPF_K, BPF_RET|BPF_K
    ld, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | 1, 0x00050000 | 38
    program = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, _AUDIT_ARCH[machine]),
        (ret, 0, 0, kill),  # an i386 or x32 call would bypass the numbers below
        (ld, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        program += [(jge, 0, 1, _X32_SYSCALL_BIT), (ret, 0, 0, kill)]
    for numbers in _BLOCKED_SYSCALLS.values():
        program += [(jeq, 0, 1, numbers[column]), (ret, 0, 0, eperm)]
    program += [
        (jeq, 0, 1, _CLONE3[column]),
        (ret, 0, 0, enosys),
        (jeq, 0, 3, _CLONE[column]),
        (ld, 0, 0, 16),  # low half of args[0], the clone flags (little-endian)
        (jset, 0, 1, _CLONE_NEWUSER),
        (ret, 0, 0, eperm),
        (ret, 0, 0, allow),
    ]
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)


# -- cgroups: memory and pids limits, OOM and fork-failure counters, killing every task ------------------------------


@dataclass(frozen=True)
class _CgroupParent:
    """Where job cgroups for one controller are created: a v2 directory or a v1 hierarchy's directory."""

    controller: str  # "memory" | "pids"
    version: int
    path: Path


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fs type, super options) for every cgroup mount of this process."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        fstype, options = fields[separator + 1], set(fields[separator + 3].split(","))
        if fstype in ("cgroup", "cgroup2"):
            mounts.append((fields[3], fields[4].replace("\\040", " "), fstype, options))
    return mounts


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and under "" its v2 path."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def _under_mount(mount_root: str, mount_point: str, path: str) -> Path | None:
    relative = os.path.relpath(path, mount_root)
    return None if relative.startswith("..") else Path(mount_point, relative).resolve()


def _writable_dir(path: Path) -> bool:
    """Whether job cgroups can be made under `path` (tried for real: access(2) knows nothing of delegation)."""
    probe = path / f"{CGROUP_PREFIX}probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


V2_JOBS_DIR = "drbot-jobs"  # made at the top of the cgroup v2 tree by a root runner with no better place


def _v2_controllers(base: Path) -> set[str]:
    """The controllers (of memory, pids) that job cgroups made under `base` would have, enabling them if needed."""
    try:
        available = set((base / "cgroup.controllers").read_text().split()) & {"memory", "pids"}
        enabled = set((base / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()
    if available - enabled:
        # A cgroup with member processes cannot enable controllers for children (the "no internal processes"
        # rule), so this works at the root, or in a delegated cgroup the runner does not itself sit in.
        try:
            (base / "cgroup.subtree_control").write_text(" ".join(f"+{name}" for name in sorted(available - enabled)))
            enabled |= available
        except OSError:
            pass
    usable = available & enabled
    return usable if usable and _writable_dir(base) else set()


def find_cgroup_parents(cgroup_parent: str | None = None) -> dict[str, _CgroupParent]:
    """Find where this process may create job cgroups for `memory` and `pids`.

    cgroup v2 first: the given delegated directory; else this process's own cgroup, where it can enable the
    controllers; else, for root, `drbot-jobs` at the top of the tree. Then v1, per controller still missing: a child
    of this process's cgroup in that hierarchy.
    """
    try:
        mounts, own = _mounts(), _own_cgroups()
    except OSError:
        return {}
    found: dict[str, _CgroupParent] = {}
    for root, point, fstype, _ in mounts:
        if fstype != "cgroup2":
            continue
        candidates = [Path(cgroup_parent)] if cgroup_parent else [_under_mount(root, point, own.get("", "/"))]
        if not cgroup_parent and os.geteuid() == 0 and _v2_controllers(Path(point)):
            # The runner's own cgroup holds the runner, so it cannot enable controllers; a sibling tree at the
            # top can. (In a container with its own cgroup namespace the "top" is the container's cgroup.)
            jobs = Path(point, V2_JOBS_DIR)
            try:
                jobs.mkdir(exist_ok=True)
                candidates.append(jobs)
            except OSError:
                pass
        for base in candidates:
            if base is None:
                continue
            usable = _v2_controllers(base)
            for name in sorted(usable):
                found[name] = _CgroupParent(name, 2, base)
            if usable:
                break
        break
    for root, point, fstype, options in mounts:
        if fstype != "cgroup":
            continue
        for name in ("memory", "pids"):
            if name in found or name not in options or name not in own:
                continue
            base = _under_mount(root, point, own[name])
            if base is not None and _writable_dir(base):
                found[name] = _CgroupParent(name, 1, base)
    return found


def remove_stale_cgroups(parents: Iterable[_CgroupParent]) -> list[Path]:
    """Remove job cgroups left by a runner that died without cleaning up (SIGKILL, OOM): --die-with-parent took
    its jobs down, but not their directories. A directory is stale when the pid in its name is gone."""
    removed = []
    for parent in parents:
        for path in parent.path.glob(f"{CGROUP_PREFIX}*"):
            owner = path.name[len(CGROUP_PREFIX) :].split("-")[0]
            if owner.isdigit() and not _alive(int(owner)):
                _JobCgroup.adopt({parent.controller: path}, {parent.controller: parent.version}).remove()
                removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def delegate_cgroup(name: str = "runner") -> str:
    """On cgroup v2, move this process into a leaf `<own cgroup>/<name>` and enable memory and pids for siblings,
    so job cgroups can be made next to it; returns the directory to pass as `cgroup_parent`. Call once at start-up,
    before any other thread or child exists (a systemd unit with Delegate=yes, or a container with its own cgroup
    namespace). Fails, naming the reason, if other processes share this process's cgroup."""
    for root, point, fstype, _ in _mounts():
        if fstype == "cgroup2":
            base = _under_mount(root, point, _own_cgroups().get("", "/"))
            break
    else:
        raise SandboxUnavailable("no cgroup v2 mount: delegate_cgroup() is for cgroup v2 hosts")
    if base is None:
        raise SandboxUnavailable("this process's cgroup is outside the visible cgroup v2 mount")
    others = [pid for pid in (base / "cgroup.procs").read_text().split() if int(pid) != os.getpid()]
    if others:
        raise SandboxUnavailable(
            f"processes {', '.join(others[:5])} share {base}: start the runner alone in its cgroup "
            "(systemd: Delegate=yes; docker: --cgroupns=private with the runner as the only process)"
        )
    leaf = base / name
    leaf.mkdir(exist_ok=True)
    (leaf / "cgroup.procs").write_text(str(os.getpid()))
    wanted = set((base / "cgroup.controllers").read_text().split()) & {"memory", "pids"}
    (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
    return str(base)


class _JobCgroup:
    """One job's cgroup directories (one on v2, one per hierarchy on v1), made before the job starts and removed
    after its last task is gone."""

    def __init__(self, parents: Iterable[_CgroupParent], limits: Limits) -> None:
        self.name = f"{CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dirs: dict[str, Path] = {}
        self.versions: dict[str, int] = {}
        made: list[Path] = []
        try:
            for parent in parents:
                path = parent.path / self.name
                if path not in made:
                    path.mkdir()
                    made.append(path)
                self.dirs[parent.controller], self.versions[parent.controller] = path, parent.version
            self._set_limits(limits)
        except OSError as error:
            for path in made:
                _rmdir_quietly(path)
            raise SandboxUnavailable(f"could not set up the job's cgroup: {error}") from error

    @classmethod
    def adopt(cls, dirs: dict[str, Path], versions: dict[str, int]) -> _JobCgroup:
        """An existing job cgroup, to kill and remove."""
        cgroup = cls.__new__(cls)
        cgroup.name, cgroup.dirs, cgroup.versions = next(iter(dirs.values())).name, dirs, versions
        return cgroup

    def _set_limits(self, limits: Limits) -> None:
        if "memory" in self.dirs:
            path = self.dirs["memory"]
            if self.versions["memory"] == 2:
                (path / "memory.max").write_text(str(limits.memory_bytes))
                _write_if_present(path / "memory.swap.max", "0")  # swap would turn the limit into a slowdown
                _write_if_present(path / "memory.oom.group", "1")  # one OOM ends the whole job, not one thread
            else:
                (path / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
                # memory+swap equal to memory means no swap; without swap accounting, ask the kernel not to swap
                if not _write_if_present(path / "memory.memsw.limit_in_bytes", str(limits.memory_bytes)):
                    _write_if_present(path / "memory.swappiness", "0")
        if "pids" in self.dirs:
            (self.dirs["pids"] / "pids.max").write_text(str(limits.processes))

    @property
    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in dict.fromkeys(self.dirs.values())]

    def _read(self, controller: str, filename: str) -> str | None:
        try:
            return (self.dirs[controller] / filename).read_text()
        except (KeyError, OSError):
            return None

    def oom_killed(self) -> bool:
        v2 = self.versions.get("memory") == 2
        text = self._read("memory", "memory.events" if v2 else "memory.oom_control") or ""
        return _counter(text, "oom_kill") > 0

    def fork_refused(self) -> bool:
        return _counter(self._read("pids", "pids.events") or "", "max") > 0

    def peak_memory(self) -> int | None:
        v2 = self.versions.get("memory") == 2
        text = self._read("memory", "memory.peak" if v2 else "memory.max_usage_in_bytes")
        return int(text) if text and text.strip().isdigit() else None

    def tasks(self) -> list[int]:
        pids: set[int] = set()
        for procs in self.procs_files:
            try:
                pids.update(int(pid) for pid in Path(procs).read_text().split())
            except OSError:
                pass
        return sorted(pids)

    def kill(self) -> None:
        """SIGKILL every task; v2's cgroup.kill does it atomically, v1 needs a loop (a fork can race a kill)."""
        for path in dict.fromkeys(self.dirs.values()):
            _write_if_present(path / "cgroup.kill", "1")
        deadline = time.monotonic() + 5
        while (pids := self.tasks()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill()
        for path in dict.fromkeys(self.dirs.values()):
            _rmdir_quietly(path)


def _counter(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _write_if_present(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _rmdir_quietly(path: Path) -> None:
    # a cgroup directory is busy for a moment after its last task was reaped
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
    log.warning("could not remove cgroup %s", path)


# -- what the job may see ------------------------------------------------------------------------------------------


def python_dirs() -> list[str]:
    """Directories the running interpreter needs: its installation, the virtualenv, their site-packages. Not
    sys.path as a whole: it may name the project checkout (editable installs), which holds more than the job needs."""
    candidates = [sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix]
    try:
        candidates += site.getsitepackages()
    except AttributeError:  # an old virtualenv's site module
        pass
    dirs: list[str] = []
    for path in candidates:
        for variant in (os.path.abspath(path), os.path.realpath(path)):
            if os.path.isdir(variant) and variant not in dirs:
                dirs.append(variant)
    return dirs


def nvidia_devices() -> list[str]:
    return sorted(glob.glob("/dev/nvidia*"))


def _etc_files(uid: int, gid: int) -> dict[str, str]:
    """A synthesized /etc: enough for getpwuid(), localhost and glibc's lookups; nothing of the host's (which may
    hold credentials, resolvers or mount tables)."""
    return {
        "passwd": f"root:x:0:0:root:/:/usr/sbin/nologin\nsandbox:x:{uid}:{gid}:drbot job:{SCRATCH}:/usr/sbin/nologin\n",
        "group": f"root:x:0:\nsandbox:x:{gid}:\n",
        "hosts": "127.0.0.1 localhost\n::1 localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        "hostname": "drbot-sandbox\n",
    }


_ETC_FROM_HOST = ("ld.so.cache", "alternatives", "localtime", "os-release")
_MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_RESERVED = ("/proc", "/dev", "/etc", SCRATCH)


def _within(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def sandbox_env(env: dict[str, str] | None) -> dict[str, str]:
    """The job's whole environment: scratch locations, then the caller's `env` (which wins). Never os.environ."""
    base = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": SCRATCH,
        "TMPDIR": SCRATCH,
        "XDG_CACHE_HOME": f"{SCRATCH}/.cache",
        "HF_HOME": f"{SCRATCH}/.cache/huggingface",
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
    }
    return {**base, **(env or {})}


# -- running a job: the parent's side, shared by Sandbox and Unsandboxed -------------------------------------------

_TEXT_LIMITS = (
    # Python ignores SIGXFSZ and turns these into exceptions; no kernel counter exists for them, so the printed
    # error is the only evidence. The job could forge it, but only to mislabel its own failure.
    (b"[Errno 27] File too large", Exceeded.FILE_SIZE),
    (b"[Errno 28] No space left on device", Exceeded.SCRATCH),
    (b"MemoryError", Exceeded.MEMORY),
    (b"[Errno 12] Cannot allocate memory", Exceeded.MEMORY),
)


def _limit_from_output(output: bytes) -> Exceeded | None:
    tail = output[-8 * KiB :]
    hits = [(tail.rfind(marker), limit) for marker, limit in _TEXT_LIMITS if marker in tail]
    return max(hits)[1] if hits else None


@dataclass
class _Run:
    returncode: int
    output: bytes
    killed_for: Exceeded | None
    duration_s: float


async def _supervise(
    command: Sequence[str],
    *,
    env: dict[str, str],
    cwd: str | None,
    pass_fds: Sequence[int],
    output_bytes: int,
    wall_seconds: float,
    on_line: Callable[[str], None] | None,
    kill: Callable[[asyncio.subprocess.Process], None],
) -> _Run:
    """Start `command`, read its output as it comes (never holding more than `output_bytes`), end it on the wall
    clock or the output cap, then kill whatever it left behind."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
        pass_fds=tuple(pass_fds), start_new_session=True,
    )  # fmt: skip
    output = bytearray()
    partial = bytearray()
    killed_for: Exceeded | None = None

    def deliver(data: bytes) -> None:
        if on_line is None:
            return
        partial.extend(data)
        *lines, rest = partial.split(b"\n")
        partial[:] = rest
        for line in lines:
            on_line(line.decode("utf-8", "replace"))

    async def pump() -> None:
        nonlocal killed_for
        assert proc.stdout is not None
        try:
            while chunk := await proc.stdout.read(64 * KiB):
                room = output_bytes - len(output)
                if len(chunk) > room:
                    output.extend(chunk[:room])
                    deliver(chunk[:room])
                    killed_for = killed_for or Exceeded.OUTPUT
                    kill(proc)
                    return  # stop reading: the pipe's buffer, not this process, holds the rest until the job dies
                output.extend(chunk)
                deliver(chunk)
        except BaseException:
            kill(proc)  # on_line raised: nobody reads the job's output any more, so end it now
            raise

    pumping = asyncio.ensure_future(pump())
    try:
        await asyncio.wait_for(proc.wait(), timeout=wall_seconds)
    except asyncio.TimeoutError:
        killed_for = killed_for or Exceeded.WALL_TIME
        kill(proc)
        await proc.wait()
    except BaseException:
        kill(proc)  # cancelled: the job must not outlive its caller
        await asyncio.shield(proc.wait())
        pumping.cancel()
        raise
    kill(proc)  # a grandchild may still hold the pipe open
    try:
        await asyncio.wait_for(pumping, timeout=5)
    except asyncio.TimeoutError:
        pumping.cancel()
    if partial and on_line is not None:
        on_line(partial.decode("utf-8", "replace"))
    returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    if returncode < 0:  # asyncio reports a signal as -N; bwrap reports its child's as 128+N
        returncode = 128 - returncode
    return _Run(returncode, bytes(output), killed_for, round(time.monotonic() - started, 3))


def _rlimit_args(prlimit: str, limits: Limits, *, address_space: bool, nproc: bool) -> list[str]:
    """prlimit(1) in front of the job: per-process limits the kernel enforces with no cgroup at all."""
    args = [
        prlimit,
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",  # SIGXCPU first, SIGKILL a second later
        f"--fsize={limits.file_size_bytes}",
        "--core=0",  # a crashing job must not fill the scratch with a core file
    ]
    if address_space:
        args.append(f"--as={limits.memory_bytes}")
    if nproc:
        args.append(f"--nproc={limits.processes}")
    return [*args, "--"]


# -- the sandbox ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What check() found this host can do; fixed for the Sandbox's lifetime."""

    privileged: bool  # root: bwrap as root, then setpriv to the sandbox uid; else a user namespace
    gpu: bool
    cgroups: tuple[_CgroupParent, ...]
    memory: str  # "cgroup v1", "cgroup v2", "RLIMIT_AS" or "none"
    processes: str  # "cgroup v1", "cgroup v2" or "RLIMIT_NPROC"
    bwrap_version: str
    python_dirs: tuple[str, ...] = field(default=())


class Sandbox:
    """Runs jobs in bubblewrap. Root runners: bwrap sets up namespaces and mounts as root, then setpriv drops to
    `uid`/`gid` with no capabilities and no_new_privs. Unprivileged runners: bwrap makes a user namespace (the job
    runs as the runner's uid on the host, seen as `uid` inside) and forbids nested ones.

    Args:
        gpu: pass the NVIDIA devices and /sys through; None means "if /dev/nvidia* exist".
        cgroup_parent: a delegated cgroup v2 directory for job cgroups (see delegate_cgroup()); by default
            find_cgroup_parents() picks one (v2: this process's cgroup, or `drbot-jobs` for root; else v1).
        allow_unbounded_memory: on a GPU host without a writable memory cgroup, run with no memory limit instead
            of refusing (RLIMIT_AS cannot work there: CUDA reserves far more address space than it uses).
        extra_dirs: host directories to show read-only at the same path (e.g. a CUDA install outside /usr).
    """

    sandboxed = True

    def __init__(
        self,
        limits: Limits = Limits(),
        *,
        uid: int = NOBODY,
        gid: int = NOBODY,
        gpu: bool | None = None,
        cgroup_parent: str | None = None,
        allow_unbounded_memory: bool = False,
        extra_dirs: Sequence[str] = (),
        bwrap: str = BWRAP,
        setpriv: str = SETPRIV,
        prlimit: str = PRLIMIT,
    ) -> None:
        self.limits, self.uid, self.gid, self.gpu = limits, uid, gid, gpu
        self.cgroup_parent, self.allow_unbounded_memory = cgroup_parent, allow_unbounded_memory
        self.extra_dirs = tuple(extra_dirs)
        self.bwrap, self.setpriv, self.prlimit = bwrap, setpriv, prlimit
        self._plan: _Plan | None = None

    # -- checking the host

    def check(self) -> None:
        """Raise SandboxUnavailable, naming the fix, unless this host can run jobs with the full isolation."""
        if self._plan is not None:
            return
        if not _executable(self.bwrap):
            raise SandboxUnavailable(
                f"bubblewrap not found at {self.bwrap}: apt-get install bubblewrap (dnf install bubblewrap)"
            )
        privileged = os.geteuid() == 0
        for tool in (self.prlimit, self.setpriv) if privileged else (self.prlimit,):
            if not _executable(tool):
                raise SandboxUnavailable(f"{tool} not found: apt-get install util-linux")
        devices = nvidia_devices()
        if self.gpu and not devices:
            raise SandboxUnavailable("gpu=True but no /dev/nvidia* device exists: is the NVIDIA driver loaded?")
        gpu = bool(devices) if self.gpu is None else self.gpu
        parents = find_cgroup_parents(self.cgroup_parent)
        for path in remove_stale_cgroups(parents.values()):
            log.info("removed the stale job cgroup %s", path)
        if "memory" in parents:
            memory = f"cgroup v{parents['memory'].version}"
        elif not gpu:
            memory = "RLIMIT_AS"
        elif self.allow_unbounded_memory:
            memory = "none"
            log.warning("sandbox: no writable memory cgroup on a GPU host; jobs run WITHOUT a memory limit")
        else:
            raise SandboxUnavailable(
                "no writable cgroup for the memory limit, and RLIMIT_AS cannot bound a GPU job (CUDA reserves "
                "terabytes of address space): run the runner as root with /sys/fs/cgroup writable, or on cgroup v2 "
                "in a delegated cgroup (systemd Delegate=yes; then delegate_cgroup() and cgroup_parent=), or pass "
                "allow_unbounded_memory=True"
            )
        processes = f"cgroup v{parents['pids'].version}" if "pids" in parents else "RLIMIT_NPROC"
        version = subprocess.run([self.bwrap, "--version"], capture_output=True, text=True).stdout.strip()
        plan = _Plan(
            privileged, gpu, tuple(parents.values()), memory, processes, version, tuple(python_dirs())
        )  # fmt: skip
        self._probe(plan)
        self._plan = plan

    def _probe(self, plan: _Plan) -> None:
        """Start one real sandbox (same namespaces, mounts, filter, cgroups) running `true`: the kernel may refuse
        any part of it, and a refusal must surface here rather than on the first job."""
        cgroup = _JobCgroup(plan.cgroups, self.limits) if plan.cgroups else None
        try:
            prepared = self._prepare(plan, ["/usr/bin/true"], (), sandbox_env(None), SCRATCH, cgroup)
            try:
                probe = subprocess.run(
                    prepared.command, capture_output=True, env=prepared.env, pass_fds=prepared.fds, timeout=30
                )  # fmt: skip
            finally:
                prepared.close()
        finally:
            if cgroup is not None:
                cgroup.remove()
        if probe.returncode != 0:
            reason = probe.stderr.decode("utf-8", "replace").strip() or f"exit status {probe.returncode}"
            fix = (
                "is this a container without CAP_SYS_ADMIN or with a seccomp profile that forbids namespaces?"
                if plan.privileged
                else "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
                "user.max_user_namespaces > 0; on Ubuntu 24.04 an AppArmor profile for bwrap) or run as root"
            )
            raise SandboxUnavailable(f"bubblewrap cannot create the sandbox here ({reason}): {fix}")

    def describe(self) -> str:
        """One line for logs and job reports: how jobs are isolated on this host."""
        self.check()
        plan = self._plan
        assert plan is not None
        who = f"uid {self.uid} via setpriv" if plan.privileged else f"user namespace (uid {self.uid} inside)"
        return (
            f"{plan.bwrap_version}: {who}; pid/net/ipc/uts/mount namespaces; seccomp; memory: {plan.memory}; "
            f"processes: {plan.processes}; gpu: {'passed through' if plan.gpu else 'none'}"
        )

    # -- building the command

    def _prepare(
        self, plan: _Plan, argv: Sequence[str], ro_binds: Sequence[tuple[str, str]], env: dict[str, str], cwd: str,
        cgroup: _JobCgroup | None = None,
    ) -> _Prepared:  # fmt: skip
        fds: list[int] = []

        def data_fd(data: bytes) -> str:
            fd = os.memfd_create("drbot-sandbox")
            os.write(fd, data)
            os.lseek(fd, 0, os.SEEK_SET)
            fds.append(fd)
            return str(fd)

        try:
            args = [self.bwrap, *self._namespace_args(plan)]
            args += ["--seccomp", data_fd(seccomp_filter())]
            args += self._filesystem_args(plan, ro_binds, env, data_fd)
            args += ["--chdir", cwd, "--"]
            if plan.privileged:
                args += [self.setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                         "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]  # fmt: skip
            args += _rlimit_args(
                self.prlimit, self.limits, address_space=plan.memory == "RLIMIT_AS",
                nproc=plan.processes == "RLIMIT_NPROC",
            )  # fmt: skip
            args += list(argv)
            if cgroup is not None:
                # The shell joins the job's cgroups, then becomes bwrap: every task the job ever makes is inside
                # from its first instruction (preexec_fn would do it too, but is unsafe in a threaded parent).
                files = cgroup.procs_files
                script = " && ".join(f'echo $$ > "${i + 1}"' for i in range(len(files)))
                trampoline = f'{script} && shift {len(files)} && exec "$@"'
                args = ["/bin/sh", "-c", trampoline, "drbot-sandbox", *files, *args]
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return _Prepared(args, env, fds)

    def _namespace_args(self, plan: _Plan) -> list[str]:
        args = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                "--hostname", "drbot-sandbox", "--die-with-parent", "--new-session"]  # fmt: skip
        if not plan.privileged:
            args += ["--unshare-user", "--uid", str(self.uid), "--gid", str(self.gid), "--disable-userns"]
        return args

    def _filesystem_args(
        self, plan: _Plan, ro_binds: Sequence[tuple[str, str]], env: dict[str, str], data_fd: Callable[[bytes], str]
    ) -> list[str]:
        args = ["--ro-bind", "/usr", "/usr"]
        for name in _MERGED_USR:  # /bin -> usr/bin on merged-/usr systems, real directories elsewhere
            path = f"/{name}"
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--perms", "1777", "--size", str(min(SHM_BYTES, self.limits.scratch_bytes)), "--tmpfs", "/dev/shm"]
        args += ["--perms", "1777", "--size", str(self.limits.scratch_bytes), "--tmpfs", SCRATCH]
        args += ["--perms", "0755", "--dir", "/etc"]
        for name, text in _etc_files(self.uid, self.gid).items():
            args += ["--perms", "0644", "--ro-bind-data", data_fd(text.encode()), f"/etc/{name}"]
        for name in _ETC_FROM_HOST:
            path = f"/etc/{name}"
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.exists(path):
                args += ["--ro-bind", path, path]
        implicit = [*plan.python_dirs, *self.extra_dirs]
        binds: list[tuple[str, str, str, bool]] = []  # (bwrap option, host path, sandbox path, asked for by name)
        if plan.gpu:
            binds += self._gpu_binds()
            implicit += [path for path in env.get("LD_LIBRARY_PATH", "").split(":") if os.path.isabs(path)]
        binds += [("--ro-bind", path, path, False) for path in dict.fromkeys(implicit) if os.path.isdir(path)]
        for host, inside in ro_binds:
            if not os.path.isabs(inside) or os.path.normpath(inside) != inside or _within(inside, _RESERVED):
                raise ValueError(f"sandbox path {inside!r} must be absolute, normalized and outside {_RESERVED}")
            if not os.path.exists(host):
                raise ValueError(f"bind source {host!r} does not exist")
            binds.append(("--ro-bind", host, inside, True))
        mounted = ["/usr", "/proc", "/dev", "/etc", SCRATCH]
        made: set[str] = set()
        # Parents first, and every missing ancestor made 0755: bwrap would make them 0700 and root-owned, which
        # the sandbox uid could not walk through (the interpreter here lives under /root/.pyenv).
        for option, host, inside, named in sorted(binds, key=lambda bind: bind[2].count("/")):
            if not named and _within(inside, mounted):
                continue  # already visible: a site-packages inside the bound prefix, a library dir under /usr
            for ancestor in _ancestors(inside):
                if ancestor not in made and not _within(ancestor, mounted):
                    args += ["--perms", "0755", "--dir", ancestor]
                    made.add(ancestor)
            args += [option, host, inside]
            mounted.append(inside)
        return args

    def _gpu_binds(self) -> list[tuple[str, str, str, bool]]:
        """NVIDIA passthrough: the device nodes (nvidia0.., nvidiactl, nvidia-uvm, the nvidia-caps directory), /sys
        read-only (CUDA reads PCI and NUMA topology there). Driver libraries come with /usr and ld.so.cache."""
        devices = [("--dev-bind", device, device, True) for device in nvidia_devices()]
        return [*devices, ("--ro-bind", "/sys", "/sys", True)]

    # -- running

    async def run(
        self,
        argv: Sequence[str],
        *,
        ro_binds: Sequence[tuple[str, str]] = (),
        env: dict[str, str] | None = None,
        cwd: str = SCRATCH,
        wall_seconds: float,
        on_line: Callable[[str], None] | None = None,
    ) -> Outcome:
        """Run `argv` in a fresh sandbox and return how it ended.

        Args:
            ro_binds: (host path, sandbox path) pairs shown read-only: the PR's src/, drbot's runners package.
            env: the job's environment on top of sandbox_env()'s scratch locations; nothing of os.environ is
                passed except CUDA_VISIBLE_DEVICES and LD_LIBRARY_PATH on a GPU host.
            cwd: a sandbox path; the scratch by default.
            on_line: called with each output line (decoded, newline stripped) as it arrives, within the cap.
        """
        if self._plan is None:
            await asyncio.to_thread(self.check)
        plan = self._plan
        assert plan is not None
        env = sandbox_env(env)
        if plan.gpu:
            for name in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH"):
                if name in os.environ and name not in env:
                    env[name] = os.environ[name]
        cgroup = _JobCgroup(plan.cgroups, self.limits) if plan.cgroups else None
        prepared: _Prepared | None = None
        try:
            prepared = self._prepare(plan, argv, ro_binds, env, cwd, cgroup)

            def kill(proc: asyncio.subprocess.Process) -> None:
                _kill_group(proc)  # bwrap outside; --die-with-parent and the PID namespace take the rest down
                if cgroup is not None:
                    cgroup.kill()

            done = await _supervise(
                prepared.command, env=prepared.env, cwd=None, pass_fds=prepared.fds,
                output_bytes=self.limits.output_bytes, wall_seconds=wall_seconds, on_line=on_line, kill=kill,
            )  # fmt: skip
            limit = done.killed_for
            if limit is None and done.returncode != 0:
                limit = self._limit_from_kernel(cgroup, done.returncode) or _limit_from_output(done.output)
            peak = cgroup.peak_memory() if cgroup is not None else None
            return Outcome(done.returncode, done.output, limit, done.duration_s, peak, sandboxed=True)
        finally:
            if prepared is not None:
                prepared.close()
            if cgroup is not None:
                cgroup.remove()

    def _limit_from_kernel(self, cgroup: _JobCgroup | None, returncode: int) -> Exceeded | None:
        if cgroup is not None and cgroup.oom_killed():
            return Exceeded.MEMORY
        if cgroup is not None and cgroup.fork_refused():
            return Exceeded.PROCESSES
        return _limit_from_signal(returncode)


@dataclass
class _Prepared:
    command: list[str]
    env: dict[str, str]
    fds: list[int]

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def _limit_from_signal(returncode: int) -> Exceeded | None:
    if returncode == 128 + signal.SIGXCPU:
        return Exceeded.CPU_TIME
    if returncode == 128 + signal.SIGXFSZ:
        return Exceeded.FILE_SIZE
    return None


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- the unsandboxed twin ------------------------------------------------------------------------------------------


class Unsandboxed:
    """FOR LOCAL DEVELOPMENT ONLY, and NOT ISOLATION: the job runs as this user, sees every file, the network and
    this machine's processes. It keeps the wall clock, the output cap, rlimits (CPU, file size, address space) and
    kills the job's process group at the end; a job that calls setsid() escapes even that. Same interface as
    Sandbox; binds must map each path to itself, since the job sees the host's paths."""

    sandboxed = False

    def __init__(self, limits: Limits = Limits(), *, gpu: bool | None = None, prlimit: str = PRLIMIT) -> None:
        self.limits, self.prlimit = limits, prlimit
        self.gpu = bool(nvidia_devices()) if gpu is None else gpu
        log.warning("UNSANDBOXED: %s", self.describe())

    def check(self) -> None:
        if not _executable(self.prlimit):
            raise SandboxUnavailable(f"{self.prlimit} not found: apt-get install util-linux")

    def describe(self) -> str:
        return (
            "jobs run UNSANDBOXED as this user, with this machine's files, network and processes in reach; "
            "for local development only, never on a runner that takes jobs from pull requests"
        )

    async def run(
        self,
        argv: Sequence[str],
        *,
        ro_binds: Sequence[tuple[str, str]] = (),
        env: dict[str, str] | None = None,
        cwd: str = SCRATCH,
        wall_seconds: float,
        on_line: Callable[[str], None] | None = None,
    ) -> Outcome:
        self.check()
        for host, inside in ro_binds:
            if os.path.realpath(host) != os.path.realpath(inside):
                raise ValueError(f"Unsandboxed cannot move {host} to {inside}: bind each path to itself")
        scratch = tempfile.mkdtemp(prefix="drbot-unsandboxed-")
        try:
            job_env = {**sandbox_env(None), "HOME": scratch, "TMPDIR": scratch,
                       "XDG_CACHE_HOME": f"{scratch}/.cache", "HF_HOME": f"{scratch}/.cache/huggingface",
                       **(env or {})}  # fmt: skip
            # address-space limits break CUDA, which reserves terabytes it never touches
            command = [*_rlimit_args(self.prlimit, self.limits, address_space=not self.gpu, nproc=False), *argv]
            done = await _supervise(
                command, env=job_env, cwd=scratch if cwd == SCRATCH else cwd, pass_fds=(),
                output_bytes=self.limits.output_bytes, wall_seconds=wall_seconds, on_line=on_line, kill=_kill_group,
            )  # fmt: skip
            limit = done.killed_for
            if limit is None and done.returncode != 0:
                limit = _limit_from_signal(done.returncode) or _limit_from_output(done.output)
            return Outcome(done.returncode, done.output, limit, done.duration_s, None, sandboxed=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def make_sandbox(limits: Limits = Limits(), *, unsandboxed: bool = False, **options) -> Sandbox | Unsandboxed:
    """The runner's choice: a checked Sandbox, or, only when asked by name, Unsandboxed. A host that cannot
    sandbox raises SandboxUnavailable here; it never gets Unsandboxed instead."""
    if unsandboxed:
        return Unsandboxed(limits, **options)
    sandbox = Sandbox(limits, **options)
    sandbox.check()
    return sandbox


__all__ = [
    "Exceeded",
    "Limits",
    "Outcome",
    "Sandbox",
    "SandboxUnavailable",
    "Unsandboxed",
    "delegate_cgroup",
    "find_cgroup_parents",
    "make_sandbox",
    "remove_stale_cgroups",
    "sandbox_env",
    "seccomp_filter",
]
