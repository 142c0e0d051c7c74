"""DRB216: a loading function takes `force_download` but returns its cached files early without asking it."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import names_read, parameters, target_names


FORCE_DOWNLOAD = "force_download"
#: calls that fetch files (and take `force_download`), which a cache hit is meant to spare
DOWNLOADERS = frozenset({"hf_hub_download", "snapshot_download", "cached_download", "_get_model_file", "cached_file"})


def _takes_force_download(function: cst.FunctionDef) -> bool:
    """Whether the function has a `force_download` parameter or binds it (`kwargs.pop("force_download", False)`)."""
    if any(p.name.value == FORCE_DOWNLOAD for p in parameters(function)):
        return True
    return any(
        FORCE_DOWNLOAD in target_names(target.target)
        for assign in walk.own_nodes(function, cst.Assign)
        for target in assign.targets
    )


def _cache_hit(test: cst.BaseExpression) -> bool:
    """Whether a test asks if files are in the cache: it reads a name that says so (`pipeline_is_cached`,
    `cache_dir`). A test of the caller's own path (`os.path.isfile(os.path.join(repo_or_dir, name))`) is about a
    local folder, which `force_download` does not concern."""
    return any("cache" in name.value.lower() for name in names_read(test))


def _returns(body: cst.BaseSuite) -> bool:
    statements = body.body if isinstance(body, cst.IndentedBlock) else ()
    return (
        bool(statements)
        and isinstance(statements[-1], cst.SimpleStatementLine)
        and any(isinstance(small, cst.Return) for small in statements[-1].body)
    )


class CacheHitReturnIgnoresForceDownload(Rule):
    """
    ## What it does
    Checks loading functions that take `force_download` and download files (`snapshot_download`,
    `hf_hub_download`, ...) for an early `return` under a test of whether the files are already cached (a
    `..._cached` flag, `os.path.exists(...)` of a path under `cache_dir`) that does not also read `force_download`.

    ## Why is this bad?
    `force_download=True` asks for fresh files: the cached ones may be stale or corrupt. A cache hit that
    returns before the download makes the option a no-op exactly when it matters, since the files are
    cached whenever the user needs to force them. diffusers shipped this in `DiffusionPipeline.download`,
    which returned the cached snapshot whenever every expected file was present.

    ## Example
    ```python
    def download(cls, repo_id, **kwargs):
        force_download = kwargs.pop("force_download", False)
        ...
        if pipeline_is_cached:
            return snapshot_folder
        return snapshot_download(repo_id, force_download=force_download)
    ```

    Use instead:
    ```python
        if pipeline_is_cached and not force_download:
            return snapshot_folder
    ```

    ## Known problems
    Only a parameter or local named `force_download` is followed, and only a `return` that ends the block of an
    `if` in the function itself; the cache test is recognised by its spelling (a name that says `cache`), so a
    test of a local folder the caller passed is not one. An `if` whose test, or an
    enclosing test, reads `force_download` counts as asking it.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#4036 (`DiffusionPipeline.download`: `force_download` ignored for a cached pipeline)
    """

    code = "DRB216"
    pattern = 2
    severity = "warning"
    message = (
        "this `return` serves the cached files when `{test}` although the function takes `force_download`, so "
        "`force_download=True` never downloads them again; add `and not force_download` to the test."
    )
    REQUIRES_ANY = (FORCE_DOWNLOAD,)

    VALID = [
        Valid(
            # the cache hit asks `force_download`, directly or through an enclosing test
            """
            def download(repo_id, force_download=False, local_files_only=False):
                folder = Path(cache_dir) / repo_id
                is_cached = all((folder / f).is_file() for f in files)
                if is_cached and not force_download:
                    return folder
                if not force_download:
                    if os.path.exists(folder / "model.bin"):
                        return folder
                return snapshot_download(repo_id, force_download=force_download)
            """
        ),
        Valid(
            # no download after it: a function that does not take `force_download`, or only reads the cache
            """
            def download(repo_id, **kwargs):
                if os.path.isdir(repo_id):
                    return repo_id
                return snapshot_download(repo_id, **kwargs)

            def cached_path(repo_id, force_download=False):
                if os.path.exists(repo_id):
                    return repo_id
                return None

            def get_model_file(path, weights_name, cache_dir=None, force_download=False):
                if os.path.isfile(os.path.join(path, weights_name)):
                    return os.path.join(path, weights_name)
                return hf_hub_download(path, weights_name, cache_dir=cache_dir, force_download=force_download)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class DiffusionPipeline:
                @classmethod
                def download(cls, repo_id, **kwargs):
                    force_download = kwargs.pop("force_download", False)
                    config_file = hf_hub_download(repo_id, "model_index.json", force_download=force_download)
                    folder = Path(config_file).parent
                    pipeline_is_cached = all((folder / f).is_file() for f in expected_files)
                    if pipeline_is_cached:
                        return folder
                    return snapshot_download(repo_id, force_download=force_download)
            """,
            message=(
                "this `return` serves the cached files when `pipeline_is_cached` although the function takes "
                "`force_download`, so `force_download=True` never downloads them again; add `and not force_download` "
                "to the test."
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if isinstance(function, cst.FunctionDef) and _takes_force_download(function):
                self._check_function(definition.qualname, function)

    def _check_function(self, scope: str, function: cst.FunctionDef) -> None:
        downloads = [
            call
            for call in walk.own_nodes(function, cst.Call)
            if (dotted_name(call.func) or "").rpartition(".")[2] in DOWNLOADERS
        ]
        if not downloads:
            return
        asked: set[int] = set()
        branches = walk.own_nodes(function, cst.If)
        for branch in branches:
            if any(n.value == FORCE_DOWNLOAD for n in names_read(branch.test)):
                asked.update(id(n) for n in walk.walk(branch))
        for branch in branches:
            if id(branch) in asked or not _cache_hit(branch.test) or not _returns(branch.body):
                continue
            span = walk.span(branch)
            later = [c for c in downloads if (s := walk.span(c)) is not None and span is not None and s[0] >= span[1]]
            if not later:
                continue  # nothing is downloaded after the cache hit: a lookup, not a skipped download
            test = self.context.module.code_for_node(branch.test)
            return_line = branch.body.body[-1]
            self.report(return_line, self.message.format(test=test), symbol=FORCE_DOWNLOAD, scope=scope)
