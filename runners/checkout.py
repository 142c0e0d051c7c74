"""Contracts on pipelines built the way a diffusers checkout's own fast tests build them.

A fast test class of `tests/pipelines/` names its `pipeline_class` and builds tiny components in
`get_dummy_components()` and inputs in `get_dummy_inputs(device, seed)` (the `PipelineTesterMixin` idiom) or
`get_dummy_inputs()` (the `BasePipelineTesterConfig` idiom of `tests/pipelines/testing_utils`). `index()` finds those
classes without importing anything; a worker subprocess, with the checkout's `src/` and its `tests` package first on
`sys.path` and the hub cache pointed at drbot's stand-ins (`runners.standins`), imports each test module, wraps the
class in a `Factory` and runs the contracts on it. The parent reads one JSON line per event, so a pipeline that hangs or
kills its process costs only its own rows.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import json
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


#: words in a test class name that mark slow or hub-bound tests, never the fast ones
NOT_FAST = ("Slow", "Nightly", "Integration", "IntegrationTest")
#: per-pipeline wall-clock limit of the worker (a hung call must not stop the run)
PIPELINE_TIMEOUT_S = 300.0
#: what the worker may take to import torch, diffusers and the checkout's test helpers before its first pipeline
STARTUP_S = 180.0


@dataclass(frozen=True)
class TestClassRef:
    """A fast test class found in the checkout: where it is and what its `get_dummy_components` loads."""

    __test__ = False  # not a pytest test class, whatever its name

    pipeline: str  # the `pipeline_class` name
    module: str  # dotted, under the checkout's `tests` package
    name: str  # the class
    path: str  # relative to the checkout
    line: int
    repos: tuple[str, ...] = ()  # literal `from_pretrained("org/name")` ids in get_dummy_components
    via: str = ""  # the test module's own subclass of `pipeline` that the test class builds, if any

    def to_dict(self) -> dict:
        return {"pipeline": self.pipeline, "module": self.module, "name": self.name, "path": self.path,
                "line": self.line, "repos": list(self.repos), "via": self.via}  # fmt: skip


def is_checkout(path: Path) -> bool:
    return (path / "src" / "diffusers" / "__init__.py").is_file() and (path / "tests" / "pipelines").is_dir()


# -- discovery (stdlib only: runs before torch loads) ------------------------------------------------------------------


@dataclass
class _ClassInfo:
    node: ast.ClassDef
    bases: list[str]
    pipeline: str | None = None
    components: ast.FunctionDef | None = None
    inputs: bool = False
    resolved: bool = False
    constants: dict[str, str] = field(default_factory=dict)  # class-level strings (`ckpt_id = "org/name"`)


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _repos(function: ast.FunctionDef, constants: dict[str, str]) -> tuple[str, ...]:
    """The literal repository ids `get_dummy_components` passes to `from_pretrained` (directly, or via a local or a
    module-level constant)."""
    local: dict[str, str] = dict(constants)
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            local.update((t.id, node.value.value) for t in node.targets if isinstance(t, ast.Name))
    found: dict[str, None] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and _name(node.func) == "from_pretrained" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Attribute) and isinstance(first.value, ast.Name) and first.value.id == "self":
                first = ast.Name(first.attr)  # `self.ckpt_id`: a class-level constant
            value = first.value if isinstance(first, ast.Constant) else local.get(getattr(first, "id", ""))
            if isinstance(value, str) and value.count("/") == 1 and not value.startswith((".", "/")):
                found[value] = None
    return tuple(found)


def _module_classes(path: Path) -> tuple[dict[str, _ClassInfo], dict[str, str]]:
    """The module's classes and its module-level string constants."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return {}, {}
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    classes = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        info = _ClassInfo(node, [b for b in (_name(base) for base in node.bases) if b])
        info.constants = {
            target.id: item.value.value
            for item in node.body
            if isinstance(item, ast.Assign)
            and isinstance(item.value, ast.Constant)
            and isinstance(item.value.value, str)
            for target in item.targets
            if isinstance(target, ast.Name)
        }
        for item in node.body:
            if isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pipeline_class"
                                                    for t in item.targets):  # fmt: skip
                info.pipeline = _name(item.value)
            elif isinstance(item, ast.FunctionDef) and item.name == "get_dummy_components":
                info.components = item
            elif isinstance(item, ast.FunctionDef) and item.name == "get_dummy_inputs":
                info.inputs = True
        classes[node.name] = info
    return classes, constants


def _resolve(classes: dict[str, _ClassInfo], name: str, seen: frozenset[str] = frozenset()) -> _ClassInfo | None:
    """Fill in what a class inherits from bases of the same module (a `...TesterConfig` holds the builders)."""
    info = classes.get(name)
    if info is None or name in seen:
        return None
    if not info.resolved:
        for base in info.bases:
            parent = _resolve(classes, base, seen | {name})
            if parent is None:
                continue
            info.pipeline = info.pipeline or parent.pipeline
            info.components = info.components or parent.components
            info.inputs = info.inputs or parent.inputs
            info.constants = {**parent.constants, **info.constants}
        info.resolved = True
    return info


def _rank(ref: TestClassRef) -> tuple:
    """Which of several test classes of one pipeline to build from: a `*FastTests`/`*TesterConfig` class in the file
    named most like the pipeline, first."""
    fast = ref.name.endswith(("FastTests", "FastTest", "TesterConfig"))
    return (bool(ref.via), not fast, ref.path.count("/"), len(ref.path), ref.path, ref.line)


def index(checkout: Path) -> dict[str, list[TestClassRef]]:
    """Pipeline class name -> its fast test classes in `checkout/tests/pipelines`, best first."""
    checkout = Path(checkout)
    found: dict[str, list[TestClassRef]] = {}
    for path in sorted((checkout / "tests" / "pipelines").rglob("test_*.py")):
        classes, constants = _module_classes(path)
        relative = path.relative_to(checkout)
        module = ".".join(relative.with_suffix("").parts)
        for name in classes:
            info = _resolve(classes, name)
            if info is None or not (info.pipeline and info.components and info.inputs):
                continue
            if any(word in name for word in NOT_FAST):
                continue
            ref = TestClassRef(info.pipeline, module, name, relative.as_posix(), info.node.lineno,
                               _repos(info.components, {**constants, **info.constants}))  # fmt: skip
            found.setdefault(info.pipeline, []).append(ref)
            # a test-local subclass (`Cosmos2TextToImagePipelineWrapper(Cosmos2TextToImagePipeline)`) tests its base
            # too: it stands for the base, after any test class that names the base itself
            wrapper = classes.get(info.pipeline)
            for base in wrapper.bases if wrapper is not None else []:
                if base.endswith("Pipeline") and base not in classes:
                    found.setdefault(base, []).append(dataclasses.replace(ref, pipeline=base, via=info.pipeline))
    return {pipeline: sorted(refs, key=_rank) for pipeline, refs in sorted(found.items())}


#: what `from_pretrained` says offline when the hub cache lacks a repository (transformers, diffusers, huggingface_hub)
OFFLINE_MISS = re.compile(
    r"""couldn't\ connect\ to\ 'https://huggingface\.co' | outgoing\ traffic\ has\ been\ disabled
      | does\ not\ appear\ to\ have\ a\ file\ named | LocalEntryNotFoundError""",
    re.VERBOSE,
)
#: a repository id named in such a message (`org/name`, not a URL or a path)
REPO_ID = re.compile(r"(?<![\w/:.-])([A-Za-z0-9][\w.-]*/[\w.-]*[\w])(?![\w/])")


def offline_miss(message: str) -> str | None:
    """The repository a build error says is missing offline ("" when it names none), or None for another error."""
    if not OFFLINE_MISS.search(message):
        return None
    repos = [repo for repo in REPO_ID.findall(message) if not repo.startswith("huggingface.co")]
    return repos[0] if repos else ""


def missing_standins(ref: TestClassRef) -> list[str]:
    from runners.standins import STANDINS

    return [repo for repo in ref.repos if repo not in STANDINS]


# -- the worker: runs inside the subprocess, with the checkout importable ---------------------------------------------


def activate(checkout: Path) -> None:
    """Put the checkout's `src/` and root first on `sys.path`, so `diffusers` and `tests` are the checkout's."""
    checkout = Path(os.path.abspath(checkout))  # not resolved: src/diffusers may be a link to an installed package
    for stale in [name for name in sys.modules if name == "tests" or name.startswith(("tests.", "diffusers"))]:
        del sys.modules[stale]
    sys.path[:0] = [str(checkout / "src"), str(checkout)]
    import diffusers

    import tests  # the checkout's: its root is first on sys.path now

    for module, root in ((diffusers, checkout / "src"), (tests, checkout)):
        if not Path(os.path.abspath(module.__file__ or "")).is_relative_to(root):
            raise ImportError(f"{module.__name__} resolved to {module.__file__}, not to the checkout {checkout}")


def _instance(test_class):
    """The test class as pytest/unittest would instantiate it (a `TestCase` takes a method name; `runTest` is let be
    absent)."""
    import unittest

    instance = test_class() if not issubclass(test_class, unittest.TestCase) else test_class("__init__")
    setup = getattr(instance, "setUp", None)
    if callable(setup) and getattr(type(instance), "setUp", None) is not unittest.TestCase.setUp:
        setup()
    return instance


#: the `__call__` argument that multiplies outputs per prompt, by preference
PER_PROMPT = ("num_images_per_prompt", "num_videos_per_prompt", "num_waveforms_per_prompt", "num_audios_per_prompt")
#: the denoiser component, by preference (its forward is hooked by some contracts)
DENOISERS = ("transformer", "unet", "prior", "decoder", "transformer_2", "unet_2")


def checkout_factory(ref: TestClassRef):
    """A `Factory` whose components and inputs come from the checkout's test class (import it first: `activate`)."""
    import importlib
    import inspect

    import torch

    from runners.tiny import Factory

    test_class = getattr(importlib.import_module(ref.module), ref.name)
    pipeline_class = test_class.pipeline_class
    instance = _instance(test_class)
    call = inspect.signature(pipeline_class.__call__).parameters
    parameters = inspect.signature(instance.get_dummy_inputs).parameters
    # `(device, seed=0)` in the PipelineTesterMixin idiom, `()` in BasePipelineTesterConfig's, and variants with
    # other defaulted options (`img_res=64`): pass a device only where one is asked for, a seed where it is named
    positional = [p for p in parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_device = "device" in parameters or any(p.default is p.empty for p in positional)
    takes_seed = "seed" in parameters

    pristine: dict[int, dict] = {}

    def make_components(seed: int) -> dict:
        """A fresh set each call; built once per seed and deep-copied after (building runs `from_pretrained`)."""
        if seed not in pristine:
            torch.manual_seed(seed)
            pristine[seed] = instance.get_dummy_components()
        try:
            return copy.deepcopy(pristine[seed])
        except Exception:  # noqa: BLE001 - a component that cannot be copied: build it again
            torch.manual_seed(seed)
            return instance.get_dummy_components()

    def make_inputs(device: str, seed: int) -> dict:
        inputs = instance.get_dummy_inputs(
            *([device] if takes_device else []), **({"seed": seed} if takes_seed else {})
        )
        if not takes_seed and seed and "generator" in inputs:  # seed 0 only: another seed replaces the generator
            inputs["generator"] = torch.Generator("cpu").manual_seed(seed)
        if "output_type" in call and inputs.get("output_type") != "latent":
            inputs["output_type"] = "pt"  # the contracts compare tensors (fast tests mostly ask for numpy)
        return inputs

    components = make_components(0)
    modules = [n for n, v in components.items() if isinstance(v, torch.nn.Module)]
    denoiser = next((n for n in DENOISERS if n in modules), None)
    denoiser = denoiser or next(
        (n for n in modules if "transformer" in n or "unet" in n), modules[0] if modules else "unet"
    )
    per_prompt = next((name for name in PER_PROMPT if name in call), "num_images_per_prompt")
    return Factory(ref.pipeline, make_components, make_inputs, per_prompt_arg=per_prompt, denoiser=denoiser,
                   cls=pipeline_class)  # fmt: skip


def classify(event: dict) -> dict:
    """A build error that is `from_pretrained` missing a repository offline becomes `no-standin` (a helper the static
    scan cannot see loaded it)."""
    if event.get("status") != "build-error":
        return event
    repo = offline_miss(event.get("message", ""))
    if repo is None:
        return event
    named = repo or "a checkpoint the error does not name"
    return {**event, "status": "no-standin", "message": f"no stand-in for {named} ({event['message']})"}


def one_line(error: BaseException, limit: int = 300) -> str:
    import traceback

    line = traceback.format_exception_only(type(error), error)[-1].strip()
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def worker(checkout: Path, pipelines: Sequence[str], codes: Sequence[str] | None, device: str, dtype: str | None,
           offload: bool, threads: int) -> int:  # fmt: skip
    """Build each pipeline from its fast test class and run the contracts: one JSON line per event on stdout."""
    import warnings

    warnings.filterwarnings("ignore")
    refs = index(checkout)
    activate(checkout)
    import pytest
    import torch

    from runners.cli import quiet
    from runners.contracts import all_contracts
    from runners.suite import run_one

    quiet()
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    contracts = [c for c in all_contracts() if not codes or c.code in set(codes)]
    for pipeline in pipelines:
        _emit({"event": "start", "pipeline": pipeline})
        started, cpu = time.perf_counter(), time.process_time()
        candidates = refs.get(pipeline, [])
        if not candidates:
            _emit({"event": "pipeline", "pipeline": pipeline, "status": "no-test", "message": "no fast test class"})
            continue
        ref = candidates[0]
        missing = missing_standins(ref)
        if missing:
            _emit({"event": "pipeline", "pipeline": pipeline, "status": "no-standin", "test": ref.to_dict(),
                   "message": f"no stand-in for {', '.join(missing)}"})  # fmt: skip
            continue
        try:
            factory = checkout_factory(ref)
            factory.build("cpu")
        except pytest.skip.Exception as skip:  # a BaseException: the test class skips this pipeline (deprecated, ...)
            _emit({"event": "pipeline", "pipeline": pipeline, "status": "test-skipped", "test": ref.to_dict(),
                   "message": one_line(skip)})  # fmt: skip
            continue
        except Exception as error:  # noqa: BLE001 - reported, the run goes on
            _emit(classify({"event": "pipeline", "pipeline": pipeline, "status": "build-error",
                            "test": ref.to_dict(), "message": one_line(error)}))  # fmt: skip
            continue
        for contract in contracts:
            result = run_one(factory, contract, device, dtype, offload)
            _emit({"event": "result", **result.to_dict()})
        _emit({"event": "pipeline", "pipeline": pipeline, "status": "built", "test": ref.to_dict(), "message": "",
               "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu})  # fmt: skip
    return 0


def exported_pipelines(checkout: Path) -> int:
    """Print (JSON) every `*Pipeline` name the checkout's `diffusers` exports, with its kind."""
    import warnings

    warnings.filterwarnings("ignore")
    activate(checkout)
    import diffusers
    from diffusers import DiffusionPipeline

    modular = getattr(diffusers, "ModularPipeline", None)
    rows = []
    for name in sorted(set(dir(diffusers))):
        if not name.endswith("Pipeline") or name in ("DiffusionPipeline", "ModularPipeline"):
            continue
        try:
            value = getattr(diffusers, name)
        except Exception as error:  # noqa: BLE001
            rows.append({"name": name, "kind": "import-error", "message": one_line(error)})
            continue
        if isinstance(value, type) and issubclass(value, DiffusionPipeline):
            kind = "pipeline"
        elif modular is not None and isinstance(value, type) and issubclass(value, modular):
            kind = "modular"
        elif type(value).__name__ == "DummyObject":
            kind = "placeholder"
        else:
            kind = "other"
        rows.append({"name": name, "kind": kind})
    _emit({"event": "exported", "pipelines": rows})
    return 0


# -- the parent: one worker subprocess at a time, restarted after a crash or a hang -----------------------------------


def worker_env(cache: Path | None = None) -> dict[str, str]:
    from runners.standins import offline_env, populate

    env = {**os.environ, **offline_env(populate(cache))}
    env.setdefault("OMP_NUM_THREADS", "1")
    env["TRANSFORMERS_VERBOSITY"] = "error"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                      env.get("PYTHONPATH")]))  # fmt: skip
    return env


def _lines(process: subprocess.Popen, deadline: Callable[[], float]) -> Iterator[dict | None]:
    """JSON events of the worker; None once `deadline()` (a monotonic time) passes with nothing new."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    buffer = b""
    while True:
        timeout = deadline() - time.monotonic()
        if timeout <= 0 or not selector.select(timeout):
            yield None
            return
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"{"):
                yield json.loads(line)


def _deadline(clock: dict[str, float], timeout_s: float) -> float:
    return clock["started"] + clock["grace"] + timeout_s


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])[-400:]


def stream(checkout: Path, pipelines: Sequence[str], codes: Sequence[str] | None = None, device: str = "cpu",
           dtype: str | None = None, offload: bool = False, threads: int = 1,
           timeout_s: float = PIPELINE_TIMEOUT_S, cache: Path | None = None) -> Iterator[dict]:  # fmt: skip
    """Run the worker over `pipelines` and yield its events; a pipeline whose process died or hung gets a
    `pipeline` event with status `crashed` or `timeout`, and the worker restarts on the rest."""
    env = worker_env(cache)
    checkout = Path(os.path.abspath(checkout))  # the worker runs in the checkout: a relative path would not resolve
    remaining = list(pipelines)
    while remaining:
        args = [sys.executable, "-m", "runners.checkout", "worker", "--source", str(checkout), "--device", device,
                "--threads", str(threads), *(["--dtype", dtype] if dtype else []), *(["--offload"] if offload else []),
                *(["--contract", ",".join(codes)] if codes else []), *remaining]  # fmt: skip
        with tempfile.NamedTemporaryFile(prefix="drbot-checkout-", suffix=".log", delete=False) as log:
            stderr_path = Path(log.name)
        current: str | None = None
        timed_out = False
        # until the first pipeline starts, the worker imports torch, diffusers and the checkout's test helpers
        clock = {"started": time.monotonic(), "grace": STARTUP_S}
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=str(checkout))
            try:
                for event in _lines(process, functools.partial(_deadline, clock, timeout_s)):
                    if event is None:
                        timed_out = True
                        break
                    if event["event"] == "start":
                        current = event["pipeline"]
                        clock.update(started=time.monotonic(), grace=0.0)
                    elif event["event"] == "pipeline":
                        remaining.remove(event["pipeline"])
                        current = None
                    yield event
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
        tail = _tail(stderr_path)
        stderr_path.unlink(missing_ok=True)
        if not remaining:
            break
        if clock["grace"]:  # the worker never got to a pipeline: the harness itself is broken, retrying cannot help
            message = "timed out starting" if timed_out else f"exited {process.returncode}"
            for pipeline in remaining:
                yield {"event": "pipeline", "pipeline": pipeline, "status": "crashed",
                       "message": f"the checkout worker {message} before its first pipeline: {tail}"}  # fmt: skip
            return
        failed = current or remaining[0]
        status = "timeout" if timed_out else "crashed"
        message = (f"no result within {timeout_s:.0f} s" if timed_out
                   else f"worker exited {process.returncode}: {tail}")  # fmt: skip
        remaining.remove(failed)
        yield {"event": "pipeline", "pipeline": failed, "status": status, "message": message}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runners.checkout")
    sub = parser.add_subparsers(dest="command", required=True)
    work = sub.add_parser("worker", help="(internal) run contracts on pipelines built from a checkout's fast tests")
    work.add_argument("pipelines", nargs="*")
    work.add_argument("--source", required=True, type=Path)
    work.add_argument("--contract")
    work.add_argument("--device", default="cpu")
    work.add_argument("--dtype")
    work.add_argument("--offload", action="store_true")
    work.add_argument("--threads", type=int, default=1)
    listing = sub.add_parser("exported", help="(internal) the checkout's exported pipeline classes, as JSON")
    listing.add_argument("--source", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.command == "exported":
        return exported_pipelines(args.source)
    codes = [c for c in (args.contract or "").split(",") if c]
    return worker(args.source, args.pipelines, codes or None, args.device, args.dtype, args.offload, args.threads)


if __name__ == "__main__":
    sys.exit(main())
