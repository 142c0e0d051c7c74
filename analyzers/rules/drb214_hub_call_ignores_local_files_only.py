"""DRB214: a function takes `local_files_only`, but one of its Hub calls goes to the network regardless."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import keyword, names_read, parameters


LOCAL_FILES_ONLY = "local_files_only"
#: `huggingface_hub` functions (and `HfApi` methods) that always ask the Hub and take no `local_files_only`
NETWORK_ONLY = frozenset(
    {
        "model_info",
        "repo_info",
        "dataset_info",
        "list_repo_files",
        "list_repo_refs",
        "list_repo_tree",
        "list_repo_commits",
        "get_hf_file_metadata",
        "file_exists",
        "repo_exists",
    }
)
#: download helpers that fall back on the cache when given `local_files_only=True`
DOWNLOADERS = frozenset({"hf_hub_download", "snapshot_download", "cached_download", "_get_model_file"})


def _reads_flag(test: cst.BaseExpression) -> bool:
    return any(name.value == LOCAL_FILES_ONLY for name in names_read(test))


def _exits(body: cst.BaseSuite) -> bool:
    """Whether a block ends in `return` or `raise` (an early exit)."""
    statements = body.body if isinstance(body, cst.IndentedBlock) else ()
    if not statements:
        return False
    last = statements[-1]
    return isinstance(last, cst.SimpleStatementLine) and any(
        isinstance(small, (cst.Return, cst.Raise)) for small in last.body
    )


def _guarded(function: cst.FunctionDef) -> tuple[set[int], list[int]]:
    """(ids of nodes under an `if` or conditional expression that tests `local_files_only`, either branch;
    start offsets of `if local_files_only: raise/return` exits, by position)."""
    guarded: set[int] = set()
    exits: list[int] = []
    for branch in walk.own_nodes(function, cst.If):
        if not _reads_flag(branch.test):
            continue
        guarded.update(id(n) for n in walk.walk(branch.body))
        if branch.orelse is not None:
            guarded.update(id(n) for n in walk.walk(branch.orelse))
        if _exits(branch.body):
            position = walk.span(branch)
            if position is not None:
                exits.append(position[1])
    for expression in walk.own_nodes(function, cst.IfExp):
        if _reads_flag(expression.test):
            guarded.update(id(n) for n in walk.walk(expression))
    return guarded, exits


class HubCallIgnoresLocalFilesOnly(Rule):
    """
    ## What it does
    Checks functions that take a `local_files_only` parameter for a call that reaches the Hugging Face Hub
    whatever its value: a `huggingface_hub` query that has no offline mode (`model_info(...)`,
    `list_repo_files(...)`, `get_hf_file_metadata(...)`, ...) outside any test of `local_files_only`, or a
    download helper (`hf_hub_download`, `snapshot_download`, `_get_model_file`) called without
    `local_files_only=`.

    ## Why is this bad?
    `local_files_only=True` is the caller's promise that no network access is needed: the files are in
    the cache or on disk. A single Hub query on the loading path breaks that promise, so offline or
    air-gapped loading fails with a connection error (or stalls on a timeout) although every file is
    present. diffusers shipped this in the sharded-checkpoint loader, whose `model_info(...)` shard check
    ran even with `local_files_only=True`.

    ## Example
    ```python
    def get_shard_files(repo_id, index, revision=None, token=None, local_files_only=False):
        info = model_info(repo_id, revision=revision, token=token)
        missing = [f for f in index if f not in {s.rfilename for s in info.siblings}]
        return snapshot_download(repo_id, local_files_only=local_files_only, allow_patterns=index)
    ```

    Use instead:
    ```python
    def get_shard_files(repo_id, index, revision=None, token=None, local_files_only=False):
        if not local_files_only:
            info = model_info(repo_id, revision=revision, token=token)
            missing = [f for f in index if f not in {s.rfilename for s in info.siblings}]
        return snapshot_download(repo_id, local_files_only=local_files_only, allow_patterns=index)
    ```

    ## Known problems
    Only a parameter named `local_files_only` is followed, and only calls written in the function itself.
    A query under any `if` that reads `local_files_only` (either branch), or after an `if local_files_only:`
    that returns or raises, counts as guarded; a query that the environment's `HF_HUB_OFFLINE` alone
    guards is reported.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#12005 (`_get_checkpoint_shard_files`: `model_info` ignored `local_files_only`)
    """

    code = "DRB214"
    pattern = 2
    severity = "warning"
    message = "`{call}` {what} although this function takes `local_files_only`, so offline loading fails; {remedy}."
    REQUIRES_ANY = (LOCAL_FILES_ONLY,)

    VALID = [
        Valid(
            """
            from huggingface_hub import model_info, snapshot_download

            def get_shard_files(repo_id, shards, revision=None, token=None, local_files_only=False, **kwargs):
                if not local_files_only:
                    info = model_info(repo_id, revision=revision, token=token)
                    assert all(s in {x.rfilename for x in info.siblings} for s in shards)
                commit = model_info(repo_id).sha if not local_files_only else None
                kwargs_path = snapshot_download(repo_id, **kwargs)
                return snapshot_download(repo_id, local_files_only=local_files_only, allow_patterns=shards), commit
            """,
            path="diffusers/utils/hub_utils.py",
        ),
        Valid(
            # an early exit for offline mode guards what follows; a function without the parameter is not held
            """
            from huggingface_hub import model_info

            def best_guess_weight_name(repo_id, local_files_only=False):
                if local_files_only:
                    raise ValueError("offline: pass `weight_name`")
                return [f.rfilename for f in model_info(repo_id).siblings]

            def list_weights(repo_id):
                return [f.rfilename for f in model_info(repo_id).siblings]
            """,
            path="diffusers/loaders/lora_base.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            from huggingface_hub import model_info, snapshot_download

            def get_shard_files(repo_id, shards, revision=None, token=None, local_files_only=False):
                info = model_info(repo_id, revision=revision, token=token)
                assert all(s in {x.rfilename for x in info.siblings} for s in shards)
                return snapshot_download(repo_id, local_files_only=local_files_only, allow_patterns=shards)
            """,
            path="diffusers/utils/hub_utils.py",
            message=(
                "`model_info(...)` queries the Hub although this function takes `local_files_only`, so offline "
                "loading fails; skip it under `if not local_files_only:`."
            ),
        ),
        Invalid(
            """
            from huggingface_hub import hf_hub_download

            def load_config(repo_id, filename, revision=None, local_files_only=False):
                if os.path.isdir(repo_id):
                    return os.path.join(repo_id, filename)
                return hf_hub_download(repo_id, filename, revision=revision)
            """,
            path="diffusers/loaders/single_file_utils.py",
            message=(
                "`hf_hub_download(...)` is called without `local_files_only=` although this function takes "
                "`local_files_only`, so offline loading fails; pass `local_files_only=local_files_only`."
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            if LOCAL_FILES_ONLY not in {p.name.value for p in parameters(function)}:
                continue
            guarded: tuple[set[int], list[int]] | None = None
            for call in walk.own_nodes(function, cst.Call):
                found = self._hub_call(call)
                if found is None:
                    continue
                if guarded is None:
                    guarded = _guarded(function)
                inside, exits = guarded
                if id(call) in inside:
                    continue
                position = walk.span(call)
                if position is not None and any(end <= position[0] for end in exits):
                    continue
                name, what, remedy = found
                message = self.message.format(call=f"{name}(...)", what=what, remedy=remedy)
                self.report(call, message, symbol=LOCAL_FILES_ONLY, scope=definition.qualname)

    def _hub_call(self, call: cst.Call) -> tuple[str, str, str] | None:
        """(name, what it does, remedy) for a Hub call that ignores `local_files_only`; None otherwise."""
        name = dotted_name(call.func)
        if name is None:
            return None
        head, _, last = name.rpartition(".")
        if head.split(".")[0] in {"self", "cls"}:
            return None  # a method of the class's own, not the Hub client's
        if last in NETWORK_ONLY:
            return last, "queries the Hub", "skip it under `if not local_files_only:`"
        if last in DOWNLOADERS:
            if any(arg.star == "**" for arg in call.args) or keyword(call, LOCAL_FILES_ONLY) is not None:
                return None
            return (
                last,
                "is called without `local_files_only=`",
                "pass `local_files_only=local_files_only`",
            )
        return None
