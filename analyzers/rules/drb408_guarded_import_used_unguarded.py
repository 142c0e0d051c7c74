"""DRB408: a module imports an optional package only when it is available, then uses it as if it always were."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


def _availability(test: cst.BaseExpression) -> str | None:
    """`is_ftfy_available` of a test that is exactly `is_ftfy_available()`."""
    if isinstance(test, cst.Call) and isinstance(test.func, cst.Name) and not test.args:
        name = test.func.value
        if name.startswith("is_") and name.endswith("_available"):
            return name
    return None


def _imported(block: cst.BaseSuite) -> set[str]:
    """The names the imports of a module-level `if` body bind."""
    names: set[str] = set()
    for statement in block.body if isinstance(block, cst.IndentedBlock) else ():
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, (cst.Import, cst.ImportFrom)) and not isinstance(small.names, cst.ImportStar):
                for alias in small.names:
                    if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                        names.add(alias.asname.name.value)
                    else:
                        names.add((alias.evaluated_name or "").split(".")[0])
    return names


#: checks for packages diffusers installs with itself (Pillow): a use outside them never fails
_REQUIRED = frozenset({"is_vision_available", "is_PIL_available", "is_pil_available", "is_pillow_available"})


def _guard(test: cst.BaseExpression) -> str | None:
    """The text of a test that is true only with optional packages: `is_x_available()`, several joined by
    `and`, or `TYPE_CHECKING`; else None."""
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And):
        left, right = _guard(test.left), _guard(test.right)
        return f"{left} and {right}" if left and right else None
    if isinstance(test, cst.Call) and isinstance(test.func, cst.Name) and not test.args:
        name = test.func.value
        if name.startswith("is_") and name.endswith("_available") and name not in _REQUIRED:
            return f"{name}()"
    if isinstance(test, cst.Name) and test.value == "TYPE_CHECKING":
        return "TYPE_CHECKING"
    if isinstance(test, cst.Attribute) and test.attr.value == "TYPE_CHECKING":
        return "TYPE_CHECKING"
    return None


def _bound(node: cst.CSTNode) -> set[str]:
    """The names that imports, assignments, definitions and `except ... as` under `node` bind."""
    names: set[str] = set()
    for statement in walk.nodes(node, cst.Import) + walk.nodes(node, cst.ImportFrom):
        if isinstance(statement.names, cst.ImportStar):
            names.add("*")
            continue
        for alias in statement.names:
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                names.add(alias.asname.name.value)
            else:
                names.add((alias.evaluated_name or "").split(".")[0])
    for assign in walk.nodes(node, cst.Assign):
        for target in assign.targets:
            names.update(n.value for n in walk.nodes(target.target, cst.Name))
    for annotated in walk.nodes(node, cst.AnnAssign):
        names.update(n.value for n in walk.nodes(annotated.target, cst.Name))
    for definition in walk.nodes(node, cst.FunctionDef) + walk.nodes(node, cst.ClassDef):
        names.add(definition.name.value)
    return names


def _bases(expression: cst.BaseExpression) -> list[cst.Name]:
    """The names an expression looks up (`Optional[PreTrainedModel]`: `Optional`, `PreTrainedModel`), leaving out
    attribute names, anything inside strings and both sides of a conditional expression (`Model if
    is_onnx_available() else Any`)."""
    skipped = {id(a.attr) for a in walk.nodes(expression, cst.Attribute)}
    for conditional in walk.nodes(expression, cst.IfExp):
        skipped.update(id(n) for n in walk.walk(conditional))
    return [n for n in walk.nodes(expression, cst.Name) if id(n) not in skipped]


class GuardedImportUsedUnguarded(Rule):
    """
    ## What it does
    Checks modules that import an optional package only under its availability check
    (`if is_ftfy_available(): import ftfy`, no `else`) and never ask about it again, while a module-level
    function uses the imported name unconditionally (`text = ftfy.fix_text(text)`).

    It also checks, in any module without `from __future__ import annotations`, a name imported only under an
    availability check (or `if TYPE_CHECKING:`) and used, unquoted, in an annotation or default value of a
    module-level function or method, or in a module- or class-level annotation.

    ## Why is this bad?
    The guard makes the import optional, the use does not: without the package, importing the pipeline
    works and the first call fails with `NameError: name 'ftfy' is not defined`, deep inside prompt
    encoding. The optional dependency is not optional. Signatures and class bodies run when the module is
    imported, so there the `NameError` comes from `import diffusers...` itself: the whole library, not just
    the feature, requires the package (`load_textual_inversion(..., tokenizer: Optional[PreTrainedTokenizer])`
    in diffusers 0.21.0).

    ## Example
    ```python
    if is_ftfy_available():
        import ftfy


    def basic_clean(text):
        text = ftfy.fix_text(text)
        return html.unescape(html.unescape(text)).strip()
    ```

    Use instead:
    ```python
    def basic_clean(text):
        if is_ftfy_available():
            text = ftfy.fix_text(text)
        return html.unescape(html.unescape(text)).strip()
    ```

    Use instead, for an annotation: quote it (`Optional["PreTrainedTokenizer"]`).

    ## Known problems
    Only a module that calls the availability check once (at the import) is looked at: a module that checks
    again elsewhere (`_text_preprocessing` turning `clean_caption` off without ftfy) is taken to guard its
    uses, even where that check does not cover them. Bodies of methods are not looked at, only module-level
    functions, and only in pipelines: quantizer and loader helpers run once their feature has checked the
    package. Signatures (evaluated at import) are looked at in every module, for module-level functions and
    methods of module-level classes, and only for names the module binds nowhere else (an `else:` fallback,
    a dummy object or a star import is taken to bind them); a conditional expression in an annotation
    (`Model if is_onnx_available() else Any`) and Pillow's check (a required dependency) are left alone.

    ## References
    - huggingface/diffusers#13656, pattern 4
    - huggingface/diffusers#12314 (Wan's `basic_clean` called `ftfy.fix_text` without ftfy installed)
    - huggingface/diffusers#5035 (`load_textual_inversion` annotated with `PreTrainedTokenizer` without
      transformers installed)
    """

    code = "DRB408"
    pattern = 4
    severity = "warning"
    message = (
        "`{name}` is imported only when `{check}()` is true, but `{function}` uses it unconditionally, so without "
        "the package the call fails with a `NameError`; guard the use with `if {check}():`."
    )
    message_annotation = (
        "`{name}` is imported only when `{check}` is true, but this {where} is evaluated when the module is "
        "imported, so without the package importing it fails with a `NameError`; quote the annotation or add "
        "`from __future__ import annotations`."
    )
    REQUIRES_ANY = ("_available():", "TYPE_CHECKING:")
    #: uses in function bodies are judged only here: pipeline code runs for every user of the pipeline; a helper
    #: of a quantizer or loader runs only once its feature was asked for, after that feature checked the package
    BODY_PATHS = ("/pipelines/", "/modular_pipelines/")

    VALID = [
        Valid(
            """
            if is_ftfy_available():
                import ftfy


            def basic_clean(text):
                if is_ftfy_available():
                    text = ftfy.fix_text(text)
                return text.strip()
            """
        ),
        # the module checks availability again where it decides to use the package
        Valid(
            """
            if is_ftfy_available():
                import ftfy


            def clean(text):
                return ftfy.fix_text(text)


            def preprocess(text, clean_caption):
                if clean_caption and not is_ftfy_available():
                    clean_caption = False
                return clean(text) if clean_caption else text
            """
        ),
        # quoted annotations are not evaluated
        Valid(
            """
            if is_transformers_available():
                from transformers import PreTrainedModel


            class Loader:
                def load(self, text_encoder: Optional["PreTrainedModel"] = None):
                    return text_encoder
            """
        ),
        # postponed evaluation of annotations
        Valid(
            """
            from __future__ import annotations

            if is_transformers_available():
                from transformers import PreTrainedModel


            def load(text_encoder: PreTrainedModel | None = None):
                return text_encoder
            """
        ),
        # the module binds a fallback
        Valid(
            """
            if is_transformers_available():
                from transformers import PreTrainedModel
            else:
                PreTrainedModel = None


            def load(text_encoder: PreTrainedModel = None):
                return text_encoder
            """
        ),
        # a nested function's signature runs only when its parent is called; a local annotation never runs
        Valid(
            """
            if is_transformers_available():
                from transformers import PreTrainedModel


            def outer():
                def inner(model: PreTrainedModel):
                    pass
                local: PreTrainedModel = make()
                return inner, local
            """
        ),
        # a conditional expression picks a fallback without the package; Pillow is always installed
        Valid(
            """
            if is_onnx_available():
                from onnx_utils import OnnxRuntimeModel
            if is_vision_available():
                import PIL


            def load(melgan: OnnxRuntimeModel if is_onnx_available() else Any) -> PIL.Image.Image:
                return melgan
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            if is_ftfy_available():
                import ftfy


            def basic_clean(text):
                text = ftfy.fix_text(text)
                return text.strip()
            """,
            message=(
                "`ftfy` is imported only when `is_ftfy_available()` is true, but `basic_clean` uses it "
                "unconditionally, so without the package the call fails with a `NameError`; guard the use with "
                "`if is_ftfy_available():`."
            ),
        ),
        Invalid(
            """
            if is_transformers_available():
                from transformers import PreTrainedModel, PreTrainedTokenizer


            class Loader:
                def load(self, tokenizer: Optional[PreTrainedTokenizer] = None):
                    return tokenizer
            """,
            message=(
                "`PreTrainedTokenizer` is imported only when `is_transformers_available()` is true, but this "
                "annotation is evaluated when the module is imported, so without the package importing it fails "
                "with a `NameError`; quote the annotation or add `from __future__ import annotations`."
            ),
        ),
        Invalid(
            """
            if is_torch_available() and is_transformers_available():
                import transformers


            def encode(text_encoder) -> transformers.CLIPTextModel:
                return text_encoder
            """,
            message=(
                "`transformers` is imported only when `is_torch_available() and is_transformers_available()` is "
                "true, but this annotation is evaluated when the module is imported, so without the package "
                "importing it fails with a `NameError`; quote the annotation or add `from __future__ import "
                "annotations`."
            ),
        ),
    ]

    def check(self) -> None:
        self._check_annotations()
        if any(fragment in f"/{self.context.path}" for fragment in self.BODY_PATHS):
            self._check_bodies()

    def _check_bodies(self) -> None:
        module = self.context.module
        guarded: dict[str, str] = {}  # imported name -> availability check
        for statement in module.body:
            if isinstance(statement, cst.If) and statement.orelse is None:
                check = _availability(statement.test)
                if check is not None:
                    for name in _imported(statement.body):
                        guarded[name] = check
        if not guarded:
            return
        calls: dict[str, int] = {}
        for call in walk.nodes(module, cst.Call):
            if isinstance(call.func, cst.Name) and call.func.value in guarded.values():
                calls[call.func.value] = calls.get(call.func.value, 0) + 1
        bound_elsewhere = {
            n.value for a in walk.nodes(module, cst.Assign) for t in a.targets for n in walk.nodes(t.target, cst.Name)
        }
        for statement in module.body:
            if not isinstance(statement, cst.FunctionDef):
                continue
            conditional = {id(n) for b in walk.nodes(statement.body, cst.If) for n in walk.walk(b.body)}
            conditional |= {id(n) for b in walk.nodes(statement.body, cst.If) if b.orelse for n in walk.walk(b.orelse)}
            conditional |= {id(n) for e in walk.nodes(statement.body, cst.IfExp) for n in walk.walk(e)}
            reported: set[str] = set()
            for attribute in walk.nodes(statement.body, cst.Attribute):
                base = attribute.value
                if not isinstance(base, cst.Name) or base.value not in guarded or base.value in reported:
                    continue
                name = base.value
                check = guarded[name]
                if calls.get(check, 0) != 1 or name in bound_elsewhere or id(attribute) in conditional:
                    continue
                reported.add(name)
                message = self.message.format(name=name, check=check, function=statement.name.value)
                self.report(attribute, message, symbol=name, scope=statement.name.value)

    def _check_annotations(self) -> None:
        module = self.context.module
        for statement in module.body:
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    if (
                        isinstance(small, cst.ImportFrom)
                        and isinstance(small.module, cst.Name)
                        and small.module.value == "__future__"
                    ):
                        return
        guarded: dict[str, str] = {}
        guarded_blocks: list[cst.If] = []
        for statement in module.body:
            if isinstance(statement, cst.If) and statement.orelse is None:
                check = _guard(statement.test)
                if check is not None:
                    guarded_blocks.append(statement)
                    for name in _bound(statement.body):
                        guarded.setdefault(name, check)
        if not guarded:
            return
        elsewhere: set[str] = set()
        for statement in module.body:
            if not any(statement is block for block in guarded_blocks):
                elsewhere |= _bound(statement)
        if "*" in elsewhere:
            return
        for name in elsewhere:
            guarded.pop(name, None)
        if not guarded:
            return
        functions: list[cst.FunctionDef] = []
        annotations: list[cst.Annotation] = []
        for statement in module.body:
            if isinstance(statement, cst.FunctionDef):
                functions.append(statement)
            elif isinstance(statement, cst.ClassDef):
                for item in statement.body.body:
                    if isinstance(item, cst.FunctionDef):
                        functions.append(item)
                    elif isinstance(item, cst.SimpleStatementLine):
                        annotations += [s.annotation for s in item.body if isinstance(s, cst.AnnAssign)]
            elif isinstance(statement, cst.SimpleStatementLine):
                annotations += [s.annotation for s in statement.body if isinstance(s, cst.AnnAssign)]
        evaluated: list[tuple[cst.BaseExpression, str]] = [(a.annotation, "annotation") for a in annotations]
        for function in functions:
            params = function.params
            for param in (*params.posonly_params, *params.params, *params.kwonly_params):
                if param.annotation is not None:
                    evaluated.append((param.annotation.annotation, "annotation"))
                if param.default is not None:
                    evaluated.append((param.default, "default value"))
            for star in (params.star_arg, params.star_kwarg):
                if isinstance(star, cst.Param) and star.annotation is not None:
                    evaluated.append((star.annotation.annotation, "annotation"))
            if function.returns is not None:
                evaluated.append((function.returns.annotation, "annotation"))
        for expression, where in evaluated:
            for base in _bases(expression):
                if base.value in guarded:
                    message = self.message_annotation.format(name=base.value, check=guarded[base.value], where=where)
                    self.report(base, message, symbol=base.value)
