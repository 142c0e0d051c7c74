"""DRB604: a name a pipeline package exports lazily (`_import_structure`) that the named submodule does not define."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import libcst as cst

from analyzers.core import Invalid, Rule, Valid, dotted_name, resolve_relative
from analyzers.import_structure import package_exports, top_level_statements
from analyzers.matchers import target_names


def defined_names(module: cst.Module) -> set[str] | None:
    """Names a module defines at top level (classes, functions, assignments, imports, lazy exports).

    None when the module can define names that cannot be listed: a star import or a module `__getattr__`.
    """
    names: set[str] = set()
    for statement in top_level_statements(module.body):
        if isinstance(statement, (cst.ClassDef, cst.FunctionDef)):
            if statement.name.value == "__getattr__":
                return None
            names.add(statement.name.value)
        elif isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if isinstance(small, (cst.Import, cst.ImportFrom)):
                    if isinstance(small.names, cst.ImportStar):
                        return None
                    for alias in small.names:
                        if alias.asname is not None:
                            names.add(cst.ensure_type(alias.asname.name, cst.Name).value)
                        else:
                            names.add((dotted_name(alias.name) or "").split(".")[0])
                elif isinstance(small, (cst.Assign, cst.AnnAssign, cst.AugAssign)):
                    targets = [t.target for t in small.targets] if isinstance(small, cst.Assign) else [small.target]
                    for target in targets:
                        for node in target_names(target):
                            names.add(node)
    names.update(name for entry in package_exports(module) for name, _ in entry.names)
    return names


def _listed_names(module: cst.Module) -> Iterator[tuple[str, str, cst.BaseExpression]]:
    """(submodule, name, the name's string node) for every name the package's `_import_structure` lists."""
    for entry in package_exports(module):
        for name, node in entry.names:
            yield entry.submodule, name, node


def _plainly_defined(project, dotted: str, name: str) -> bool:
    """Whether the submodule's text plainly defines `name` (`class name`, `def name`, `name =`, an import).

    Parsing every submodule named in a package's `_import_structure` would parse most of diffusers a second
    time; the text answers almost every entry, and only the rest is parsed.
    """
    path = project.module_path(dotted)
    source = project.source(path) if path else None
    if not source:
        return False
    return name in _plain_names(source)


_DEFINED = re.compile(r"^[ \t]*(?:class|def|async[ \t]+def)[ \t]+(\w+)|^(\w+)[ \t]*[:=]", re.MULTILINE)
_IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+\S+[ \t]+)?import[ \t](.*)", re.MULTILINE)


@functools.lru_cache(maxsize=64)
def _plain_names(source: str) -> frozenset[str]:
    """Every name `source` plainly defines: a `class`/`def` at any depth, a top-level `name =` or `name:`, and every
    word of an import line after `import` (one pass over the text for all of a package's entries, where a pattern
    per name cost a compile and a search each)."""
    names = {match.group(1) or match.group(2) for match in _DEFINED.finditer(source)}
    for match in _IMPORT_LINE.finditer(source):
        names.update(re.findall(r"\w+", match.group(1)))
    return frozenset(names)


class LazyExportNotDefined(Rule):
    """
    ## What it does
    Checks the lazy export table of a package (`_import_structure` in `diffusers/pipelines/<family>/__init__.py`,
    `diffusers/models/__init__.py`, `diffusers/schedulers/__init__.py`, ...) for names that the named submodule
    does not define, or that point at a submodule that does not exist. Entries are read from the `_import_structure = {...}`
    literal, `_import_structure["mod"] = [...]` (or `+= [...]`), `.extend([...])`, `.append(...)` and
    `_import_structure.update({...})`, in every branch of the optional-dependency guards
    (`if not (is_torch_available() and is_transformers_available())`). A name counts as defined by a
    class, function, assignment or import at the submodule's top level (also inside `if`/`try`), or by
    the submodule's own `_import_structure` when it is a package, or by being a submodule itself. The
    package's own relative imports (the eager branch `if TYPE_CHECKING or DIFFUSERS_SLOW_IMPORT:` that
    mirrors the table, the dummy-object fallbacks of its optional-dependency guards) are held to the same
    check: they must name modules that exist, and names those modules define.

    ## Why is this bad?
    `_LazyModule` resolves the name only on first access, so the package imports fine and
    `from diffusers.pipelines.qwenimage import QwenImagePriorReduxPipelineOutput` fails later with an
    `AttributeError`/`ModuleNotFoundError`; `dir()` and docs list an API that does not exist. Meta issue
    #13656 lists broken lazy imports and output class exports under "Output and Cleanup Contracts Diverge".

    ## Example
    ```python
    _import_structure = {"pipeline_output": ["QwenImagePipelineOutput", "QwenImagePriorReduxPipelineOutput"]}
    ...
    else:
        _import_structure["modeling_qwenimage"] = ["ReduxImageEncoder"]
    ```

    Use instead:
    ```python
    _import_structure = {"pipeline_output": ["QwenImagePipelineOutput"]}
    ```

    ## Known problems
    A submodule with a star import or a module-level `__getattr__` is trusted: its names cannot be listed.
    Names added to the package with `setattr` or through `_dummy_objects` are not export-table entries and
    are not checked. Absolute imports in the eager branch, and `from . import submodule`, are not checked.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - huggingface/diffusers#13581 (qwenimage exports `QwenImagePriorReduxPipelineOutput` / `ReduxImageEncoder`)
    - huggingface/diffusers#14147 (fix proposal: drop the bogus exports)
    - huggingface/diffusers#8491 (`models/__init__.py` still exported a module that had moved)
    - huggingface/diffusers#4370, #7712 (eager imports of dummy modules that do not exist)
    """

    code = "DRB604"
    pattern = 6
    severity = "error"
    message = (
        "`{name}` is exported lazily from `{module}`, which does not define it; remove it from "
        "`_import_structure` or define it in `{module}`."
    )
    message_missing = (
        "`{name}` is exported lazily from `{module}`, a module that does not exist; remove the entry from "
        "`_import_structure` or add the module."
    )
    message_eager = (
        "`{name}` is imported from `{module}` by this package `__init__`, but `{module}` does not define it, so the "
        "import fails whenever that branch runs (slow imports, type checkers); import it from the module that "
        "defines it."
    )
    message_eager_missing = (
        "`{module}` is imported by this package `__init__` but does not exist, so the import fails whenever that "
        "branch runs (slow imports, a missing optional dependency); point the import at an existing module."
    )
    REQUIRES_ANY = ("_import_structure", "from .")
    PATHS = ("/__init__.py",)  # only a package's `__init__` exports (`check` looks at nothing else)

    _INIT = "diffusers/pipelines/qwenimage/__init__.py"
    _OUTPUT = "diffusers/pipelines/qwenimage/pipeline_output.py"
    VALID = [
        Valid(
            """
            from typing import TYPE_CHECKING
            from ...utils import OptionalDependencyNotAvailable, is_torch_available, is_transformers_available

            _dummy_objects = {}
            _import_structure = {"pipeline_output": ["QwenImagePipelineOutput", "RESOLUTIONS"]}
            try:
                if not (is_transformers_available() and is_torch_available()):
                    raise OptionalDependencyNotAvailable()
            except OptionalDependencyNotAvailable:
                from ...utils import dummy_torch_and_transformers_objects
                _dummy_objects.update(get_objects_from_module(dummy_torch_and_transformers_objects))
            else:
                _import_structure["pipeline_qwenimage"] = ["QwenImagePipeline", "calculate_shift"]
                _import_structure["pipeline_qwenimage"].extend(["retrieve_timesteps", "XLA_AVAILABLE", "Alias"])
            """,
            path=_INIT,
            files={
                _OUTPUT: """
                    from dataclasses import dataclass
                    from ...utils import BaseOutput

                    RESOLUTIONS, _ = [1024, 768], None

                    @dataclass
                    class QwenImagePipelineOutput(BaseOutput):
                        images: list
                """,
                "diffusers/pipelines/qwenimage/pipeline_qwenimage.py": """
                    from ...schedulers import retrieve_timesteps as retrieve_timesteps
                    from ..flux.pipeline_flux import calculate_shift
                    try:
                        import torch_xla
                        XLA_AVAILABLE = True
                    except ImportError:
                        XLA_AVAILABLE = False

                    class QwenImagePipeline(DiffusionPipeline):
                        pass

                    Alias = QwenImagePipeline
                """,
            },
        ),
        Valid(
            # a star import or a module `__getattr__` can define anything; a subpackage's own exports count
            """
            _import_structure = {"pipeline_stars": ["Anything"], "sub": ["SubPipeline"]}
            """,
            path=_INIT,
            files={
                "diffusers/pipelines/qwenimage/pipeline_stars.py": "from .other import *\n",
                "diffusers/pipelines/qwenimage/sub/__init__.py": '_import_structure = {"pipeline_sub": ["SubPipeline"]}\n',
            },
        ),
        Valid(
            # the eager branch imports what the submodules define, and dummies from a module that exists
            """
            from typing import TYPE_CHECKING
            from ..utils import DIFFUSERS_SLOW_IMPORT, OptionalDependencyNotAvailable, is_torch_available

            _import_structure = {"vae_tiny": ["TinyVAE"]}
            if TYPE_CHECKING or DIFFUSERS_SLOW_IMPORT:
                try:
                    if not is_torch_available():
                        raise OptionalDependencyNotAvailable()
                except OptionalDependencyNotAvailable:
                    from ..utils.dummy_torch_objects import *
                else:
                    from .vae_tiny import TinyVAE
                    from .blocks import down
            """,
            path="diffusers/models/__init__.py",
            files={
                "diffusers/models/vae_tiny.py": "class TinyVAE:\n    pass\n",
                "diffusers/models/blocks/__init__.py": "",
                "diffusers/models/blocks/down.py": "X = 1\n",
                "diffusers/utils/dummy_torch_objects.py": "class TinyVAE:\n    pass\n",
            },
        ),
    ]
    INVALID = [
        Invalid(
            """
            _import_structure = {"pipeline_output": ["QwenImagePipelineOutput", "QwenImagePriorReduxPipelineOutput"]}
            """,
            path=_INIT,
            files={
                _OUTPUT: """
                    class QwenImagePipelineOutput(BaseOutput):
                        images: list
                """
            },
            message=(
                "`QwenImagePriorReduxPipelineOutput` is exported lazily from `pipeline_output`, which does not "
                "define it; remove it from `_import_structure` or define it in `pipeline_output`."
            ),
        ),
        Invalid(
            """
            _import_structure = {}
            try:
                if not (is_transformers_available() and is_torch_available()):
                    raise OptionalDependencyNotAvailable()
            except OptionalDependencyNotAvailable:
                _dummy_objects.update(get_objects_from_module(dummy_torch_and_transformers_objects))
            else:
                _import_structure["modeling_qwenimage"] = ["ReduxImageEncoder"]
            """,
            path=_INIT,
            message=(
                "`ReduxImageEncoder` is exported lazily from `modeling_qwenimage`, a module that does not exist; "
                "remove the entry from `_import_structure` or add the module."
            ),
        ),
        Invalid(
            # a module moved into a subpackage, the models table still names the old place
            """
            _import_structure = {"dual_blocks": ["DualBlocksModel"]}
            """,
            path="diffusers/models/__init__.py",
            files={"diffusers/models/transformers/dual_blocks.py": "class DualBlocksModel:\n    pass\n"},
            message=(
                "`DualBlocksModel` is exported lazily from `dual_blocks`, a module that does not exist; remove the "
                "entry from `_import_structure` or add the module."
            ),
        ),
        Invalid(
            # the dummy module of the eager branch is misspelt
            """
            from typing import TYPE_CHECKING
            _import_structure = {}
            if TYPE_CHECKING:
                try:
                    if not is_torch_available():
                        raise OptionalDependencyNotAvailable()
                except OptionalDependencyNotAvailable:
                    from ...utils.dummy_torch_and_and_objects import *
            """,
            path="diffusers/pipelines/foo/__init__.py",
            files={"diffusers/utils/__init__.py": "", "diffusers/utils/dummy_torch_objects.py": "X = 1\n"},
            message=(
                "`...utils.dummy_torch_and_and_objects` is imported by this package `__init__` but does not exist, so the "
                "import fails whenever that branch runs (slow imports, a missing optional dependency); point the "
                "import at an existing module."
            ),
        ),
        Invalid(
            """
            from typing import TYPE_CHECKING
            _import_structure = {"pipeline_foo": ["FooPipeline"]}
            if TYPE_CHECKING:
                from .pipeline_foo import FooPipeline, FooPipelineOutput
            """,
            path="diffusers/pipelines/foo/__init__.py",
            files={"diffusers/pipelines/foo/pipeline_foo.py": "class FooPipeline:\n    pass\n"},
            message=(
                "`FooPipelineOutput` is imported from `.pipeline_foo` by this package `__init__`, but `.pipeline_foo` does "
                "not define it, so the import fails whenever that branch runs (slow imports, type checkers); import "
                "it from the module that defines it."
            ),
        ),
    ]

    def check(self) -> None:
        if not self.context.is_package:
            return
        project = self.context.project
        package = self.context.module_name
        cache: dict[str, set[str] | None] = {}
        seen: set[tuple[str, str]] = set()
        for submodule, name, node in _listed_names(self.context.module):
            if (submodule, name) in seen:
                continue
            seen.add((submodule, name))
            dotted = resolve_relative(package, True, 1, submodule)
            if _plainly_defined(project, dotted, name):
                continue
            if dotted not in cache:
                if project.module_path(dotted) is None:
                    cache[dotted] = set()  # no such module
                else:
                    parsed = project.module(dotted)
                    cache[dotted] = None if parsed is None else defined_names(parsed)
            names = cache[dotted]
            if names is None or name in names or project.module_path(f"{dotted}.{name}") is not None:
                continue  # trusted, defined, or a submodule (`"utils": ["logging"]`)
            if project.module_path(dotted) is None:
                message = self.message_missing.format(name=name, module=submodule)
            else:
                message = self.message.format(name=name, module=submodule)
            self.report(node, message, symbol=name, scope="_import_structure")
        for statement in top_level_statements(self.context.module.body):
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    if isinstance(small, cst.ImportFrom) and small.relative and small.module is not None:
                        self._check_eager(small, cache)

    def _check_eager(self, node: cst.ImportFrom, cache: dict[str, set[str] | None]) -> None:
        """A relative import of the package `__init__` (its eager branch, its dummy fallbacks) that cannot succeed."""
        project = self.context.project
        relative = "." * len(node.relative) + (dotted_name(node.module) or "")
        dotted = resolve_relative(self.context.module_name, True, len(node.relative), dotted_name(node.module))
        if project.module_path(dotted) is None:
            parent, top = dotted.rpartition(".")[0], dotted.partition(".")[0]
            if project.module_path(parent) is None and project.module_path(top) is None:
                return  # a partial view (neither the parent package nor the top package): cannot tell
            message = self.message_eager_missing.format(module=relative)
            self.report(node, message, symbol=relative, scope="imports")
            return
        if isinstance(node.names, cst.ImportStar):
            return
        for alias in node.names:
            name = dotted_name(alias.name) or ""
            if not name or _plainly_defined(project, dotted, name):
                continue
            if dotted not in cache:
                parsed = project.module(dotted)
                cache[dotted] = None if parsed is None else defined_names(parsed)
            names = cache[dotted]
            if names is None or name in names or project.module_path(f"{dotted}.{name}") is not None:
                continue
            message = self.message_eager.format(name=name, module=relative)
            self.report(alias, message, symbol=name, scope="imports")
