"""DRB217: `variant`/`use_safetensors` choose the files a function downloads, but its loading call gets only one."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name


#: the options that pick which weight files of a repository are used: both the download and the load must know them
WEIGHT_OPTIONS = ("variant", "use_safetensors")
#: at least this many keywords forwarded by name (`torch_dtype=torch_dtype`) make a call a loading call
MIN_FORWARDED = 4


def _forwarded(call: cst.Call) -> tuple[set[str], set[str], bool]:
    """(every keyword the call passes, those it forwards as `name=name`, whether it splats `*`/`**`)."""
    splats = any(arg.star for arg in call.args)
    passed = {arg.keyword.value for arg in call.args if arg.keyword is not None}
    same = {
        arg.keyword.value
        for arg in call.args
        if arg.keyword is not None and isinstance(arg.value, cst.Name) and arg.value.value == arg.keyword.value
    }
    return passed, same, splats


def _loader(call: cst.Call) -> bool:
    """A call that loads weights: `X.from_pretrained(...)`, `load_sub_model(...)`, `load_*_model(...)`."""
    leaf = (dotted_name(call.func) or "").rpartition(".")[2]
    return leaf == "from_pretrained" or (leaf.startswith("load_") and "model" in leaf)


class WeightFormatOptionNotForwardedToLoader(Rule):
    """
    ## What it does
    Checks loading functions that forward both `variant` and `use_safetensors` to one call (the download, which
    picks the files to fetch) for a call that loads weights (`load_sub_model(...)`, `X.from_pretrained(...)`),
    forwards `variant` or `use_safetensors` with at least three other options by name, and leaves the other
    one out.

    ## Why is this bad?
    Both options decide which weight files are used: `variant="fp16"` the `*.fp16.*` files,
    `use_safetensors=True` the `.safetensors` ones. When the download honours both but the load is told only one,
    the load picks files on its own: it falls back to `.bin` weights although the user demanded safetensors (or
    tries the non-variant files), and the setting is silently half-honoured. diffusers shipped this in
    `DiffusionPipeline.from_pretrained`, whose `load_sub_model(...)` calls never received `use_safetensors`.

    ## Example
    ```python
    cached_folder = cls.download(repo_id, variant=variant, use_safetensors=use_safetensors, token=token)
    for name, (library, class_name) in components.items():
        loaded[name] = load_sub_model(
            library, class_name, name, cached_folder, variant=variant, torch_dtype=torch_dtype, device_map=device_map
        )
    ```

    Use instead:
    ```python
    loaded[name] = load_sub_model(
        library, class_name, name, cached_folder, variant=variant, use_safetensors=use_safetensors, device_map=device_map
    )
    ```

    ## Known problems
    Only options forwarded under their own name are followed, in calls written in the function itself; a call
    that splats `*args`/`**kwargs` is not held to it. The loading call is recognised by its name.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#9587 (`DiffusionPipeline.from_pretrained`: `use_safetensors` not passed to submodels)
    """

    code = "DRB217"
    pattern = 2
    severity = "warning"
    message = (
        "`{call}(...)` loads weights with `{given}={given}` but without `{option}`, which this function "
        "forwards to `{other}(...)` to pick the files, so the load may use other files than the user asked for; "
        "pass `{option}={option}`."
    )
    REQUIRES_ANY = ("use_safetensors",)
    PATHS = ("/loaders/", "/models/", "/pipelines/", "/modular_pipelines/")

    VALID = [
        Valid(
            # the load gets both; a call splatting `**kwargs`; a call with few options; a non-loading call
            """
            def from_pretrained(cls, repo_id, variant=None, use_safetensors=None, torch_dtype=None, **kwargs):
                folder = cls.download(repo_id, variant=variant, use_safetensors=use_safetensors, **kwargs)
                a = load_sub_model(folder, variant=variant, use_safetensors=use_safetensors, torch_dtype=torch_dtype)
                b = UNet.from_pretrained(folder, variant=variant, torch_dtype=torch_dtype, **kwargs)
                c = CLIPModel.from_pretrained(folder, variant=variant)
                d = _get_model_file(folder, variant=variant, torch_dtype=torch_dtype, token=token, revision=revision)
                return a, b, c, d
            """,
            path="diffusers/pipelines/pipeline_utils.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class DiffusionPipeline:
                @classmethod
                def from_pretrained(cls, repo_id, **kwargs):
                    variant = kwargs.pop("variant", None)
                    use_safetensors = kwargs.pop("use_safetensors", None)
                    folder = cls.download(repo_id, variant=variant, use_safetensors=use_safetensors)
                    for name in names:
                        loaded = load_sub_model(
                            name,
                            folder,
                            variant=variant,
                            torch_dtype=torch_dtype,
                            device_map=device_map,
                            low_cpu_mem_usage=low_cpu_mem_usage,
                        )
                    return loaded
            """,
            path="diffusers/pipelines/pipeline_utils.py",
            message=(
                "`load_sub_model(...)` loads weights with `variant=variant` but without `use_safetensors`, which "
                "this function forwards to `cls.download(...)` to pick the files, so the load may use other files "
                "than the user asked for; pass `use_safetensors=use_safetensors`."
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if isinstance(function, cst.FunctionDef):
                self._check_function(definition.qualname, function)

    def _check_function(self, scope: str, function: cst.FunctionDef) -> None:
        calls = [(call, _forwarded(call)) for call in walk.own_nodes(function, cst.Call)]
        pickers = [call for call, (_passed, same, _splats) in calls if all(o in same for o in WEIGHT_OPTIONS)]
        if not pickers:
            return
        for call, (passed, same, splats) in calls:
            if splats or call in pickers or not _loader(call) or len(same) < MIN_FORWARDED:
                continue
            given = [o for o in WEIGHT_OPTIONS if o in same]
            missing = [o for o in WEIGHT_OPTIONS if o not in passed]
            if not given or not missing:
                continue
            name = dotted_name(call.func) or "call"
            other = dotted_name(pickers[0].func) or "call"
            for option in missing:
                message = self.message.format(call=name, given=given[0], option=option, other=other)
                self.report(call, message, symbol=option, scope=scope)
