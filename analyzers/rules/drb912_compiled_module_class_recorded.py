"""DRB912: a module's library and class are recorded from the object itself, without unwrapping `torch.compile`."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name


#: calls and attributes that unwrap a compiled module (`_unwrap_model`, `unwrap_module`, `is_compiled_module`)
_UNWRAP_CALLS = ("unwrap", "is_compiled_module")
_UNWRAP_ATTR = "_orig_mod"


def _class_name_of(node: cst.Attribute) -> str | None:
    """`x.__class__.__name__` or `type(x).__name__`: the name `x`, else None."""
    if node.attr.value != "__name__":
        return None
    inner = node.value
    if isinstance(inner, cst.Attribute) and inner.attr.value == "__class__" and isinstance(inner.value, cst.Name):
        return inner.value.value
    if (
        isinstance(inner, cst.Call)
        and call_name(inner) == "type"
        and len(inner.args) == 1
        and isinstance(inner.args[0].value, cst.Name)
    ):
        return inner.args[0].value.value
    return None


def _module_of(node: cst.Attribute) -> str | None:
    """`x.__module__` (not `x.__class__.__module__`, which names the class's module the same way): the name `x`."""
    if node.attr.value == "__module__" and isinstance(node.value, cst.Name):
        return node.value.value
    return None


def _unwraps(function: cst.FunctionDef) -> bool:
    if any(a.attr.value == _UNWRAP_ATTR for a in walk.own_nodes(function, cst.Attribute)):
        return True
    return any(
        any(word in (call_name(c) or "").rpartition(".")[2] for word in _UNWRAP_CALLS)
        for c in walk.own_nodes(function, cst.Call)
    )


def _recorded_as(function: cst.FunctionDef, node: cst.CSTNode) -> str | None:
    """The name the statement holding `node` assigns (`class_library_tuple = (...)`), if any."""
    for assign in walk.own_nodes(function, cst.Assign):
        if any(n is node for n in walk.walk(assign.value)):
            for target in assign.targets:
                if isinstance(target.target, cst.Name):
                    return target.target.value
    return None


class CompiledModuleClassRecorded(Rule):
    """
    ## What it does
    Checks functions that read both `module.__module__` and `module.__class__.__name__` (or
    `type(module).__name__`) of one object, the `(library, class name)` pair a pipeline writes to
    `model_index.json`, without unwrapping a `torch.compile`d module first (`_unwrap_model(module)`,
    `is_compiled_module(module)`, `module._orig_mod`).

    ## Why is this bad?
    `torch.compile(model)` returns an `OptimizedModule` wrapper. Its class is `OptimizedModule` from `torch`,
    so `pipe.unet = torch.compile(pipe.unet)` records `("torch", "OptimizedModule")`, and the pipeline that
    `save_pretrained()` writes cannot be loaded again. Registering the component the usual way unwraps it; a
    second path that does not makes the saved config depend on how the component was set.

    ## Example
    ```python
    def __setattr__(self, name, value):
        if name in self.__dict__ and hasattr(self.config, name):
            class_library_tuple = (value.__module__.split(".")[0], value.__class__.__name__)
            self.register_to_config(**{name: class_library_tuple})
        super().__setattr__(name, value)
    ```

    Use instead:
    ```python
    def __setattr__(self, name, value):
        if name in self.__dict__ and hasattr(self.config, name):
            class_library_tuple = _fetch_class_library_tuple(value)  # unwraps compiled modules
            self.register_to_config(**{name: class_library_tuple})
        super().__setattr__(name, value)
    ```

    ## Known problems
    Only a plain name whose `__module__` and class name are both read in the same function is followed. Any
    call whose name contains `unwrap` or `is_compiled_module`, or any `._orig_mod`, in the function counts as
    the unwrapping. Reads inside f-strings (a `__repr__`, an error message) are not records. Flax pipelines,
    which `torch.compile` never wraps, are not checked.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#6436 (`DiffusionPipeline.__setattr__` recorded `OptimizedModule` for a compiled
      component, fixed in 0.26.0)
    """

    code = "DRB912"
    pattern = 9
    severity = "warning"
    message = (
        "`{name}` is recorded by its `__module__` and class name without unwrapping a `torch.compile`d module, so a "
        "compiled component is saved as `torch.OptimizedModule`; unwrap it first (`_unwrap_model({name})`)."
    )
    REQUIRES_ANY = ("__module__",)

    VALID = [
        Valid(
            """
            def _fetch_class_library_tuple(module):
                not_compiled_module = _unwrap_model(module)
                library = not_compiled_module.__module__.split(".")[0]
                class_name = not_compiled_module.__class__.__name__
                return (library, class_name)
            """,
            path="diffusers/pipelines/pipeline_loading_utils.py",
        ),
        Valid(
            """
            def register_modules(self, **kwargs):
                for name, module in kwargs.items():
                    if is_compiled_module(module):
                        module = module._orig_mod
                    register_dict = {name: (module.__module__.split(".")[0], module.__class__.__name__)}
                    self.register_to_config(**register_dict)
            """,
            path="diffusers/pipelines/pipeline_utils.py",
        ),
        # only the class name, or text for a person: not a record
        Valid(
            """
            def check(component):
                raise ValueError(f"Cannot use {component.__class__.__name__}")

            def describe(value):
                return f"<obj '{value.__module__}.{value.__class__.__name__}'>"
            """
        ),
        Valid(
            """
            def register_modules(self, **kwargs):
                for name, module in kwargs.items():
                    library = module.__module__.split(".")[0]
                    class_name = module.__class__.__name__
                    self.register_to_config(**{name: (library, class_name)})
            """,
            path="diffusers/pipelines/pipeline_flax_utils.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class DiffusionPipeline:
                def __setattr__(self, name, value):
                    if name in self.__dict__ and hasattr(self.config, name):
                        if isinstance(getattr(self.config, name), (tuple, list)):
                            class_library_tuple = (value.__module__.split(".")[0], value.__class__.__name__)
                            self.register_to_config(**{name: class_library_tuple})
                    super().__setattr__(name, value)
            """,
            message=(
                "`value` is recorded by its `__module__` and class name without unwrapping a `torch.compile`d "
                "module, so a compiled component is saved as `torch.OptimizedModule`; unwrap it first "
                "(`_unwrap_model(value)`)."
            ),
            path="diffusers/pipelines/pipeline_utils.py",
        ),
        Invalid(
            """
            def component_entry(component):
                library = component.__module__.split(".")[0]
                return {"library": library, "class": type(component).__name__}
            """,
            path="diffusers/modular_pipelines/example.py",
        ),
    ]

    def check(self) -> None:
        if "flax" in self.context.path:
            return
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            # text for a person (`f"<obj {x.__module__}.{x.__class__.__name__}>"`) is no record
            shown = {id(n) for f in walk.own_nodes(function, cst.FormattedString) for n in walk.walk(f)}
            attributes = [a for a in walk.own_nodes(function, cst.Attribute) if id(a) not in shown]
            modules = {name for a in attributes if (name := _module_of(a)) is not None}
            if not modules:
                continue
            for attribute in attributes:
                name = _class_name_of(attribute)
                if name is None or name not in modules or name in ("self", "cls"):
                    continue
                if _unwraps(function):
                    break
                self.report(
                    attribute,
                    self.message.format(name=name),
                    symbol=_recorded_as(function, attribute) or name,
                    scope=definition.qualname,
                )
                break
