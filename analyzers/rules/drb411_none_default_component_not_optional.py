"""DRB411: a pipeline component defaults to `None` in `__init__` but is missing from `_optional_components`."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import annotation_classes, parameters, pipeline_classes, string_value, target_names


#: annotation names that are no component class
_NOT_COMPONENTS = frozenset(
    {"Any", "Callable", "Dict", "List", "Tuple", "Sequence", "Mapping", "Literal", "Optional", "Union", "Type"}
)
#: bases a pipeline may add without inheriting another pipeline's `_optional_components`
_ROOTS = frozenset({"DiffusionPipeline", "object"})


def _optional_components(cls: cst.ClassDef) -> set[str] | None:
    """The names of the class's own literal `_optional_components` (empty if it has none); None if it is not a
    literal list of strings."""
    for statement in cls.body.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Assign) and any(
                "_optional_components" in target_names(t.target) for t in small.targets
            ):
                value = small.value
                if not isinstance(value, (cst.List, cst.Tuple)):
                    return None
                names = [string_value(e.value) for e in value.elements]
                if any(n is None for n in names):
                    return None
                return {n for n in names if n is not None}
    return set()


def _component_annotation(param: cst.Param) -> bool:
    """Whether the parameter is annotated with a model, tokenizer, processor... class (`Optional[CLIPVisionModel]`)."""
    if param.annotation is None:
        return False
    classes = annotation_classes(param.annotation.annotation)
    if not classes:
        return False
    last = [c.rpartition(".")[2] for c in classes]
    return all(name[:1].isupper() and name not in _NOT_COMPONENTS for name in last)


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _optional_of(node: cst.BaseExpression) -> cst.Attribute | None:
    """`O._optional_components` of `O._optional_components` or `set(O._optional_components)`."""
    if isinstance(node, cst.Call) and _code(node.func) in ("set", "frozenset") and len(node.args) == 1:
        node = node.args[0].value
    if isinstance(node, cst.Attribute) and node.attr.value == "_optional_components":
        return node
    return None


def _subtracted(node: cst.BaseExpression) -> list[cst.BaseExpression]:
    """The right operands of a chain of `-` (`a - b - c`: `b`, `c`), and the leftmost operand last."""
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Subtract):
        return [*_subtracted(node.left)[:-1], node.right, _subtracted(node.left)[-1]]
    return [node]


class NoneDefaultComponentNotOptional(Rule):
    """
    ## What it does
    Checks pipeline classes whose `__init__` gives a component a `None` default (`prior_image_encoder:
    Optional[CLIPVisionModelWithProjection] = None`) and registers it (`self.register_modules(...)`), while
    the class's `_optional_components` does not list it.

    It also checks code that takes the modules a target pipeline class expects (`expected_modules, _ =
    target_cls._get_signature_keys(target_cls)`) and subtracts the optional components of another object
    (`set(expected_modules) - set(pipeline._optional_components)`), as `from_pipe` did.

    ## Why is this bad?
    `from_pretrained` decides which components it must load from `_optional_components`, not from the
    signature: a component with a default that is not listed there is taken for a plain keyword argument. A
    repository without it then fails the expected-modules check (or the component is never loaded), so the
    component the signature makes optional is not optional when loading. Judging the target's modules by the
    source pipeline's `_optional_components` has the same effect for `from_pipe`: converting a pipeline that
    lacks one of the target's optional components (an IP-Adapter image encoder) raises a missing-component
    error instead of setting it to `None`.

    ## Example
    ```python
    class StableCascadeCombinedPipeline(DiffusionPipeline):
        def __init__(self, prior_prior, prior_image_encoder: Optional[CLIPVisionModelWithProjection] = None):
            self.register_modules(prior_prior=prior_prior, prior_image_encoder=prior_image_encoder)
    ```

    Use instead:
    ```python
    class StableCascadeCombinedPipeline(DiffusionPipeline):
        _optional_components = ["prior_image_encoder"]
    ```

    ## Known problems
    Only classes that derive from `DiffusionPipeline` directly (or through mixins) are checked, with a literal
    `_optional_components` or none; components annotated `Any` or not at all, and ones `__init__` rebinds
    before registering them, are left alone.

    ## References
    - huggingface/diffusers#13656, pattern 4
    - huggingface/diffusers#7894 (`StableCascadeCombinedPipeline` prior image encoder not optional)
    - huggingface/diffusers#10400 (`AutoPipeline*.from_pipe` subtracted the source's `_optional_components`)
    """

    code = "DRB411"
    pattern = 4
    severity = "warning"
    message = (
        "`{name}` defaults to `None` and is registered as a component, but `_optional_components` does not list "
        "it, so `from_pretrained` treats it as required (or as a plain argument); add it to "
        "`_optional_components`."
    )
    message_other = (
        "These modules are `{target}`'s, but `{source}._optional_components` are another pipeline's, so a "
        "component optional for `{target}` but missing from `{source}` is reported missing; subtract "
        "`{target}._optional_components`."
    )
    REQUIRES_ANY = ("register_modules", "_optional_components")
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                _optional_components = ["image_encoder"]

                def __init__(self, unet, image_encoder: Optional[CLIPVisionModel] = None):
                    super().__init__()
                    self.register_modules(unet=unet, image_encoder=image_encoder)
            """
        ),
        # rebound before registering; annotated `Any`; not registered; inherits another pipeline's list
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __init__(self, unet, scheduler: Optional[DDIMScheduler] = None, tokenizer: Any = None,
                             mean: Optional[List[float]] = None):
                    super().__init__()
                    if scheduler is None:
                        scheduler = DDIMScheduler()
                    self.register_modules(unet=unet, scheduler=scheduler, tokenizer=tokenizer)
                    self.register_to_config(mean=mean)


            class MyImg2ImgPipeline(MyPipeline):
                def __init__(self, unet, image_encoder: Optional[CLIPVisionModel] = None):
                    super().__init__()
                    self.register_modules(unet=unet, image_encoder=image_encoder)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyCombinedPipeline(DiffusionPipeline, LoraLoaderMixin):
                _load_connected_pipes = True

                def __init__(
                    self,
                    prior_prior,
                    prior_feature_extractor: Optional[CLIPImageProcessor] = None,
                ):
                    super().__init__()
                    self.register_modules(prior_prior=prior_prior, prior_feature_extractor=prior_feature_extractor)
            """,
            message=(
                "`prior_feature_extractor` defaults to `None` and is registered as a component, but "
                "`_optional_components` does not list it, so `from_pretrained` treats it as required (or as a "
                "plain argument); add it to `_optional_components`."
            ),
        ),
        Invalid(
            """
            class AutoPipelineForImage2Image(ConfigMixin):
                @classmethod
                def from_pipe(cls, pipeline, **kwargs):
                    target_cls = _get_task_class(MAPPING, pipeline.__class__.__name__)
                    expected, optional = target_cls._get_signature_keys(target_cls)
                    missing = set(expected) - set(pipeline._optional_components) - set(kwargs.keys())
                    if missing:
                        raise ValueError(missing)
            """,
            message=(
                "These modules are `target_cls`'s, but `pipeline._optional_components` are another pipeline's, so "
                "a component optional for `target_cls` but missing from `pipeline` is reported missing; subtract "
                "`target_cls._optional_components`."
            ),
        ),
    ]

    def check(self) -> None:
        self._check_other_optional()
        self._check_init()

    def _check_other_optional(self) -> None:
        for function in walk.nodes(self.context.module, cst.FunctionDef):
            targets: dict[str, str] = {}  # module-list name -> the class whose modules it holds
            for assign in walk.nodes(function, cst.Assign):
                value = assign.value
                if not (
                    isinstance(value, cst.Call)
                    and isinstance(value.func, cst.Attribute)
                    and value.func.attr.value == "_get_signature_keys"
                    and len(value.args) == 1
                    and len(assign.targets) == 1
                ):
                    continue
                target = assign.targets[0].target
                first = target.elements[0].value if isinstance(target, cst.Tuple) and target.elements else target
                if isinstance(first, cst.Name):
                    targets[first.value] = _code(value.args[0].value)
            if not targets:
                continue
            aliases = {(_code(t.target), _code(a.value)) for a in walk.nodes(function, cst.Assign) for t in a.targets}
            reported: set[int] = set()
            subtractions = [
                o for o in walk.nodes(function, cst.BinaryOperation) if isinstance(o.operator, cst.Subtract)
            ]
            inner = {id(o.left) for o in subtractions}
            for operation in subtractions:
                if id(operation) in inner:
                    continue  # judged as part of the whole `a - b - c`
                operands = _subtracted(operation)
                modules = {n.value for n in walk.nodes(operands[-1], cst.Name)} & set(targets)
                if len(modules) != 1:
                    continue
                wanted = targets[modules.pop()]
                others = [o for o in operands[:-1] if _optional_of(o) is None]
                if any("optional" in n.value for o in others for n in walk.nodes(o, cst.Name)):
                    continue  # another optional set (the target's defaults) is subtracted too
                for operand in operands[:-1]:
                    attribute = _optional_of(operand)
                    if attribute is None or id(attribute) in reported:
                        continue
                    reported.add(id(attribute))
                    source = _code(attribute.value)
                    if source == wanted or (source, wanted) in aliases or (wanted, source) in aliases:
                        continue
                    self.report(attribute, self.message_other.format(target=wanted, source=source), symbol=source)

    def _check_init(self) -> None:
        for definition in pipeline_classes(self.context):
            cls = definition.node
            if not isinstance(cls, cst.ClassDef):
                continue
            bases = [(dotted_name(b.value) or "").rpartition(".")[2] for b in cls.bases]
            if any(b not in _ROOTS and not b.endswith("Mixin") for b in bases):
                continue  # may inherit another pipeline's `_optional_components`
            optional = _optional_components(cls)
            if optional is None:
                continue
            init = next(
                (s for s in cls.body.body if isinstance(s, cst.FunctionDef) and s.name.value == "__init__"),
                None,
            )
            if init is None:
                continue
            registered: set[str] = set()
            for call in walk.nodes(init.body, cst.Call):
                func = call.func
                if isinstance(func, cst.Attribute) and func.attr.value == "register_modules":
                    for arg in call.args:
                        if (
                            arg.keyword is not None
                            and isinstance(arg.value, cst.Name)
                            and arg.value.value == arg.keyword.value
                        ):
                            registered.add(arg.keyword.value)
            rebound: set[str] = set()
            for assign in walk.nodes(init.body, cst.Assign):
                for target in assign.targets:
                    rebound.update(target_names(target.target))
            for augmented in walk.nodes(init.body, cst.AugAssign):
                rebound.update(target_names(augmented.target))
            for annotated in walk.nodes(init.body, cst.AnnAssign):
                rebound.update(target_names(annotated.target))
            for param in parameters(init):
                name = param.name.value
                if not (isinstance(param.default, cst.Name) and param.default.value == "None"):
                    continue
                if name in optional or name not in registered or name in rebound:
                    continue
                if not _component_annotation(param):
                    continue
                self.report(param, self.message.format(name=name), symbol=name, scope=definition.qualname)
