"""Attacks on the contract-job sandbox (runners/sandbox.py), each run in a real bubblewrap sandbox on the real kernel.

Every attack that a plain subprocess would let through also runs once unsandboxed (the `control` cases, through
`Unsandboxed`): it must succeed there, so a sandboxed pass means the sandbox stopped it, not that the attack was
broken. Limits are small so the whole file stays fast.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runners import sandbox as sandbox_module
from runners.sandbox import (
    CGROUP_PREFIX,
    Exceeded,
    Limits,
    Sandbox,
    SandboxUnavailable,
    Unsandboxed,
    find_cgroup_parents,
    make_sandbox,
)


ROOT = Path(__file__).resolve().parents[2]
RUNNERS = ROOT / "runners"
SMALL = Limits(
    memory_bytes=192 * 2**20,
    cpu_seconds=30,
    processes=64,
    file_size_bytes=2**20,
    output_bytes=2**20,
    scratch_bytes=16 * 2**20,
)
SANDBOX_AND_CONTROL = ["sandbox", pytest.param("unsandboxed", id="control")]

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or shutil.which("bwrap") is None,
    reason="needs Linux and bubblewrap (apt-get install bubblewrap)",
)


# -- helpers -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attack_dir():
    """Where attacker scripts live: outside /tmp (the sandbox's scratch) and readable by the sandbox's uid."""
    folder = Path(tempfile.mkdtemp(prefix="drbot-attacks-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(SMALL)
    box.check()
    return box


@pytest.fixture
def canaries(monkeypatch):
    """Secrets a runner host holds, in this process's environment (and so in every child's exec-time environ)."""
    tag = uuid.uuid4().hex
    secrets = {
        "HF_TOKEN": f"hf_canary_{tag}",
        "REDIS_URL": f"redis://runner:pw_canary_{tag}@127.0.0.1:6379/0",
        "AWS_SECRET_ACCESS_KEY": f"aws_canary_{tag}",
        "GITHUB_TOKEN": f"ghs_canary_{tag}",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    return [f"canary_{tag}"]


@pytest.fixture(autouse=True)
def no_leftover_cgroups():
    """Every job's cgroup directories are gone once run() returns."""
    yield
    mine = f"{CGROUP_PREFIX}{os.getpid()}-*"
    leftovers = [str(path) for parent in find_cgroup_parents().values() for path in parent.path.glob(mine)]
    assert leftovers == []


def write_script(folder: Path, source: str) -> str:
    path = folder / f"attack_{uuid.uuid4().hex[:8]}.py"
    path.write_text(textwrap.dedent(source))
    path.chmod(0o644)
    return str(path)


def runner_for(kind: str, limits: Limits = SMALL):
    return Sandbox(limits) if kind == "sandbox" else Unsandboxed(limits)


async def attack(runner, folder: Path, source: str, *args: str, wall_seconds: float = 20, binds=(), **kwargs):
    """Run an attacker script with the runner's interpreter (the venv's python, as a real job does)."""
    script = write_script(folder, source)
    return await runner.run(
        [sys.executable, script, *args], ro_binds=[(str(folder), str(folder)), *binds], env={},
        wall_seconds=wall_seconds, **kwargs,
    )  # fmt: skip


def report(outcome) -> dict:
    """The attacker's findings: the JSON object on its last line of output."""
    assert outcome.returncode == 0, outcome.text[-3000:]
    return json.loads(outcome.output.splitlines()[-1])


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds `marker` (read from the host's /proc, outside any sandbox)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


# -- secrets ---------------------------------------------------------------------------------------------------------

READ_SECRETS = """
    import json, os, sys

    def grab(path):
        try:
            with open(path, "rb") as handle:
                return handle.read().replace(b"\\0", b"\\n").decode("utf-8", "replace")
        except OSError as error:
            return f"<{error.strerror}>"

    pids = sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    for pid in pids:                                       # everything this process can see
        for name in ("environ", "cmdline"):
            print(f"/proc/{pid}/{name}:", grab(f"/proc/{pid}/{name}"))
    ancestors, pid = [], os.getpid()
    while pid > 1:                                         # the runner that started us, and its parents
        status = grab(f"/proc/{pid}/status")
        pid = int(next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), 0))
        ancestors.append(pid)
        print(f"ancestor {pid}:", grab(f"/proc/{pid}/environ"))
    for host_pid in sys.argv[1:]:                          # the host's runner and test process, by number
        print(f"host {host_pid}:", grab(f"/proc/{host_pid}/environ"))
    print("own env:", dict(os.environ))
    print(json.dumps({"pids": pids, "ancestors": ancestors, "own_env": sorted(os.environ)}))
"""

# The runner process: started with the canaries in its exec-time environment (what /proc/PID/environ shows), as
# a real runner is started with HF_TOKEN and REDIS_URL; it runs the attacker in the sandbox or unsandboxed.
RUNNER_PROCESS = """
    import asyncio, os, sys
    sys.path.insert(0, {root!r})
    from runners.sandbox import Limits, Sandbox, Unsandboxed
    kind, folder, script = sys.argv[1:4]
    runner = Sandbox(Limits(memory_bytes=256 << 20)) if kind == "sandbox" else Unsandboxed()
    host_pids = [str(os.getpid()), str(os.getppid())]
    outcome = asyncio.run(runner.run([sys.executable, script, *host_pids], ro_binds=[(folder, folder)], env={{}},
                                     wall_seconds=30))
    sys.stdout.buffer.write(outcome.output)
    sys.exit(outcome.returncode)
"""


@pytest.mark.parametrize("kind", SANDBOX_AND_CONTROL)
def test_secrets_do_not_reach_the_job(kind, canaries, attack_dir):
    script = write_script(attack_dir, READ_SECRETS)
    runner_process = textwrap.dedent(RUNNER_PROCESS).format(root=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", runner_process, kind, str(attack_dir), script], capture_output=True, timeout=60
    )
    output = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, output[-2000:] + done.stderr.decode()[-2000:]
    found = json.loads(output.splitlines()[-1])
    assert "PYTHONNOUSERSITE" in found["own_env"]  # the attacker did read its own environment
    if kind == "sandbox":
        leaked = [canary for canary in canaries if canary in output]
        assert leaked == [], "a runner secret reached the sandbox"
        assert max(found["pids"]) < 10, f"host processes visible: {found['pids']}"  # only its own PID namespace
        assert found["ancestors"][-1] in (0, 1), found["ancestors"]  # no ancestor outside the sandbox
    else:  # the same reads find the runner's secrets from an ordinary subprocess
        assert all(canary in output for canary in canaries)


# -- network -------------------------------------------------------------------------------------------------------

CONNECT = """
    import json, socket, sys

    results = {}
    for name, target in json.loads(sys.argv[1]).items():
        family = socket.AF_UNIX if isinstance(target, str) else socket.AF_INET
        address = "\\0" + target if isinstance(target, str) else tuple(target)
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(3)
                sock.connect(address)
                sock.sendall(b"PING\\r\\n" if name == "redis" else b"GET / HTTP/1.0\\r\\n\\r\\n")
                results[name] = sock.recv(64).decode("utf-8", "replace")
        except OSError as error:
            results[name] = f"blocked: {error!r}"
    try:
        results["dns"] = repr(socket.getaddrinfo("github.com", 443))
    except OSError as error:
        results["dns"] = f"blocked: {error!r}"
    print(json.dumps(results))
"""


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"secret page")

    def log_message(self, *args):
        pass


@pytest.fixture
def listeners():
    """A loopback HTTP server on every host address, and an abstract unix socket, both started by the test."""
    server = ThreadingHTTPServer(("0.0.0.0", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"drbot-canary-{uuid.uuid4().hex}"
    abstract.bind("\0" + name)
    abstract.listen()

    def answer():
        while True:
            try:
                connection, _ = abstract.accept()
            except OSError:
                return
            with connection:
                connection.recv(64)  # the client's request first, so it never writes to a closed socket
                connection.sendall(b"abstract hello")

    threading.Thread(target=answer, daemon=True).start()
    targets = {"redis": ["127.0.0.1", 6379], "http": ["127.0.0.1", server.server_port], "abstract": name}
    try:
        host_ip = socket.gethostbyname(socket.gethostname())
    except OSError:
        host_ip = None
    if host_ip and not host_ip.startswith("127."):
        targets["http_host_ip"] = [host_ip, server.server_port]
    yield targets
    server.shutdown()
    abstract.close()


@pytest.mark.parametrize("kind", SANDBOX_AND_CONTROL)
async def test_no_network(kind, listeners, attack_dir):
    found = report(await attack(runner_for(kind), attack_dir, CONNECT, json.dumps(listeners)))
    if kind == "sandbox":
        assert all(result.startswith("blocked") for result in found.values()), found
    else:
        assert found["redis"].startswith("+PONG") and found["http"].startswith("HTTP/1.0 200"), found
        assert found["abstract"] == "abstract hello"


# -- filesystem ------------------------------------------------------------------------------------------------------

WRITE_EVERYWHERE = """
    import json, os, sys

    name, targets = sys.argv[1], json.loads(sys.argv[2])
    results = {}
    for folder in targets:
        try:
            with open(os.path.join(folder, name), "w") as handle:
                handle.write("pwned")
            results[folder] = "written"
        except OSError as error:
            results[folder] = error.strerror
    view = {}
    for folder in ("/", "/etc", "/root", "/work", os.path.dirname(os.path.dirname(sys.argv[3]))):
        try:
            view[folder] = sorted(os.listdir(folder))
        except OSError as error:
            view[folder] = error.strerror
    try:
        secret = open("/root/.npmrc").read()
    except OSError as error:
        secret = error.strerror
    print(json.dumps({"results": results, "view": view, "npmrc": secret}))
"""


@pytest.mark.parametrize("kind", SANDBOX_AND_CONTROL)
async def test_writes_stay_in_the_scratch(kind, attack_dir):
    name = f"drbot-attack-{uuid.uuid4().hex}"
    site_packages = str(Path(ctypes.__file__).parent)  # the interpreter's standard library
    targets = [str(RUNNERS), str(ROOT), "/tmp", "/var/tmp", "/root", "/etc", site_packages]
    if kind == "unsandboxed":
        targets = ["/tmp", "/var/tmp"]  # enough to show the attack works; not writing into the checkout for real
    runner = runner_for(kind)
    binds = [(str(RUNNERS), str(RUNNERS))]  # the worker shows drbot's runners package to the job
    try:
        outcome = await attack(runner, attack_dir, WRITE_EVERYWHERE, name, json.dumps(targets), str(RUNNERS),
                               binds=binds)  # fmt: skip
        found = report(outcome)
        on_host = [folder for folder in targets if os.path.exists(os.path.join(folder, name))]
    finally:
        for folder in targets:
            Path(folder, name).unlink(missing_ok=True)
    if kind == "sandbox":
        assert on_host == [], f"the job wrote outside its scratch: {on_host}"
        assert found["results"]["/tmp"] == "written"  # the scratch works, and is not the host's /tmp
        assert found["results"][str(RUNNERS)] == "Read-only file system"
        view = found["view"]
        assert set(view["/etc"]) <= {"passwd", "group", "hosts", "nsswitch.conf", "hostname", "ld.so.cache",
                                     "alternatives", "localtime", "os-release"}, view["/etc"]  # fmt: skip
        assert view["/root"] == [".pyenv"] or view["/root"] == "No such file or directory", view["/root"]
        assert found["npmrc"] == "No such file or directory"  # a credential file next to the interpreter
    else:
        assert on_host == targets


# -- processes -------------------------------------------------------------------------------------------------------

DOUBLE_FORK = """
    import os, sys

    marker = sys.argv[1]
    if os.fork() == 0:
        os.setsid()                                        # leave the job's session and process group
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)                       # and let go of the output pipe
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", marker])
        os._exit(0)
    os.wait()
    print('{"spawned": true}')
"""


@pytest.mark.parametrize("kind", SANDBOX_AND_CONTROL)
async def test_no_process_outlives_the_job(kind, attack_dir):
    marker = f"drbot-sleeper-{uuid.uuid4().hex}"
    try:
        assert report(await attack(runner_for(kind), attack_dir, DOUBLE_FORK, marker)) == {"spawned": True}
        time.sleep(0.2)
        survivors = processes_with(marker)
        if kind == "sandbox":
            assert survivors == []
        else:  # a process-group kill alone misses a grandchild that left the group
            assert survivors
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


async def test_no_process_outlives_the_job_without_a_cgroup(attack_dir, monkeypatch):
    """Without a cgroup to kill, the PID namespace alone takes every process down with the job."""
    monkeypatch.setattr(sandbox_module, "find_cgroup_parents", lambda parent=None: {})
    marker = f"drbot-sleeper-{uuid.uuid4().hex}"
    try:
        assert report(await attack(Sandbox(SMALL, gpu=False), attack_dir, DOUBLE_FORK, marker)) == {"spawned": True}
        time.sleep(0.2)
        assert processes_with(marker) == []
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


DIES_WITH_RUNNER = """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from runners.sandbox import Sandbox
    sleeper = "import time; print('started', flush=True); time.sleep(600)"
    asyncio.run(Sandbox().run([sys.executable, "-c", sleeper, {marker!r}], on_line=print, wall_seconds=600))
"""


def test_the_job_dies_with_its_runner():
    """A runner killed mid-job (OOM, SIGKILL, a crash) takes the job with it, and the next runner to start removes
    the job's cgroup."""
    marker = f"drbot-orphan-{uuid.uuid4().hex}"
    driver = textwrap.dedent(DIES_WITH_RUNNER).format(root=str(ROOT), marker=marker)
    runner = subprocess.Popen([sys.executable, "-u", "-c", driver], stdout=subprocess.PIPE)
    try:
        assert runner.stdout.readline().strip() == b"started"
        assert processes_with(marker)
        runner.kill()
        runner.wait()
        deadline = time.monotonic() + 5
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with(marker) == []
        stale = f"{CGROUP_PREFIX}{runner.pid}-*"
        parents = find_cgroup_parents()
        if parents:
            assert [path for parent in parents.values() for path in parent.path.glob(stale)]
            Sandbox(SMALL).check()
            assert not [path for parent in parents.values() for path in parent.path.glob(stale)]
    finally:
        runner.kill()
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)


FORK_BOMB = """
    import os, time

    refused = False
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.fork()
        except OSError:
            if not refused:
                refused = True
                print("fork refused", flush=True)
            time.sleep(0.01)
"""


async def test_fork_bomb_is_contained(sandbox, attack_dir):
    marker = f"drbot-bomb-{uuid.uuid4().hex}"
    started = time.monotonic()
    outcome = await attack(sandbox, attack_dir, FORK_BOMB, marker, wall_seconds=2)
    assert outcome.limit in (Exceeded.PROCESSES, Exceeded.WALL_TIME)
    assert b"fork refused" in outcome.output  # the process limit, not the machine, stopped it
    assert time.monotonic() - started < 10
    assert processes_with(marker) == []


# -- resource limits -------------------------------------------------------------------------------------------------

EAT_MEMORY = """
    chunks = []
    while True:
        chunks.append(b"x" * (8 << 20))                    # written, so resident: not just reserved
        print(len(chunks) * 8, "MiB", flush=True)
"""


async def test_memory_limit(sandbox, attack_dir):
    outcome = await attack(sandbox, attack_dir, EAT_MEMORY)
    assert outcome.limit == Exceeded.MEMORY, outcome.text[-500:]
    assert outcome.returncode == 128 + signal.SIGKILL  # the OOM killer, inside the job's cgroup
    assert outcome.peak_memory_bytes is not None and outcome.peak_memory_bytes <= SMALL.memory_bytes
    assert int(outcome.output.split()[-2]) < SMALL.memory_bytes >> 20


async def test_memory_limit_without_a_cgroup(attack_dir, monkeypatch):
    """Where no cgroup is writable (and no GPU is used), RLIMIT_AS bounds the job instead."""
    monkeypatch.setattr(sandbox_module, "find_cgroup_parents", lambda parent=None: {})
    box = Sandbox(SMALL, gpu=False)
    assert "memory: RLIMIT_AS" in box.describe() and "processes: RLIMIT_NPROC" in box.describe()
    outcome = await attack(box, attack_dir, EAT_MEMORY)
    assert outcome.limit == Exceeded.MEMORY, outcome.text[-500:]
    assert b"MemoryError" in outcome.output


async def test_output_cap_bounds_the_parent(sandbox, attack_dir):
    flood = """
        import sys
        line = b"y" * 1023 + b"\\n"
        while True:
            sys.stdout.buffer.write(line * 1024)           # a MiB at a time, forever
    """
    lines = []
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = await attack(sandbox, attack_dir, flood, wall_seconds=10, on_line=lines.append)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert outcome.limit == Exceeded.OUTPUT
    assert len(outcome.output) == SMALL.output_bytes
    assert sum(len(line) + 1 for line in lines) <= SMALL.output_bytes + 1
    assert grown_kib < 32 * 1024, f"the parent grew by {grown_kib} KiB reading a capped stream"
    assert outcome.duration_s < 5


async def test_cpu_time(attack_dir):
    box = Sandbox(Limits(cpu_seconds=1, memory_bytes=SMALL.memory_bytes))
    outcome = await attack(box, attack_dir, "while True:\n    pass\n", wall_seconds=20)
    assert outcome.limit == Exceeded.CPU_TIME
    assert outcome.returncode == 128 + signal.SIGXCPU
    assert outcome.duration_s < 10


async def test_a_failing_reader_ends_the_job(sandbox):
    """If the caller's on_line raises, nothing reads the job's output any more: the job ends at once."""

    def broken(line: str) -> None:
        raise RuntimeError("reader broke")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="reader broke"):
        await sandbox.run(["/bin/sh", "-c", "echo hello; sleep 60"], wall_seconds=30, on_line=broken)
    assert time.monotonic() - started < 5


async def test_wall_time(sandbox, attack_dir):
    outcome = await attack(sandbox, attack_dir, "import time\ntime.sleep(60)\n", wall_seconds=1)
    assert outcome.limit == Exceeded.WALL_TIME
    assert outcome.duration_s < 5


@pytest.mark.parametrize("writer", ["python", "shell"])
async def test_file_size(sandbox, attack_dir, writer):
    if writer == "python":  # Python ignores SIGXFSZ: the write fails with EFBIG
        outcome = await attack(sandbox, attack_dir, "open('/tmp/big', 'wb').write(b'z' * (2 << 20))\n")
        assert b"File too large" in outcome.output
    else:  # anything else gets SIGXFSZ from the kernel
        outcome = await sandbox.run(["/bin/sh", "-c", "head -c 2097152 /dev/zero > /tmp/big"], wall_seconds=10)
        assert outcome.returncode == 128 + signal.SIGXFSZ
    assert outcome.limit == Exceeded.FILE_SIZE


async def test_scratch_size(sandbox, attack_dir):
    fill = """
        for i in range(64):
            with open(f"/tmp/part{i}", "wb") as handle:
                handle.write(b"s" * (512 << 10))           # 512 KiB files: under the file size limit
    """
    outcome = await attack(sandbox, attack_dir, fill)
    assert outcome.limit == Exceeded.SCRATCH, outcome.text[-500:]


# -- kernel surface --------------------------------------------------------------------------------------------------

NEW_NAMESPACES = """
    import ctypes, json, os, subprocess

    libc = ctypes.CDLL(None, use_errno=True)
    results = {}
    for name, flags in (("user", 0x10000000), ("user+mount", 0x10020000)):
        child = os.fork()
        if child == 0:                                     # each attempt in a fresh process
            os._exit(0 if libc.unshare(flags) == 0 else ctypes.get_errno())
        status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        results[name] = "created" if status == 0 else os.strerror(status)
    tool = subprocess.run(["/usr/bin/unshare", "--user", "--map-root-user", "/usr/bin/id", "-u"], capture_output=True)
    results["unshare(1)"] = (tool.stdout or tool.stderr).decode().strip()
    print(json.dumps(results))
"""


@pytest.mark.parametrize("kind", SANDBOX_AND_CONTROL)
async def test_no_new_user_namespaces(kind, attack_dir):
    """A user namespace would give the job a fresh set of capabilities to attack the kernel with."""
    found = report(await attack(runner_for(kind), attack_dir, NEW_NAMESPACES))
    if kind == "sandbox":
        assert found["user"] == found["user+mount"] == "Operation not permitted", found
        assert "Operation not permitted" in found["unshare(1)"], found
    else:
        assert found["user"] == found["user+mount"] == "created" and found["unshare(1)"] == "0", found


# -- the real job environment ----------------------------------------------------------------------------------------


async def test_torch_and_diffusers_import_in_the_sandbox():
    box = Sandbox(Limits(memory_bytes=2 << 30))
    probe = "import torch, diffusers, os; print(torch.__version__, diffusers.__version__, os.getuid(), torch.ones(2).sum())"
    outcome = await box.run([sys.executable, "-c", probe], env={"OMP_NUM_THREADS": "1"}, wall_seconds=120)
    assert outcome.returncode == 0, outcome.text[-3000:]
    torch_version, diffusers_version, uid, total = outcome.text.split()[-4:]
    assert diffusers_version == "0.42.1" and uid == "65534" and total == "tensor(2.)"
    assert outcome.peak_memory_bytes is None or outcome.peak_memory_bytes < 2 << 30


GPU_VIEW = """
    import json, os, sys

    device, libraries = sys.argv[1], sys.argv[2]
    with open(device, "rb") as handle:
        read = handle.read(4).hex()
    try:
        open(os.path.join(libraries, "libcuda.so.1"), "a").close()
        library_write = "written"
    except OSError as error:
        library_write = error.strerror
    try:
        open("/sys/kernel/mm/transparent_hugepage/enabled", "w").close()
        sys_write = "written"
    except OSError as error:
        sys_write = error.strerror
    print(json.dumps({"read": read, "sys": os.path.isdir("/sys/class"), "sys_write": sys_write,
                      "libraries": os.listdir(libraries), "library_write": library_write,
                      "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                      "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH")}))
"""


async def test_gpu_passthrough_path_on_a_cpu_host(monkeypatch, attack_dir, tmp_path):
    """The GPU code path, on a host without one: a stand-in device node (the kernel's zero device) for
    /dev/nvidia*, a stand-in driver library directory on LD_LIBRARY_PATH, CUDA_VISIBLE_DEVICES from the runner."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a device node")
    stand_in = Path(tempfile.mkdtemp(prefix="drbot-gpu-", dir="/var/tmp"))
    try:
        stand_in.chmod(0o755)
        device, libraries = stand_in / "nvidia0", stand_in / "lib64"
        os.mknod(device, 0o666 | 0o020000, os.makedev(1, 5))  # a character device: /dev/zero's numbers
        device.chmod(0o666)
        libraries.mkdir(mode=0o755)
        (libraries / "libcuda.so.1").write_bytes(b"")
        (libraries / "libcuda.so.1").chmod(0o666)  # so that only the read-only mount can refuse a write
        monkeypatch.setattr(sandbox_module, "nvidia_devices", lambda: [str(device)])
        monkeypatch.setenv("LD_LIBRARY_PATH", str(libraries))
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
        box = Sandbox(SMALL)
        assert "gpu: passed through" in box.describe()
        found = report(await attack(box, attack_dir, GPU_VIEW, str(device), str(libraries)))
    finally:
        shutil.rmtree(stand_in, ignore_errors=True)
    assert found["read"] == "00000000"  # the device node works inside (--dev-bind keeps device access)
    assert found["sys"] and found["sys_write"] == "Read-only file system"
    assert found["libraries"] == ["libcuda.so.1"] and found["library_write"] == "Read-only file system"
    assert found["CUDA_VISIBLE_DEVICES"] == "3" and found["LD_LIBRARY_PATH"] == str(libraries)


CUDA_JOB = """
    import json, os, torch

    x = torch.randn(1024, 1024, device="cuda")
    print(json.dumps({"device": torch.cuda.get_device_name(0), "ok": bool((x @ x).isfinite().all()),
                      "uid": os.getuid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}))
"""


@pytest.mark.skipif(not sandbox_module.nvidia_devices(), reason="no NVIDIA GPU on this host")
async def test_cuda_job_in_the_sandbox(attack_dir):
    """On a GPU host: CUDA works inside the sandbox, as the sandbox uid, under the default memory limit."""
    box = Sandbox(Limits())
    assert "gpu: passed through" in box.describe()
    outcome = await attack(box, attack_dir, CUDA_JOB, wall_seconds=300)
    found = report(outcome)
    assert found["ok"] and found["uid"] == 65534, found
    assert found["visible"] == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert outcome.peak_memory_bytes is None or outcome.peak_memory_bytes < Limits().memory_bytes


# -- refusals, and the unsandboxed twin ------------------------------------------------------------------------------


async def test_refuses_without_bubblewrap():
    missing = Sandbox(SMALL, bwrap="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        missing.check()
    with pytest.raises(SandboxUnavailable):
        await missing.run(["/usr/bin/true"], wall_seconds=5)
    with pytest.raises(SandboxUnavailable):  # never Unsandboxed as a fallback
        make_sandbox(SMALL, bwrap="/nonexistent/bwrap")


def test_refuses_a_gpu_job_without_a_memory_cgroup(monkeypatch):
    """RLIMIT_AS cannot bound CUDA, so a GPU host with no writable memory cgroup refuses unless told otherwise."""
    monkeypatch.setattr(sandbox_module, "find_cgroup_parents", lambda parent=None: {})
    monkeypatch.setattr(sandbox_module, "nvidia_devices", lambda: ["/dev/nvidia0"])
    with pytest.raises(SandboxUnavailable, match="RLIMIT_AS cannot bound a GPU job"):
        Sandbox(SMALL).check()


def test_refuses_gpu_without_devices():
    if sandbox_module.nvidia_devices():
        pytest.skip("this host has NVIDIA devices")
    with pytest.raises(SandboxUnavailable, match="no /dev/nvidia"):
        Sandbox(SMALL, gpu=True).check()


def test_unsandboxed_only_when_asked(caplog):
    assert isinstance(make_sandbox(SMALL), Sandbox)
    with caplog.at_level("WARNING", logger="drbot.sandbox"):
        twin = make_sandbox(SMALL, unsandboxed=True)
    assert isinstance(twin, Unsandboxed) and not twin.sandboxed
    assert "UNSANDBOXED" in caplog.text


async def test_unsandboxed_twin_keeps_its_limits(attack_dir):
    twin = Unsandboxed(SMALL)
    slow = await attack(twin, attack_dir, "import time\ntime.sleep(60)\n", wall_seconds=1)
    assert slow.limit == Exceeded.WALL_TIME and slow.sandboxed is False
    flood = await attack(twin, attack_dir, "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n")
    assert flood.limit == Exceeded.OUTPUT and len(flood.output) == SMALL.output_bytes


# -- an unprivileged runner ------------------------------------------------------------------------------------------

UNPRIVILEGED_RUNNER = """
    import asyncio, json, os, sys
    sys.path.insert(0, {root!r})
    from runners.sandbox import Limits, Sandbox
    box = Sandbox(Limits(memory_bytes=128 << 20, processes=32))
    script = {script!r}
    outcome = asyncio.run(box.run([sys.executable, script, str(os.getpid())], ro_binds=[(os.path.dirname(script),) * 2],
                                  env={{}}, wall_seconds=20))
    print(json.dumps({{"describe": box.describe(), "output": outcome.text, "returncode": outcome.returncode}}))
"""

UNPRIVILEGED_ATTACK = """
    import ctypes, os, socket, sys
    try:
        print("runner env:", open(f"/proc/{sys.argv[1]}/environ").read())
    except OSError as error:
        print("runner env:", error.strerror)
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2)
        print("redis: reachable")
    except OSError as error:
        print("redis:", error.strerror)
    libc = ctypes.CDLL(None, use_errno=True)
    print("userns:", "created" if libc.unshare(0x10000000) == 0 else os.strerror(ctypes.get_errno()))
    print("uid:", os.getuid())
"""


def test_unprivileged_runner(canaries, attack_dir):
    """A runner that is not root gets the same isolation from a user namespace (here: uid 65534 on the host,
    running the system's python, since the venv's interpreter lives under /root)."""
    python = "/usr/bin/python3"
    if os.geteuid() != 0 or not os.path.exists(python):
        pytest.skip("needs root to switch to an unprivileged uid, and /usr/bin/python3")
    script = write_script(attack_dir, UNPRIVILEGED_ATTACK)
    driver = textwrap.dedent(UNPRIVILEGED_RUNNER).format(root=str(ROOT), script=script)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", driver]
    done = subprocess.run(as_nobody, capture_output=True, timeout=60, cwd="/")
    if b"user namespaces" in done.stderr:
        pytest.skip(f"unprivileged user namespaces are disabled here: {done.stderr.decode()[-300:]}")
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert "user namespace" in result["describe"] and "RLIMIT_AS" in result["describe"]
    assert result["returncode"] == 0, result["output"]
    output = result["output"]
    assert not any(canary in output for canary in canaries)
    assert "runner env: No such file or directory" in output
    assert "redis: Connection refused" in output or "redis: Network is unreachable" in output
    assert "userns: Operation not permitted" in output
    assert "uid: 65534" in output
