"""DRB710: an offline-mode guard raises before the function looks for the path on the local disk."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name


#: names that say the caller wants no network access
OFFLINE_NAMES = ("local_files_only", "HF_HUB_OFFLINE")
OFFLINE_CALLS = frozenset({"is_offline_mode", "huggingface_hub.constants.is_offline_mode"})
#: tests of whether a path exists on the local disk
LOCAL_TESTS = frozenset({"os.path.isdir", "os.path.isfile", "os.path.exists", "isdir", "isfile"})


def _offline_names(test: cst.BaseExpression) -> list[str]:
    """The offline switches `test` reads, in the order of `OFFLINE_NAMES` (`is_offline_mode()` as HF_HUB_OFFLINE)."""
    found: set[str] = set()
    for node in walk.walk(test):
        if isinstance(node, cst.Name) and node.value in OFFLINE_NAMES:
            found.add(node.value)
        elif isinstance(node, cst.Attribute) and node.attr.value in OFFLINE_NAMES:
            found.add(node.attr.value)
        elif isinstance(node, cst.Call) and (dotted_name(node.func) or "").rpartition(".")[2] in OFFLINE_CALLS:
            found.add("HF_HUB_OFFLINE")
    return [name for name in OFFLINE_NAMES if name in found]


def _raises_at_once(branch: cst.If) -> bool:
    body = branch.body.body if isinstance(branch.body, cst.IndentedBlock) else ()
    return bool(body) and isinstance(body[0], cst.SimpleStatementLine) and isinstance(body[0].body[0], cst.Raise)


class OfflineGuardBeforeLocalPath(Rule):
    """
    ## What it does
    Checks for functions that raise when offline mode is on (`if local_files_only or HF_HUB_OFFLINE: raise`)
    before they test whether the path they were given is on the local disk (`os.path.isdir(path)`,
    `os.path.isfile(path)`, `os.path.exists(path)`).

    ## Why is this bad?
    Offline mode forbids the network, not local files. A guard placed ahead of the local-path branch rejects
    exactly the inputs that need no network: loading LoRA weights from a local folder with
    `local_files_only=True` (or `HF_HUB_OFFLINE=1`) failed with "you must specify a `weight_name`" although
    the folder could be listed. The guard belongs in the branch that would reach the Hub.

    ## Example
    ```python
    def _best_guess_weight_name(path, local_files_only=False):
        if local_files_only or HF_HUB_OFFLINE:
            raise ValueError("When using the offline mode, you must specify a `weight_name`.")
        if os.path.isdir(path):
            files = os.listdir(path)
        else:
            files = [f.rfilename for f in model_info(path).siblings]
    ```

    Use instead:
    ```python
        if os.path.isdir(path):
            files = os.listdir(path)
        elif local_files_only or HF_HUB_OFFLINE:
            raise ValueError("When using the offline mode, you must specify a `weight_name`.")
        else:
            files = [f.rfilename for f in model_info(path).siblings]
    ```

    ## Known problems
    Only a guard whose first statement is `raise` counts, and only local tests written after it in the same
    function; a guard that is right to refuse local paths too (it needs a remote-only feature) is reported.

    ## References
    - huggingface/diffusers#13656, pattern 7
    - huggingface/diffusers#14204 (LoRA loading: offline mode rejected local folders)
    """

    code = "DRB710"
    pattern = 7
    severity = "warning"
    message = (
        "this guard raises whenever `{name}` is set, before `{local}` is tested, so offline mode also rejects "
        "a local path that needs no network; raise only in the branch that would reach the Hub."
    )
    REQUIRES_ANY = OFFLINE_NAMES

    VALID = [
        Valid(
            """
            import os

            def _best_guess_weight_name(path, local_files_only=False):
                if os.path.isfile(path):
                    return None
                elif os.path.isdir(path):
                    files = os.listdir(path)
                elif local_files_only or HF_HUB_OFFLINE:
                    raise ValueError("When using the offline mode, you must specify a `weight_name`.")
                else:
                    files = [f.rfilename for f in model_info(path).siblings]
                return files
            """
        ),
        Valid(
            # no local-path test after the guard
            """
            def fetch_config(url, local_files_only=False):
                if local_files_only:
                    raise ValueError("a URL needs the network")
                return download(url)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import os

            class LoraLoaderMixin:
                @classmethod
                def _best_guess_weight_name(cls, path, file_extension=".safetensors", local_files_only=False):
                    if local_files_only or HF_HUB_OFFLINE:
                        raise ValueError("When using the offline mode, you must specify a `weight_name`.")
                    if os.path.isfile(path):
                        return None
                    elif os.path.isdir(path):
                        files = [f for f in os.listdir(path) if f.endswith(file_extension)]
                    else:
                        files = [f.rfilename for f in model_info(path).siblings]
                    return files
            """,
            path="diffusers/loaders/lora_base.py",
            message=(
                "this guard raises whenever `local_files_only` is set, before `os.path.isfile(path)` is tested, so "
                "offline mode also rejects a local path that needs no network; raise only in the branch that would "
                "reach the Hub."
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if isinstance(function, cst.FunctionDef):
                self._check_function(definition.qualname, function)

    def _check_function(self, scope: str, function: cst.FunctionDef) -> None:
        guards = [b for b in walk.own_nodes(function, cst.If) if _offline_names(b.test) and _raises_at_once(b)]
        if not guards:
            return
        order = {id(node): i for i, node in enumerate(walk.walk(function.body))}
        local_tests = [c for c in walk.own_nodes(function, cst.Call) if (dotted_name(c.func) or "") in LOCAL_TESTS]
        tested_in_ifs = {id(n) for b in walk.own_nodes(function, cst.If) for n in walk.walk(b.test)}
        local_tests = [c for c in local_tests if id(c) in tested_in_ifs]
        for guard in guards:
            later = [c for c in local_tests if order.get(id(c), -1) > order.get(id(guard), -1)]
            if not later:
                continue
            local = " ".join(cst.Module([]).code_for_node(later[0]).split())
            name = _offline_names(guard.test)[0]
            self.report(guard.test, self.message.format(name=name, local=local), symbol=name, scope=scope)
