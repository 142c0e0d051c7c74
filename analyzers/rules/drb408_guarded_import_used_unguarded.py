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


class GuardedImportUsedUnguarded(Rule):
    """
    ## What it does
    Checks modules that import an optional package only under its availability check
    (`if is_ftfy_available(): import ftfy`, no `else`) and never ask about it again, while a module-level
    function uses the imported name unconditionally (`text = ftfy.fix_text(text)`).

    ## Why is this bad?
    The guard makes the import optional, the use does not: without the package, importing the pipeline
    works and the first call fails with `NameError: name 'ftfy' is not defined`, deep inside prompt
    encoding. The optional dependency is not optional.

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

    ## Known problems
    Only a module that calls the availability check once (at the import) is looked at: a module that checks
    again elsewhere (`_text_preprocessing` turning `clean_caption` off without ftfy) is taken to guard its
    uses, even where that check does not cover them. Methods are not looked at, only module-level functions,
    and only in pipelines: quantizer and loader helpers run once their feature has checked the package.

    ## References
    - huggingface/diffusers#13656, pattern 4
    - huggingface/diffusers#12314 (Wan's `basic_clean` called `ftfy.fix_text` without ftfy installed)
    """

    code = "DRB408"
    pattern = 4
    severity = "warning"
    message = (
        "`{name}` is imported only when `{check}()` is true, but `{function}` uses it unconditionally, so without "
        "the package the call fails with a `NameError`; guard the use with `if {check}():`."
    )
    REQUIRES_ANY = ("_available():",)
    #: pipeline code runs for every user of the pipeline; a helper of a quantizer or loader runs only once its
    #: feature was asked for, after that feature checked the package
    PATHS = ("/pipelines/", "/modular_pipelines/")

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
    ]

    def check(self) -> None:
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
