"""DRB904: a model that sets `_supports_gradient_checkpointing = True` without the checkpointing hook."""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, FileContext, Invalid, Rule, Valid, dotted_name, nested_blocks
from analyzers.matchers import string_value
from analyzers.models import ancestry, class_assignment, inherited_assignment, model_classes, reachable_classes


FLAG = "_supports_gradient_checkpointing"
ATTR = "gradient_checkpointing"
#: attributes whose use counts as the checkpointing hook (on `self` or on a submodule)
READ_ATTRS = frozenset({ATTR, "_gradient_checkpointing_func", "is_gradient_checkpointing"})
#: top-level packages whose names never build a module that carries `gradient_checkpointing`
INERT_TOPS = frozenset(
    {
        # the standard library and array code
        *("__future__", "abc", "collections", "contextlib", "copy", "dataclasses", "enum", "functools"),
        *("importlib", "inspect", "itertools", "json", "logging", "math", "numbers", "operator", "os", "re"),
        *("sys", "types", "typing", "warnings", "pathlib", "tempfile", "shutil", "gc", "io", "random", "time"),
        *("threading", "weakref", "hashlib", "string", "textwrap", "glob", "pickle", "struct", "uuid", "urllib"),
        *("numpy", "einops", "PIL", "scipy", "packaging", "tqdm", "requests", "accelerate"),
        "torchvision",
        "typing_extensions",
        # torch and the attention kernels the attention modules import
        *("torch", "torch_xla", "torch_npu", "xformers", "flash_attn", "flash_attn_interface", "sageattention"),
        *("kernels", "aiter", "safetensors", "huggingface_hub"),
    }
)
#: the most definitions (classes and functions) followed from one model before giving up, silently
CLOSURE_LIMIT = 400


def _self_attr(node: cst.CSTNode) -> bool:
    return (
        isinstance(node, cst.Attribute)
        and node.attr.value == ATTR
        and isinstance(node.value, cst.Name)
        and node.value.value == "self"
    )


def _uses(node: cst.CSTNode) -> tuple[list[cst.CSTNode], bool]:
    """(reads of `self.gradient_checkpointing` under `node`, whether it is set there).

    Set means assigned (`self.gradient_checkpointing = False`), a class attribute of that name, or a
    `setattr(..., "gradient_checkpointing", ...)`. Read means any other use of `.gradient_checkpointing`,
    `._gradient_checkpointing_func` or `.is_gradient_checkpointing`, or a `getattr(x, "gradient_checkpointing")`.
    """
    targets: set[int] = set()
    stored = False
    assigns: list[cst.Assign | cst.AnnAssign | cst.AugAssign] = [
        *walk.nodes(node, cst.Assign),
        *walk.nodes(node, cst.AnnAssign),
        *walk.nodes(node, cst.AugAssign),
    ]
    for assign in assigns:
        for target in [t.target for t in assign.targets] if isinstance(assign, cst.Assign) else [assign.target]:
            if isinstance(target, cst.Name) and target.value == ATTR:
                stored = True
            for element in walk.nodes(target, cst.Attribute):
                targets.add(id(element))
                stored = stored or _self_attr(element)
    reads: list[cst.CSTNode] = [
        attribute
        for attribute in walk.nodes(node, cst.Attribute)
        if id(attribute) not in targets and attribute.attr.value in READ_ATTRS
    ]
    reads += [
        call
        for call in walk.nodes(node, cst.Call)
        if dotted_name(call.func) == "getattr" and len(call.args) > 1 and string_value(call.args[1].value) == ATTR
    ]
    if not stored:
        stored = any(
            dotted_name(call.func) == "setattr" and any(string_value(arg.value) == ATTR for arg in call.args)
            for call in walk.nodes(node, cst.Call)
        )
    return reads, stored


def _is_true(value: cst.BaseExpression | None) -> bool:
    return isinstance(value, cst.Name) and value.value == "True"


class _Closure:
    """Every class, function and module-level value a model can build from, followed through the project view.

    From the model (and its bases inside the package), each name its body refers to is resolved: a class,
    function or module-level variable of the same module, or one imported from `diffusers.models` or the
    model's own package, is followed in turn. `complete` turns False when a name leads somewhere the rule
    cannot see (another library, a module that does not load, a re-export it cannot resolve) or the walk
    passes `CLOSURE_LIMIT`.
    """

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self.top = ctx.module_name.partition(".")[0]
        self.followed = (f"{self.top}.models.", ctx.module_name.rpartition(".")[0] + ".")
        self.complete = True
        self.read = False
        self.stored = False
        self.nodes: list[tuple[str, cst.CSTNode]] = []
        self._seen: set[tuple[str, str]] = set()
        self._defs: dict[str, dict[str, cst.CSTNode]] = {}

    def definitions(self, module: str) -> dict[str, cst.CSTNode] | None:
        """Top-level classes and functions of `module` by name, and the values of its module-level variables."""
        if module not in self._defs:
            parsed = self.ctx.project.module(module)
            if parsed is None:
                return None
            defs: dict[str, cst.CSTNode] = {}

            def visit(body: Sequence[cst.CSTNode]) -> None:
                for statement in body:
                    if isinstance(statement, (cst.ClassDef, cst.FunctionDef)):
                        defs.setdefault(statement.name.value, statement)
                    elif isinstance(statement, cst.SimpleStatementLine):
                        for small in statement.body:
                            if isinstance(small, cst.Assign):
                                for target in small.targets:
                                    if isinstance(target.target, cst.Name):
                                        defs.setdefault(target.target.value, small.value)
                    elif isinstance(statement, (cst.If, cst.Try)):
                        for block in nested_blocks(statement):  # `if is_torch_version(...): LayerNorm = ...`
                            visit(block)

            visit(parsed.body)
            self._defs[module] = defs
        return self._defs[module]

    def build(self, module: str, cls: cst.ClassDef) -> _Closure:
        """Walk from `cls` until the closure is known (`complete`) or some code in it reads the attribute (`read`)."""
        self._add(module, cls.name.value, cls)
        index = 0
        while index < len(self.nodes) and self.complete:
            if len(self.nodes) > CLOSURE_LIMIT:
                self.complete = False
                break
            mod, node = self.nodes[index]
            index += 1
            reads, stored = _uses(node)
            self.stored = self.stored or stored
            if reads:
                self.read = True
                break
            if isinstance(node, cst.ClassDef):
                for located in ancestry(self.ctx, mod, node)[1:]:
                    self._add(located[0], located[1].name.value, located[1])
            for name in self._referenced(node):
                self._follow(mod, name)
        return self

    def _add(self, module: str, name: str, node: cst.CSTNode) -> None:
        if (module, name) not in self._seen:
            self._seen.add((module, name))
            self.nodes.append((module, node))

    @staticmethod
    def _referenced(node: cst.CSTNode) -> list[str]:
        """Dotted names the code refers to (`Foo`, `blocks.Foo`), each once.

        Attributes of `self` are not names; mixins (`ModelMixin` in an `isinstance`) build nothing.
        """
        root = node.body if isinstance(node, (cst.ClassDef, cst.FunctionDef)) else node
        names: list[str] = []
        seen: set[str] = set()
        inner = {id(a.value) for a in walk.nodes(root, cst.Attribute)}
        for kind in (cst.Name, cst.Attribute):
            for element in walk.nodes(root, kind):
                if id(element) in inner:
                    continue  # the `a` of `a.b`: the chain is looked at whole
                name = dotted_name(element)
                if name and not name.startswith("self.") and not name.endswith("Mixin") and name not in seen:
                    seen.add(name)
                    names.append(name)
        return names

    def _follow(self, module: str, name: str, hops: int = 4) -> None:
        for hop in range(hops):
            head, _, rest = name.partition(".")
            defs = self.definitions(module)
            if defs is None:
                self.complete = False
                return
            if head in defs:
                self._add(module, head, defs[head])
                return
            qualified = self.ctx.project.imports(module).get(head)
            if qualified is None:
                if hop:
                    self.complete = False  # a re-export the rule cannot resolve (a lazy module, say)
                return  # a local variable, a parameter or a builtin
            top = qualified.partition(".")[0]
            if top in INERT_TOPS:
                return
            if top != self.top:
                self.complete = False  # transformers, peft, ...: modules the rule cannot see
                return
            full = f"{qualified}.{rest}" if rest else qualified
            if not full.startswith(self.followed):
                return  # configuration, loaders, utils: no module building there
            target, name = self._split(full)
            if target is None:
                self.complete = False
                return
            module = target
        self.complete = False

    def _split(self, full: str) -> tuple[str | None, str]:
        """(module, name inside it) for a dotted name: the longest prefix that is a module of the project."""
        parts = full.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:cut])
            if self.ctx.project.module_path(module) is not None:
                return module, ".".join(parts[cut:])
        return None, full


def _set_elsewhere(module: cst.Module) -> bool:
    """Whether the file assigns `<something other than self>.gradient_checkpointing` outside the old
    `_set_gradient_checkpointing(self, module, value)` hook (which only runs when checkpointing is toggled)."""
    hooks = [f for f in walk.nodes(module, cst.FunctionDef) if f.name.value == "_set_gradient_checkpointing"]
    inside = {id(a) for hook in hooks for a in walk.nodes(hook, cst.Assign)}
    for assign in walk.nodes(module, cst.Assign):
        if id(assign) in inside:
            continue
        for target in assign.targets:
            node = target.target
            if isinstance(node, cst.Attribute) and node.attr.value == ATTR and not _self_attr(node):
                return True
    return False


def _model_names(ctx: FileContext) -> set[str]:
    return {d.name for d in model_classes(ctx)}


def _hook_convention(ctx: FileContext) -> tuple[str, tuple[str, ...], int] | None:
    """How the project's `ModelMixin.enable_gradient_checkpointing` calls `_set_gradient_checkpointing`:
    (the call as written, its keyword names, how many positional arguments it passes), or None when unknown.
    `self.apply(partial(self._set_gradient_checkpointing, value=True))` passes each module positionally."""
    located = ctx.project.locate_class(f"{ctx.module_name.partition('.')[0]}.models.modeling_utils", "ModelMixin")
    if located is None:
        return None
    for function in walk.nodes(located[1], cst.FunctionDef):
        if function.name.value != "enable_gradient_checkpointing":
            continue
        for call in walk.nodes(function, cst.Call):
            if (
                dotted_name(call.func) == "partial"
                and call.args
                and dotted_name(call.args[0].value) == ("self._set_gradient_checkpointing")
            ):
                keywords = tuple(a.keyword.value for a in call.args[1:] if a.keyword is not None)
                return "self.apply(partial(self._set_gradient_checkpointing, value=...))", keywords, 1
            if dotted_name(call.func) == "self._set_gradient_checkpointing":
                keywords = tuple(a.keyword.value for a in call.args if a.keyword is not None)
                positional = sum(1 for a in call.args if a.keyword is None)
                shown = ", ".join(f"{k}=..." for k in keywords)
                return f"self._set_gradient_checkpointing({shown})", keywords, positional
    return None


_OLD_MODEL_MIXIN = """
class ModelMixin(torch.nn.Module):
    _supports_gradient_checkpointing = False

    def enable_gradient_checkpointing(self):
        if not self._supports_gradient_checkpointing:
            raise ValueError(f"{self.__class__.__name__} does not support gradient checkpointing.")
        self.apply(partial(self._set_gradient_checkpointing, value=True))
"""


class FeatureFlagWithoutHook(Rule):
    """
    ## What it does
    Checks for `ModelMixin` subclasses that set `_supports_gradient_checkpointing = True` while the
    checkpointing hook is missing: the model, or a block of its file that it builds, reads
    `self.gradient_checkpointing` but nothing ever sets it; its override of `_set_gradient_checkpointing` cannot take
    the arguments `ModelMixin` passes to it (the module then `value=`, before diffusers 0.33; `enable=` and
    `gradient_checkpointing_func=` since); or modules carry the attribute but no module the model builds (in its file or in the
    `diffusers.models` modules it imports) ever reads `self.gradient_checkpointing`; or no module has the
    attribute at all.

    ## Why is this bad?
    `ModelMixin.enable_gradient_checkpointing()` only checks the class flag, then sets
    `gradient_checkpointing = True` and `_gradient_checkpointing_func` on every submodule that has a
    `gradient_checkpointing` attribute. Checkpointing happens only where a `forward` tests
    `torch.is_grad_enabled() and self.gradient_checkpointing` and calls `self._gradient_checkpointing_func`.
    Without that branch the call succeeds and training runs with full activation memory; without any
    attribute it raises `ValueError` although the class claims support; and a `forward` that reads the
    attribute no `__init__` sets raises `AttributeError` as soon as gradients are enabled. Meta issue #13656
    (pattern 9) lists models that declare shared features without the integration points they need.

    ## Example
    ```python
    class FooControlNetModel(ModelMixin, ConfigMixin):
        _supports_gradient_checkpointing = True

        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([FooBlock() for _ in range(4)])

        def forward(self, x):
            for layer in self.layers:
                if torch.is_grad_enabled() and self.gradient_checkpointing:  # never set: AttributeError
                    x = self._gradient_checkpointing_func(layer, x)
                else:
                    x = layer(x)
            return x
    ```

    Use instead:
    ```python
    class FooControlNetModel(ModelMixin, ConfigMixin):
        _supports_gradient_checkpointing = True

        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([FooBlock() for _ in range(4)])
            self.gradient_checkpointing = False
    ```

    ## Known problems
    The modules a model builds are found by following the names its classes and functions refer to,
    through the same file and the `diffusers.models` modules (and the model's own package) they import,
    up to 400 definitions; a model that refers to another library's classes (`transformers`), to a name
    that cannot be resolved, or to more than that is left alone. Referring is not building, so a block
    class only named (say in a `get_down_block` factory) counts as built: the rule errs towards silence.
    Submodules attached after construction (`from_transformer`, `from_unet`) are not seen. Only files that
    spell `_supports_gradient_checkpointing` are looked at, and only classes `analyzers.models` takes for
    models (`ModelMixin` among the bases of the class or its package ancestors; not `LegacyModelMixin`).

    ## References
    - huggingface/diffusers#13656, pattern 9
    """

    code = "DRB904"
    pattern = 9
    severity = "warning"
    message_unset = (
        "`{model}` reads `self.gradient_checkpointing` but never sets it, so a forward pass with gradients "
        "enabled raises `AttributeError`; set `self.gradient_checkpointing = False` in `__init__`."
    )
    message_block_unset = (
        "`{block}` reads `self.gradient_checkpointing` but never sets it, so a forward pass of `{model}` with "
        "gradients enabled raises `AttributeError`; set `self.gradient_checkpointing = False` in `{block}.__init__`."
    )
    message_signature = (
        "`{model}._set_gradient_checkpointing` takes `({params})` but `ModelMixin` calls it as `{call}`, so "
        "`enable_gradient_checkpointing()` raises `TypeError`; give the override the base's parameters."
    )
    message_unread = (
        "`{model}` sets `_supports_gradient_checkpointing = True` but neither it nor any module it builds reads "
        "`self.gradient_checkpointing`, so `enable_gradient_checkpointing()` silently does nothing; wrap its "
        "blocks in `self._gradient_checkpointing_func(...)` when `torch.is_grad_enabled() and "
        "self.gradient_checkpointing`."
    )
    message_absent = (
        "`{model}` sets `_supports_gradient_checkpointing = True` but no module it builds has a "
        "`gradient_checkpointing` attribute, so `enable_gradient_checkpointing()` raises `ValueError`; add the "
        "checkpointing branch to its blocks' loop, or set `_supports_gradient_checkpointing = False`."
    )
    REQUIRES_ANY = (FLAG,)

    VALID = [
        Valid(
            # the old hook, written as `ModelMixin` calls it
            """
            from ..modeling_utils import ModelMixin

            class FooUNet(ModelMixin):
                _supports_gradient_checkpointing = True

                def __init__(self):
                    self.gradient_checkpointing = False

                def _set_gradient_checkpointing(self, module, value=False):
                    if hasattr(module, "gradient_checkpointing"):
                        module.gradient_checkpointing = value

                def forward(self, x):
                    if self.training and self.gradient_checkpointing:
                        return self._gradient_checkpointing_func(self.block, x)
                    return self.block(x)
            """,
            path="diffusers/models/unets/unet_foo.py",
            files={"diffusers/models/modeling_utils.py": _OLD_MODEL_MIXIN},
        ),
        Valid(
            # the usual shape: set in `__init__`, read in `forward`
            """
            from ..modeling_utils import ModelMixin

            class FooBlock(nn.Module):
                pass

            class FooTransformer(ModelMixin):
                _supports_gradient_checkpointing = True

                def __init__(self):
                    super().__init__()
                    self.blocks = nn.ModuleList([FooBlock() for _ in range(2)])
                    self.gradient_checkpointing = False

                def forward(self, x):
                    for block in self.blocks:
                        if torch.is_grad_enabled() and self.gradient_checkpointing:
                            x = self._gradient_checkpointing_func(block, x)
                        else:
                            x = block(x)
                    return x
            """,
            path="diffusers/models/transformers/transformer_foo.py",
        ),
        Valid(
            # the hook lives in the blocks a factory of another module builds (UNet2DConditionModel)
            """
            from ..modeling_utils import ModelMixin
            from .unet_foo_blocks import get_down_block

            class FooUNet(ModelMixin):
                _supports_gradient_checkpointing = True

                def __init__(self):
                    super().__init__()
                    self.down_blocks = nn.ModuleList([get_down_block("FooDownBlock") for _ in range(2)])
            """,
            path="diffusers/models/unets/unet_foo.py",
            files={
                "diffusers/models/unets/unet_foo_blocks.py": """
                    def get_down_block(name):
                        if name == "FooDownBlock":
                            return FooDownBlock()
                        raise ValueError(name)

                    class FooDownBlock(nn.Module):
                        def __init__(self):
                            super().__init__()
                            self.gradient_checkpointing = False

                        def forward(self, x):
                            if torch.is_grad_enabled() and self.gradient_checkpointing:
                                return self._gradient_checkpointing_func(self.resnet, x)
                            return self.resnet(x)
                    """
            },
        ),
        Valid(
            # blocks imported from a module the rule cannot see: silent
            """
            from ..modeling_utils import ModelMixin
            from .unet_missing_blocks import FooDownBlock

            class FooUNet(ModelMixin):
                _supports_gradient_checkpointing = True

                def __init__(self):
                    super().__init__()
                    self.down = FooDownBlock()
                    self.gradient_checkpointing = False
            """,
            path="diffusers/models/unets/unet_foo.py",
        ),
        Valid(
            # the flag is off: `enable_gradient_checkpointing()` raises on purpose
            """
            from ..modeling_utils import ModelMixin

            class FooVAE(ModelMixin):
                _supports_gradient_checkpointing = False

                def __init__(self):
                    super().__init__()
                    self.gradient_checkpointing = False
            """,
            path="diffusers/models/autoencoders/autoencoder_foo.py",
        ),
        Valid(
            # another library's modules may carry the hook
            """
            from transformers import T5EncoderModel
            from ..modeling_utils import ModelMixin

            class FooTextModel(ModelMixin):
                _supports_gradient_checkpointing = True

                def __init__(self, config):
                    super().__init__()
                    self.encoder = T5EncoderModel(config)
            """,
            path="diffusers/models/transformers/transformer_foo.py",
        ),
        Valid(
            # the hook is inherited from a base model of the family
            """
            from ..modeling_utils import ModelMixin

            class FooBase(ModelMixin):
                def __init__(self):
                    super().__init__()
                    self.gradient_checkpointing = False

            class FooTransformer(FooBase):
                _supports_gradient_checkpointing = True

                def forward(self, x):
                    if torch.is_grad_enabled() and self.gradient_checkpointing:
                        return self._gradient_checkpointing_func(self.block, x)
                    return self.block(x)
            """,
            path="diffusers/models/transformers/transformer_foo.py",
        ),
        Valid(
            # a family base that reads the attribute its subclasses set, and a guarded read
            """
            from ..modeling_utils import ModelMixin

            class FooBase(ModelMixin):
                _supports_gradient_checkpointing = True

                def forward(self, x):
                    if torch.is_grad_enabled() and self.gradient_checkpointing:
                        return self._gradient_checkpointing_func(self.block, x)
                    return self.block(x)

            class FooTransformer(FooBase):
                def __init__(self):
                    super().__init__()
                    self.gradient_checkpointing = False

            class BarTransformer(ModelMixin):
                _supports_gradient_checkpointing = True

                def forward(self, x):
                    if hasattr(self, "gradient_checkpointing") and self.gradient_checkpointing:
                        return self._gradient_checkpointing_func(self.block, x)
                    return self.block(x)
            """,
            path="diffusers/models/transformers/transformer_foo.py",
        ),
    ]
    INVALID = [
        Invalid(
            # the encoder block reads the attribute that nothing gives it
            """
            from ..modeling_utils import ModelMixin

            class FooEncoder(nn.Module):
                def __init__(self):
                    self.layers = nn.ModuleList([nn.Linear(4, 4)])

                def forward(self, x):
                    for layer in self.layers:
                        if torch.is_grad_enabled() and self.gradient_checkpointing:
                            x = self._gradient_checkpointing_func(layer, x)
                        else:
                            x = layer(x)
                    return x

            class FooDecoder(nn.Module):
                def __init__(self):
                    self.gradient_checkpointing = False

                def forward(self, x):
                    if torch.is_grad_enabled() and self.gradient_checkpointing:
                        return self._gradient_checkpointing_func(self.proj, x)
                    return self.proj(x)

            class AutoencoderFoo(ModelMixin):
                _supports_gradient_checkpointing = True

                def __init__(self):
                    self.encoder = FooEncoder()
                    self.decoder = FooDecoder()
            """,
            path="diffusers/models/autoencoders/autoencoder_foo.py",
            message=(
                "`FooEncoder` reads `self.gradient_checkpointing` but never sets it, so a forward pass of "
                "`AutoencoderFoo` with gradients enabled raises `AttributeError`; set "
                "`self.gradient_checkpointing = False` in `FooEncoder.__init__`."
            ),
        ),
        Invalid(
            # before 0.33 `ModelMixin` applied the hook to every submodule: it must take the module first
            """
            from ..modeling_utils import ModelMixin

            class FooUNet(ModelMixin):
                _supports_gradient_checkpointing = True

                def __init__(self):
                    self.gradient_checkpointing = False

                def _set_gradient_checkpointing(self, value=False):
                    self.gradient_checkpointing = value

                def forward(self, x):
                    if self.training and self.gradient_checkpointing:
                        return self._gradient_checkpointing_func(self.block, x)
                    return self.block(x)
            """,
            path="diffusers/models/unets/unet_foo.py",
            files={"diffusers/models/modeling_utils.py": _OLD_MODEL_MIXIN},
            message=(
                "`FooUNet._set_gradient_checkpointing` takes `(self, value)` but `ModelMixin` calls it as "
                "`self.apply(partial(self._set_gradient_checkpointing, value=...))`, so "
                "`enable_gradient_checkpointing()` raises `TypeError`; give the override the base's parameters."
            ),
        ),
        Invalid(
            # ZImageControlNetModel: read in forward, never set
            """
            from ..modeling_utils import ModelMixin

            class ZImageControlTransformerBlock(nn.Module):
                pass

            class ZImageControlNetModel(ModelMixin, ConfigMixin, PeftAdapterMixin):
                _supports_gradient_checkpointing = True

                def __init__(self, control_layers_places=(0,)):
                    super().__init__()
                    self.control_layers = nn.ModuleList(
                        [ZImageControlTransformerBlock() for _ in control_layers_places]
                    )

                def forward(self, x, control_context):
                    for layer in self.control_layers:
                        if torch.is_grad_enabled() and self.gradient_checkpointing:
                            control_context = self._gradient_checkpointing_func(layer, control_context, x)
                        else:
                            control_context = layer(control_context, x)
                    return control_context
            """,
            path="diffusers/models/controlnets/controlnet_z_image.py",
            message=(
                "`ZImageControlNetModel` reads `self.gradient_checkpointing` but never sets it, so a forward pass "
                "with gradients enabled raises `AttributeError`; set `self.gradient_checkpointing = False` in "
                "`__init__`."
            ),
        ),
        Invalid(
            # the attribute is set (so enabling succeeds) but no forward ever reads it
            """
            from ..modeling_utils import ModelMixin

            class FooBlock(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.gradient_checkpointing = False

                def forward(self, x):
                    return self.proj(x)

            class FooTransformer(ModelMixin, ConfigMixin):
                _supports_gradient_checkpointing = True

                def __init__(self):
                    super().__init__()
                    self.blocks = nn.ModuleList([FooBlock() for _ in range(2)])

                def forward(self, x):
                    for block in self.blocks:
                        x = block(x)
                    return x
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            message=(
                "`FooTransformer` sets `_supports_gradient_checkpointing = True` but neither it nor any module it "
                "builds reads `self.gradient_checkpointing`, so `enable_gradient_checkpointing()` silently does "
                "nothing; wrap its blocks in `self._gradient_checkpointing_func(...)` when "
                "`torch.is_grad_enabled() and self.gradient_checkpointing`."
            ),
        ),
        Invalid(
            # no module has the attribute: enabling raises although the class claims support
            """
            from ..modeling_utils import ModelMixin
            from ..foo_blocks import FooResBlock

            class FooVAE(ModelMixin, ConfigMixin):
                _supports_gradient_checkpointing = True

                def __init__(self):
                    super().__init__()
                    self.blocks = nn.ModuleList([FooResBlock() for _ in range(2)])

                def forward(self, x):
                    for block in self.blocks:
                        x = block(x)
                    return x
            """,
            path="diffusers/models/autoencoders/autoencoder_foo.py",
            files={
                "diffusers/models/foo_blocks.py": """
                    class FooResBlock(nn.Module):
                        def forward(self, x):
                            return x + self.conv(x)
                    """
            },
            message=(
                "`FooVAE` sets `_supports_gradient_checkpointing = True` but no module it builds has a "
                "`gradient_checkpointing` attribute, so `enable_gradient_checkpointing()` raises `ValueError`; "
                "add the checkpointing branch to its blocks' loop, or set `_supports_gradient_checkpointing = "
                "False`."
            ),
        ),
    ]

    def check(self) -> None:
        ctx = self.context
        reported: set[str] = set()
        for definition in model_classes(ctx):
            cls = cst.ensure_type(definition.node, cst.ClassDef)
            if not _is_true(inherited_assignment(ctx, ctx.module_name, cls, FLAG)):
                continue
            self._check_signature(definition, cls)
            self._check_blocks(definition, cls, reported)
            own_reads: list[cst.CSTNode] = []
            own_set = False
            for _, node in ancestry(ctx, ctx.module_name, cls):
                reads, stored = _uses(node)
                own_reads += reads
                own_set = own_set or stored
            name = cls.name.value
            if own_reads and not own_set:
                first = next((r for r in own_reads if _self_attr(r)), None)
                if first is not None and not self._guarded_or_set_below(definition):
                    self.report(first, self.message_unset.format(model=name), symbol=ATTR, scope=definition.qualname)
                continue
            if own_reads:
                continue  # the model checkpoints its own blocks
            if any(_uses(node)[0] for node in reachable_classes(ctx, cls)):
                continue  # a block of this file checkpoints (the cheap look before the closure)
            closure = _Closure(ctx).build(ctx.module_name, cls)
            if closure.read or not closure.complete:
                continue
            anchor = class_assignment(cls, FLAG) or cls.name
            message = self.message_unread if closure.stored else self.message_absent
            self.report(anchor, message.format(model=name), symbol=FLAG, scope=definition.qualname)

    def _check_blocks(self, definition: Definition, cls: cst.ClassDef, reported: set[str]) -> None:
        """Blocks of this file the model builds that read `self.gradient_checkpointing` nobody sets."""
        ctx = self.context
        if _set_elsewhere(ctx.module):
            return  # `self.encoder.gradient_checkpointing = False` and the like: the model sets it from outside
        for block in reachable_classes(ctx, cls):
            name = block.name.value
            if block is cls or name in reported or name in _model_names(ctx):
                continue
            reads: list[cst.CSTNode] = []
            stored = False
            for _, node in ancestry(ctx, ctx.module_name, block):
                found, set_here = _uses(node)
                reads += [r for r in found if _self_attr(r)]
                stored = stored or set_here
            if not reads or stored:
                continue
            inner = next((d for d in ctx.classes if d.node is block), None)
            if inner is None or self._guarded_or_set_below(inner):
                continue
            reported.add(name)
            message = self.message_block_unset.format(block=name, model=cls.name.value)
            self.report(reads[0], message, symbol=ATTR, scope=inner.qualname)

    def _check_signature(self, definition: Definition, cls: cst.ClassDef) -> None:
        """An override of `_set_gradient_checkpointing` that cannot take what `ModelMixin` passes it."""
        ctx = self.context
        override = next(
            (
                s
                for s in (cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ())
                if isinstance(s, cst.FunctionDef) and s.name.value == "_set_gradient_checkpointing"
            ),
            None,
        )
        if override is None:
            return
        convention = _hook_convention(ctx)
        if convention is None:
            return
        call, keywords, positional = convention
        params = override.params
        if params.star_kwarg is not None or not isinstance(params.star_arg, cst.MaybeSentinel):
            return  # `*args` / `**kwargs` take anything
        names = [p.name.value for p in (*params.posonly_params, *params.params)]
        kwonly = [p.name.value for p in params.kwonly_params]
        accepted_positional = len(names) - 1  # after `self`
        keyword_names = set(names[1 + positional :]) | set(kwonly)
        if accepted_positional >= positional and set(keywords) <= keyword_names:
            return
        shown = ", ".join(names + kwonly)
        message = self.message_signature.format(model=cls.name.value, params=shown, call=call)
        self.report(override.name, message, symbol="_set_gradient_checkpointing", scope=definition.qualname)

    def _guarded_or_set_below(self, definition: Definition) -> bool:
        """Whether the model tests `hasattr(self, "gradient_checkpointing")`, or a subclass of this file sets it."""
        ctx = self.context
        for call in walk.nodes(definition.node, cst.Call):
            if dotted_name(call.func) == "hasattr" and any(string_value(arg.value) == ATTR for arg in call.args):
                return True
        name = definition.name
        return any(
            _uses(other.node)[1]
            for other in ctx.classes
            if other.parent is None and name in ctx.base_names(cst.ensure_type(other.node, cst.ClassDef))
        )
