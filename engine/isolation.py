"""Run the parsing and analysis of untrusted files in worker processes, each task under time, memory and size limits.

A pull request chooses the bytes drbot parses, and libcst's native parser can be made to crash (a few thousand
nested brackets overflow its stack), to run for minutes (a long `1+1+…` chain) or to take gigabytes. So nothing that
parses PR content runs in the serving process: it runs here, in a pebble `ProcessPool` whose workers start from a
fork server (the parent is an asyncio process with threads, which must not `fork`), with an address-space limit
set in the worker's initializer and a per-task timeout. A task that dies, overruns or exhausts its memory becomes a
`Failure` with a reason for the review to show ("not analysed: …"); pebble replaces the worker and the other tasks
go on. Nothing is retried in a loop: a task runs again at most once, and only when the whole pool broke under it.

As with any start method but `fork`, a worker imports the parent's `__main__` module unless it was run with `-m`:
a script that uses this module must keep its work under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from pebble import ProcessExpired, ProcessPool

from common.archive import human_size  # noqa: F401 - also this module's API (size reasons)


log = logging.getLogger("drbot.isolation")

#: what a worker's stderr holds when an allocation failed: Rust's abort message (libcst), CPython's, C++'s
_OUT_OF_MEMORY_MARKS = (b"memory allocation of", b"MemoryError", b"Cannot allocate memory", b"std::bad_alloc")
#: a worker's stderr log is cut at this size (RLIMIT_FSIZE); the marks above sit in its first lines
_LOG_LIMIT = 1 << 20


def size_reason(size: int, limit: int) -> str:
    return f"over the {human_size(limit)} size limit ({human_size(size)})"


@dataclass(frozen=True)
class Limits:
    """What one file's analysis may take. A file over one of these is reported as not analysed."""

    #: wall seconds for one task (one file at one revision), from the moment a worker starts it
    timeout_s: float = 30.0
    #: address space of a worker process (RLIMIT_AS): a parse that needs more fails in the worker, not here
    memory_bytes: int = 2 << 30
    #: files larger than this are not read, let alone parsed (checked on the blob's size, before reading it)
    max_file_bytes: int = 2 << 20
    #: a worker is replaced after this many tasks, so caches and fragmentation do not pile up in a long-lived pool
    max_tasks: int = 500
    #: wall seconds for all the tasks of one review; what has not finished by then is not analysed
    budget_s: float = 240.0

    def timeout_reason(self) -> str:
        return f"analysis took longer than {self.timeout_s:g} s"

    def memory_reason(self) -> str:
        return f"over the {human_size(self.memory_bytes)} memory limit"


@dataclass(frozen=True)
class Failure:
    """A task that did not produce a result, and why (one short clause: "the parser crashed (SIGSEGV)")."""

    reason: str


@dataclass
class Job:
    """One submitted task; `Pool.outcome` turns it into its value or a `Failure`."""

    function: Callable
    args: tuple
    future: Any = None
    generation: int = 0
    starts: int = 0


# -- the worker side ------------------------------------------------------------------------------------------


def _init_worker(memory_bytes: int, log_dir: str) -> None:
    """Limits and plumbing of one worker process (runs in it, before its first task)."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind
    # pebble's SIGTERM handler runs only between bytecodes, never inside a long native parse; the default action
    # ends the worker at once when a task times out (pebble then replaces it)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # stderr goes to a per-worker log the parent reads when the worker dies (to tell an allocation failure from a
    # crash); RLIMIT_FSIZE bounds it, and with SIGXFSZ ignored a write past the bound fails instead of killing
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (_LOG_LIMIT, _LOG_LIMIT))
    fd = os.open(os.path.join(log_dir, f"{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    warnings.simplefilter("ignore")  # SyntaxWarnings of a hostile file are noise, and would fill the log


def _call(function: Callable, args: tuple) -> Any:
    """Run one task in a worker, with the stderr log emptied first (it then tells about this task only)."""
    os.ftruncate(2, 0)
    os.lseek(2, 0, os.SEEK_SET)
    return function(*args)


# -- the parent side ------------------------------------------------------------------------------------------


def _context(preload: Sequence[str]):
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        # the fork server imports these once; each worker is a fork of it, so a new worker costs milliseconds
        context.set_forkserver_preload([__name__, *preload])
    return context


class Pool:
    """A pool of analysis workers. `submit` schedules a task, `outcome` waits for its value or its `Failure`.

    Thread-safe: the App shares one pool between reviews (`shared`), `drbot review` makes one per run.
    """

    def __init__(self, limits: Limits = Limits(), workers: int = 1, preload: Sequence[str] = ()) -> None:
        self.limits = limits
        self.workers = max(1, workers)
        self.preload = tuple(preload)
        self._log_dir = tempfile.mkdtemp(prefix="drbot-workers-")
        self._lock = threading.Lock()
        self._pool: ProcessPool | None = None
        self._generation = 0
        self._submitted = 0
        self.closed = False

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _running_pool(self) -> tuple[ProcessPool, int]:
        with self._lock:
            if self.closed:
                raise RuntimeError("the analysis pool is closed")
            if self._pool is None or not self._pool.active:
                if self._pool is not None:
                    self._discard(self._pool)
                self._pool = ProcessPool(
                    max_workers=self.workers,
                    max_tasks=self.limits.max_tasks,
                    initializer=_init_worker,
                    initargs=(self.limits.memory_bytes, self._log_dir),
                    context=_context(self.preload),
                )
                self._generation += 1
            return self._pool, self._generation

    def _broken(self, generation: int) -> None:
        """Drop the pool of `generation` (a newer one may already run); the next submit starts a fresh one."""
        with self._lock:
            if self._pool is not None and self._generation == generation:
                self._discard(self._pool)
                self._pool = None

    @staticmethod
    def _discard(pool: ProcessPool) -> None:
        pool.stop()
        try:
            pool.join(timeout=10)
        except Exception:  # noqa: BLE001 - a pool that will not join is abandoned; its workers are killed at exit
            log.warning("an analysis pool did not stop cleanly", exc_info=True)

    def warm(self) -> None:
        """Start the workers now (the App's first review then finds them ready)."""
        self.outcome(self.submit(os.getpid))

    def submit(self, function: Callable, *args: Any) -> Job:
        """Schedule `function(*args)` in a worker; `function` must be importable by name (a module-level function)."""
        job = Job(function, args)
        self._start(job)
        self._submitted += 1
        if self._submitted % 256 == 0:
            self._sweep_logs()
        return job

    def _start(self, job: Job) -> None:
        job.starts += 1
        for attempt in (1, 2):
            pool, job.generation = self._running_pool()
            try:
                job.future = pool.schedule(_call, args=(job.function, job.args), timeout=self.limits.timeout_s)
                return
            except RuntimeError:  # the pool broke between the check and the schedule
                self._broken(job.generation)
                if attempt == 2:
                    raise

    def outcome(self, job: Job, deadline: float | None = None) -> Any:
        """The task's value, or a `Failure` when its worker crashed, timed out, ran out of memory, raised, or the
        review's `deadline` (a `time.monotonic()` value) passed first. Never raises for what the task did."""
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return job.future.result(timeout=remaining)
            except FutureTimeout:
                if not job.future.done():  # the review's budget ran out while this task waited or ran
                    job.future.cancel()
                    return Failure(f"the review's analysis time budget ({self.limits.budget_s:g} s) ran out")
                return Failure(self.limits.timeout_reason())
            except CancelledError:
                return Failure(f"the review's analysis time budget ({self.limits.budget_s:g} s) ran out")
            except ProcessExpired as error:
                return Failure(self._death_reason(error.exitcode, error.pid))
            except BrokenProcessPool as error:
                # pebble gives up on the whole pool when a worker dies before it saw the task start (a race of its
                # manager threads) or cannot start at all; start a fresh pool and run the task once more
                self._broken(job.generation)
                if job.starts >= 2:
                    return Failure(f"the analysis workers failed ({error})")
                try:
                    self._start(job)
                except RuntimeError as again:
                    return Failure(f"the analysis workers failed ({again})")
            except MemoryError:
                return Failure(self.limits.memory_reason())
            except RecursionError:
                return Failure("nested too deeply to analyse")
            except Exception as error:  # noqa: BLE001 - a bug in one file's analysis must not stop the review
                log.warning("analysis task %s%r raised", job.function.__name__, job.args[:3], exc_info=True)
                return Failure(f"the analysis raised {type(error).__name__}: {error}"[:300])

    def map(self, function: Callable, items: Iterable[tuple], deadline: float | None = None) -> list:
        """`function(*item)` for each item, in order: values and `Failure`s."""
        jobs = [self.submit(function, *item) for item in items]
        return [self.outcome(job, deadline) for job in jobs]

    def _death_reason(self, exitcode: int | None, pid: int | None) -> str:
        tail = b""
        if pid is not None:
            path = os.path.join(self._log_dir, f"{pid}.log")
            try:
                with open(path, "rb") as handle:
                    tail = handle.read(64 * 1024)
                os.unlink(path)
            except OSError:
                pass
        if any(mark in tail for mark in _OUT_OF_MEMORY_MARKS):
            return self.limits.memory_reason()
        if exitcode is not None and exitcode < 0:
            try:
                name = signal.Signals(-exitcode).name
            except ValueError:
                name = f"signal {-exitcode}"
            if name == "SIGKILL":
                return "the analysis process was killed (SIGKILL)"
            return f"the parser crashed ({name})"
        return f"the analysis process exited with status {exitcode}"

    def _sweep_logs(self) -> None:
        """Remove the logs of workers that ended normally (recycled after `max_tasks`, or stopped on a timeout)."""
        try:
            names = os.listdir(self._log_dir)
        except OSError:
            return
        for name in names:
            pid = name.partition(".")[0]
            if not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                try:
                    os.unlink(os.path.join(self._log_dir, name))
                except OSError:
                    pass
            except PermissionError:
                pass

    def close(self) -> None:
        """Stop the workers (tasks still running are abandoned) and remove the logs."""
        with self._lock:
            self.closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            self._discard(pool)
        shutil.rmtree(self._log_dir, ignore_errors=True)


_SHARED: Pool | None = None
_SHARED_LOCK = threading.Lock()


def shared(limits: Limits, workers: int = 1, preload: Sequence[str] = ()) -> Pool:
    """The process-wide pool of `drbot serve`: started once and reused by every review (workers stay warm);
    replaced only when asked for other limits or another size."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is not None and (_SHARED.closed or (_SHARED.limits, _SHARED.workers) != (limits, max(1, workers))):
            _SHARED.close()
            _SHARED = None
        if _SHARED is None:
            _SHARED = Pool(limits, workers, preload)
        return _SHARED


@atexit.register
def close_shared() -> None:
    """Stop the shared pool (at exit, or in tests)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is not None:
            _SHARED.close()
            _SHARED = None
