"""DRB215: a loading function forwards its Hub options to its downloads, but drops one from a sibling call."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import has_var_keyword, names_read, parameters, string_value, target_names


#: Hub options a loading call forwards by name (`token=token`); they tell a call where and how to fetch
HUB_OPTIONS = frozenset(
    {"token", "use_auth_token", "revision", "cache_dir", "proxies", "local_files_only", "force_download", "subfolder"}
)
#: the options whose omission is reported: they hold for every repository the function fetches from (the user's
#: credentials, cache and offline mode), unlike `revision` or `subfolder`, which name one repository's files
CHECKED = ("token", "cache_dir", "local_files_only")
#: `huggingface_hub` queries that take only `revision`/`token`; DRB214 owns their `local_files_only`
QUERIES = frozenset(
    {"model_info", "repo_info", "list_repo_files", "get_hf_file_metadata", "file_exists", "repo_exists"}
)
#: a call passing at least this many options (two of them forwarded by name) is a loading call meant to get them all
MIN_PASSED = 3
#: callees that fetch a repository's files: held to the options of a sibling fetching from the same repository
#: even when they pass fewer than MIN_PASSED options (none at all, say)
LOADERS = frozenset(
    {
        "from_pretrained",
        "load_config",
        "hf_hub_download",
        "snapshot_download",
        "_get_model_file",
        "get_class_from_dynamic_module",
    }
)
#: keywords that name the repository a call fetches from
REPO_KEYWORDS = ("repo_id", "pretrained_model_name_or_path", "pretrained_model_name_or_path_or_dict")


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _forwarded(call: cst.Call, harmless: frozenset[str] = frozenset()) -> tuple[set[str], set[str]] | None:
    """(options the call passes, options it forwards as `name=name`); None for a call that splats `**kwargs`,
    unless the splatted dict is one of `harmless` (it holds no Hub option)."""
    if any(arg.star == "*" or (arg.star == "**" and _splat_name(arg) not in harmless) for arg in call.args):
        return None
    passed: set[str] = set()
    same: set[str] = set()
    for arg in call.args:
        if arg.keyword is None or arg.keyword.value not in HUB_OPTIONS:
            continue
        passed.add(arg.keyword.value)
        if isinstance(arg.value, cst.Name) and arg.value.value == arg.keyword.value:
            same.add(arg.keyword.value)
    return passed, same


def _repo(call: cst.Call) -> cst.BaseExpression | None:
    """The repository argument of a loading call: a repo keyword, else the first positional argument."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value in REPO_KEYWORDS:
            return arg.value
    positional = [a for a in call.args if a.keyword is None and not a.star]
    return positional[0].value if positional else None


def _hub_dicts(function: cst.FunctionDef) -> dict[str, set[str]]:
    """Names of dicts of Hub options the function builds (`hub_kwargs = {n: kwargs.pop(n) for n in names}`),
    each with the CHECKED options it may hold: those named as strings in its value or in the value of a name
    the value reads (`names = ["cache_dir", "token", ...]`)."""
    strings: dict[str, set[str]] = {}
    values: dict[str, list[cst.BaseExpression]] = {}
    for assign in walk.own_nodes(function, cst.Assign):
        for target in assign.targets:
            for name in target_names(target.target):
                values.setdefault(name, []).append(assign.value)
    for name, assigned in values.items():
        found: set[str] = set()
        for value in assigned:
            found |= {s for s in map(string_value, walk.nodes(value, cst.SimpleString)) if s in CHECKED}
        strings[name] = found
    dicts: dict[str, set[str]] = {}
    for name, assigned in values.items():
        found = set(strings[name])
        for value in assigned:
            for read in names_read(value):
                if read.value != name:
                    found |= strings.get(read.value, set())
        if found:
            dicts[name] = found
    return dicts


def _splat_name(arg: cst.Arg) -> str | None:
    return arg.value.value if isinstance(arg.value, cst.Name) else None


def _harmless_dicts(function: cst.FunctionDef) -> frozenset[str]:
    """Names the function binds only to dict literals with string keys that are no Hub option, or a choice
    between such literals: `dtype_kwarg = {"dtype": d} if new else {"torch_dtype": d}`."""

    def literal(value: cst.BaseExpression) -> bool:
        if isinstance(value, cst.IfExp):
            return literal(value.body) and literal(value.orelse)
        if not isinstance(value, cst.Dict):
            return False
        for element in value.elements:
            key = string_value(element.key) if isinstance(element, cst.DictElement) else None
            if key is None or key in HUB_OPTIONS:
                return False
        return True

    verdicts: dict[str, bool] = {}
    # a dict filled in later (`d["token"] = token`, `d.update(...)`) may hold anything
    for subscript in walk.own_nodes(function, cst.Subscript):
        if isinstance(subscript.value, cst.Name):
            verdicts[subscript.value.value] = False
    for attribute in walk.own_nodes(function, cst.Attribute):
        if isinstance(attribute.value, cst.Name) and attribute.attr.value in ("update", "setdefault", "__setitem__"):
            verdicts[attribute.value.value] = False
    for assign in walk.own_nodes(function, cst.Assign):
        for target in assign.targets:
            for name in target_names(target.target):
                ok = isinstance(target.target, cst.Name) and literal(assign.value)
                verdicts[name] = verdicts.get(name, True) and ok
    return frozenset(name for name, ok in verdicts.items() if ok)


def _constant_repo(call: cst.Call) -> bool:
    """Whether the call fetches from a module constant (`COMMUNITY_PIPELINES_MIRROR_ID`), not the caller's repo."""
    repo = _repo(call)
    if isinstance(repo, cst.SimpleString):
        return True
    name = dotted_name(repo) if repo is not None else None
    return name is not None and name.rpartition(".")[2].isupper()


def _tested_in(function: cst.FunctionDef, option: str) -> set[int]:
    """Ids of the nodes under an `if` (or conditional expression) whose test reads `option`."""
    found: set[int] = set()
    branches: list[cst.If | cst.IfExp] = [*walk.own_nodes(function, cst.If), *walk.own_nodes(function, cst.IfExp)]
    for branch in branches:
        if any(n.value == option for n in names_read(branch.test)):
            found.update(id(n) for n in walk.walk(branch))
    return found


class HubOptionDroppedFromSiblingCall(Rule):
    """
    ## What it does
    Checks loading functions that forward their Hub options by name (`cache_dir=cache_dir`,
    `token=token`, `local_files_only=local_files_only`, ...) to their downloads for a sibling loading call that
    leaves out `token`, `cache_dir` or `local_files_only` although the function forwards it to another call.
    A sibling is held to it when it passes at least three Hub options (two forwarded by name), or when it is a
    fetch by name (`from_pretrained`, `load_config`, `hf_hub_download`, `snapshot_download`, `_get_model_file`,
    `get_class_from_dynamic_module`) that forwards two options by name or fetches from the same variable as
    the call that forwards them, whatever it passes (nothing at all, say). A call that splats a dict of Hub
    options the function builds (`hub_kwargs = {n: kwargs.pop(n) for n in ["cache_dir", "token", ...]}`)
    forwards the options that dict names.

    ## Why is this bad?
    The caller passed the option once and expects every file of the load to honour it: a `token` for a
    private or gated repository, a `cache_dir` on a shared disk, `local_files_only` on an offline machine.
    When one sibling call drops it, that one file is fetched anonymously (and fails on a private repo), into
    the default cache, or over the network; the option is accepted and partly ignored. diffusers fixed this
    in `from_single_file`, whose `load_config(...)` of the model config did not receive `token`.

    ## Example
    ```python
    def load_adapter(self, repo_id, cache_dir=None, token=None, local_files_only=False):
        weights = hf_hub_download(
            repo_id, "adapter.safetensors", cache_dir=cache_dir, token=token, local_files_only=local_files_only
        )
        encoder = CLIPVisionModel.from_pretrained(
            repo_id, subfolder="image_encoder", cache_dir=cache_dir, local_files_only=local_files_only
        )
    ```

    Use instead:
    ```python
    encoder = CLIPVisionModel.from_pretrained(
        repo_id, subfolder="image_encoder", cache_dir=cache_dir, token=token, local_files_only=local_files_only
    )
    ```

    ## Known problems
    Only options forwarded under their own name (or in a dict of Hub options) are followed, and only calls
    written in the function itself; a call that splats `**kwargs` is not held to it, unless the dict is a literal
    without Hub options (`dtype_kwarg = {"dtype": dtype}`). A call that fetches from a module constant (a fixed
    public repository) and a `huggingface_hub` query such as `model_info` (DRB214's) are not held to it.
    `revision` and `subfolder` are not checked: they name one repository's files and may rightly differ
    between calls. A callee defined in the project that does not take the option is accepted.
    `local_files_only` left out of a call under a test of `local_files_only` is accepted.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#10082 (`from_single_file`: `load_config` of the model config ignored `token`)
    - huggingface/diffusers#9272 (`load_ip_adapter`: the image encoder ignored `cache_dir`/`local_files_only`)
    - huggingface/diffusers#12577 (`ModularPipelineBlocks.from_pretrained`: `load_config` got no Hub options)
    """

    code = "DRB215"
    pattern = 2
    severity = "warning"
    message = (
        "`{call}(...)` forwards this function's Hub options but not `{option}`, which it passes to "
        "`{other}(...)`, so this fetch ignores the caller's `{option}`; pass `{option}={option}`."
    )
    REQUIRES_ANY = ("cache_dir", "token", "local_files_only")
    PATHS = ("/loaders/", "/utils/", "/models/", "/pipelines/", "/modular_pipelines/", "/schedulers/", "/quantizers/")

    VALID = [
        Valid(
            # every loading call gets the options; a fixed public repo, a `**kwargs` splat and a query are exempt
            """
            def load_adapter(self, repo_id, cache_dir=None, token=None, local_files_only=False, proxies=None, **kwargs):
                weights = hf_hub_download(repo_id, "a.bin", cache_dir=cache_dir, token=token, local_files_only=local_files_only)
                encoder = CLIPVisionModel.from_pretrained(
                    repo_id, subfolder="image_encoder", cache_dir=cache_dir, token=token, local_files_only=local_files_only
                )
                code = hf_hub_download(MIRROR_ID, "p.py", cache_dir=cache_dir, proxies=proxies, local_files_only=local_files_only)
                config = load_config(repo_id, cache_dir=cache_dir, local_files_only=local_files_only, **kwargs)
                extra = {"dtype": None}
                extra["token"] = None
                unet = UNet.from_pretrained(repo_id, cache_dir=cache_dir, local_files_only=local_files_only, **extra)
                sha = model_info(repo_id, revision=None, token=token).sha
                return weights, encoder, code, config, sha
            """,
            path="diffusers/loaders/adapter.py",
        ),
        Valid(
            # `local_files_only` decided by a test of it; a project callee that takes no `token`
            """
            def cached_tree(repo_id, revision=None, cache_dir=None, local_files_only=None):
                return []

            def download(repo_id, revision=None, cache_dir=None, token=None, local_files_only=False):
                if not local_files_only:
                    path = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token)
                path = snapshot_download(
                    repo_id, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
                )
                tree = cached_tree(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
                return path, tree
            """,
            path="diffusers/pipelines/pipeline_utils.py",
        ),
    ]
    INVALID = [
        Invalid(
            # a loader of the same repository passing few options (none here): held to the sibling's options,
            # which come from a dict of Hub options; a dict of dtype keywords splatted hides none
            """
            class Blocks:
                @classmethod
                def from_pretrained(cls, repo_id, **kwargs):
                    names = ["cache_dir", "force_download", "local_files_only", "revision", "token"]
                    hub_kwargs = {name: kwargs.pop(name) for name in names if name in kwargs}
                    config = cls.load_config(repo_id)
                    block_cls = get_class_from_dynamic_module(repo_id, module_file=config["file"], **hub_kwargs)
                    return block_cls
            """,
            path="diffusers/modular_pipelines/modular_pipeline.py",
        ),
        Invalid(
            """
            def load_adapter(self, repo_id, cache_dir=None, token=None, local_files_only=False):
                weights = _get_model_file(repo_id, weights_name="a.bin", cache_dir=cache_dir, token=token)
                dtype_kwarg = {"dtype": self.dtype} if new_transformers else {"torch_dtype": self.dtype}
                encoder = CLIPVisionModel.from_pretrained(repo_id, subfolder="image_encoder", **dtype_kwarg)
                return weights, encoder
            """,
            path="diffusers/loaders/ip_adapter.py",
        ),
        Invalid(
            """
            def load_adapter(self, repo_id, cache_dir=None, token=None, local_files_only=False):
                weights = hf_hub_download(repo_id, "a.bin", cache_dir=cache_dir, token=token, local_files_only=local_files_only)
                encoder = CLIPVisionModel.from_pretrained(
                    repo_id, subfolder="image_encoder", cache_dir=cache_dir, local_files_only=local_files_only
                )
                return weights, encoder
            """,
            path="diffusers/loaders/adapter.py",
            message=(
                "`CLIPVisionModel.from_pretrained(...)` forwards this function's Hub options but not `token`, which "
                "it passes to `hf_hub_download(...)`, so this fetch ignores the caller's `token`; pass `token=token`."
            ),
        ),
        Invalid(
            # an older spelling: the config of a single-file checkpoint fetched without the cache and the token
            """
            class FromOriginalModelMixin:
                @classmethod
                def from_single_file(cls, path, **kwargs):
                    cache_dir = kwargs.pop("cache_dir", None)
                    token = kwargs.pop("token", None)
                    revision = kwargs.pop("revision", None)
                    local_files_only = kwargs.pop("local_files_only", None)
                    checkpoint = load_single_file_checkpoint(
                        path, cache_dir=cache_dir, token=token, revision=revision, local_files_only=local_files_only
                    )
                    config = cls.load_config(
                        pretrained_model_name_or_path=default_config_repo,
                        subfolder=subfolder,
                        revision=revision,
                        local_files_only=local_files_only,
                    )
                    return cls.from_config(config), checkpoint
            """,
            path="diffusers/loaders/single_file_model.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if isinstance(function, cst.FunctionDef):
                self._check_function(definition.qualname, function)

    def _check_function(self, scope: str, function: cst.FunctionDef) -> None:
        loading: list[tuple[cst.Call, set[str], set[str]]] = []
        bare: list[tuple[cst.Call, set[str], set[str]]] = []
        hub_dicts: dict[str, set[str]] | None = None
        splatting: set[int] = set()
        harmless: frozenset[str] | None = None
        for call in walk.own_nodes(function, cst.Call):
            if harmless is None and any(arg.star == "**" for arg in call.args):
                harmless = _harmless_dicts(function)
            found = _forwarded(call, harmless or frozenset())
            if found is None:
                # a sibling that splats a dict of Hub options forwards the options that dict holds
                splats = [a.value for a in call.args if a.star == "**" and isinstance(a.value, cst.Name)]
                if not splats or any(a.star == "*" for a in call.args):
                    continue
                if hub_dicts is None:
                    hub_dicts = _hub_dicts(function)
                held = set().union(*(hub_dicts.get(s.value, set()) for s in splats))
                if len(held) >= 2:
                    loading.append((call, set(), held))
                    splatting.add(id(call))
                continue
            if len(found[1]) >= 2:
                loading.append((call, *found))
            elif self._loader(call):
                bare.append((call, *found))
        if not loading or len(loading) + len(bare) < 2:
            return
        for call, passed, same in [*loading, *bare]:
            if id(call) in splatting:
                continue  # its options come from a dict, which may hold them all
            name = dotted_name(call.func) or _code(call.func)
            if name.rpartition(".")[2] in QUERIES or _constant_repo(call):
                continue
            if len(passed) < MIN_PASSED and not (
                self._same_repo(call, loading) or (self._loader(call) and len(same) >= 2)
            ):
                continue
            for option in CHECKED:
                if option in passed or (option == "token" and "use_auth_token" in passed):
                    continue
                others = [c for c, _, s in loading if c is not call and option in s]
                if not others:
                    continue
                if option == "local_files_only" and id(call) in _tested_in(function, option):
                    continue
                if not self._accepts(call, option):
                    continue
                other = dotted_name(others[0].func) or _code(others[0].func)
                message = self.message.format(call=name, option=option, other=other)
                self.report(call, message, symbol=option, scope=scope)

    @staticmethod
    def _loader(call: cst.Call) -> bool:
        name = dotted_name(call.func)
        return name is not None and name.rpartition(".")[2] in LOADERS

    @staticmethod
    def _same_repo(call: cst.Call, loading: list[tuple[cst.Call, set[str], set[str]]]) -> bool:
        """Whether a loading call fetches from a variable that a sibling forwarding its options fetches from too."""
        if not HubOptionDroppedFromSiblingCall._loader(call):
            return False
        repo = _repo(call)
        if not isinstance(repo, cst.Name):
            return False
        for other, _passed, _same in loading:
            theirs = _repo(other)
            if other is not call and isinstance(theirs, cst.Name) and theirs.value == repo.value:
                return True
        return False

    def _accepts(self, call: cst.Call, option: str) -> bool:
        """Whether the callee can take `option`: True unless it is a function of this module or the project
        whose signature has neither the parameter nor `**kwargs`."""
        name = dotted_name(call.func)
        if name is None or "." in name:
            return True  # a method or an attribute: its signature is not looked up
        definition = None
        for statement in self.context.module.body:
            if isinstance(statement, cst.FunctionDef) and statement.name.value == name:
                definition = statement
        if definition is None:
            target = self.context.imports.get(name)
            if target:
                dotted, _, leaf = target.rpartition(".")
                module = self.context.project.module(dotted)
                if module is not None:
                    for statement in module.body:
                        if isinstance(statement, cst.FunctionDef) and statement.name.value == leaf:
                            definition = statement
        if definition is None:
            return True
        return has_var_keyword(definition) or option in {p.name.value for p in parameters(definition)}
