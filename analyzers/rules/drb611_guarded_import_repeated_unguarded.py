"""DRB611: an optional dependency imported under its availability check is imported again without it."""

from __future__ import annotations

from analyzers.core import Invalid, Rule, Valid
from analyzers.rules.drb404_optional_dependency_imported_unguarded import OPTIONAL, module_statements, unguarded_twins


class GuardedImportRepeatedUnguarded(Rule):
    """
    ## What it does
    Checks modules that import an optional dependency under its availability check
    (`if is_ftfy_available(): import ftfy`) and import the very same thing again at module level without it.

    ## Why is this bad?
    The guarded import says the dependency is optional for this module; the unguarded twin (usually a
    leftover of a copy, or an import sorter moving a line to the top) runs first and raises
    `ModuleNotFoundError` whenever the dependency is missing, so the guard never gets a chance. Users
    without the extra cannot even resolve the lazily exported pipeline, although they never reach the code
    that needs it. Diffusers fixed this in the SkyReels-V2 diffusion-forcing pipelines (#13113).

    ## Example
    ```python
    import ftfy
    import torch

    from ...utils import is_ftfy_available

    if is_ftfy_available():
        import ftfy
    ```

    Use instead:
    ```python
    import torch

    from ...utils import is_ftfy_available

    if is_ftfy_available():
        import ftfy
    ```

    ## Known problems
    Only module-level imports of dependencies with an `is_<name>_available()` helper are compared, and only
    the same module (`import a.b`) or the same name (`from a import b`) counts as a twin; a guarded
    `from ftfy import fix_text` next to a plain `import ftfy` is left to DRB404, which follows the module's
    export path. A version check (`is_torch_version(...)`) guarding a newer submodule is not a twin.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - huggingface/diffusers#13113 (SkyReels-V2 imported `ftfy` both unconditionally and under its check)
    """

    code = "DRB611"
    pattern = 6
    severity = "error"
    message = (
        "`{name}` is imported here unconditionally although line {line} imports it under "
        "`is_{key}_available()`; without `{top}` the module fails to import before the guard runs: drop this import."
    )
    REQUIRES_ANY = ("_available()",)
    PATHS = ("/diffusers/",)

    VALID = [
        Valid(
            """
            import torch

            from ...utils import is_ftfy_available

            if is_ftfy_available():
                import ftfy
            """
        ),
        Valid(
            # a version check guarding another submodule, and a different name of the same package
            """
            import torch
            import torch.nn.functional as F
            from transformers import T5EncoderModel

            from ...utils import is_torch_version, is_transformers_version

            if is_torch_version(">=", "2.5.0"):
                import torch.nn.attention.flex_attention as flex_attention

            if is_transformers_version(">=", "5.0.0"):
                from transformers import GlmImageProcessor
            """
        ),
        Valid(
            # the plain import sits in the `else` of a try that already handled its absence
            """
            from ...utils import is_ftfy_available

            if is_ftfy_available():
                import ftfy

            try:
                import ftfy
            except ImportError:
                ftfy = None
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import html

            import ftfy
            import torch

            from ...utils import is_ftfy_available, logging

            logger = logging.get_logger(__name__)

            if is_ftfy_available():
                import ftfy
            """,
            message=(
                "`ftfy` is imported here unconditionally although line 12 imports it under "
                "`is_ftfy_available()`; without `ftfy` the module fails to import before the guard runs: drop "
                "this import."
            ),
        ),
        Invalid(
            """
            from ...utils import is_opencv_available

            if is_opencv_available():
                from cv2 import resize

            from cv2 import INTER_AREA, resize
            """
        ),
    ]

    def check(self) -> None:
        reported: set[int] = set()
        for node, key, top, twin in unguarded_twins(module_statements(self.context.module)):
            if id(node) in reported:
                continue
            reported.add(id(node))
            line = self.context.position(twin)[0]
            message = self.message.format(name=key.replace(":", "."), line=line, key=OPTIONAL[top], top=top)
            self.report(node, message, symbol=top, scope="")
