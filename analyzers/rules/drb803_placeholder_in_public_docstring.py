"""DRB803: TODO/FIXME/placeholder text left in a public docstring of a pipeline, model or modular block."""

from __future__ import annotations

import re

import libcst as cst

from analyzers.core import Definition, Invalid, Rule, Valid


#: what the modular docstring generator writes for an input or output declared without a description
GENERATED = "TODO: Add description."
_GENERATED_PARAM_RE = re.compile(r"^\s*\**(\w+) \([^\n]*\):\s*\n\s*TODO: Add description\.", re.MULTILINE)
#: placeholders a reader should never see; `XXX` is left out: docstrings quote warnings such as
#: "Weights from XXX not initialized", where it stands for a layer name
_PLACEHOLDER_RE = re.compile(r"\bTODO\b|\bTodo:|\bFIXME\b|<(?i:fill[ _-]?in)>|<FILL\b[^>]*>|(?i:lorem ipsum)")


def _public(definition: Definition) -> bool:
    """A class, or a function/method of a public class, whose name is public (dunders included)."""
    current: Definition | None = definition
    while current is not None:
        name = current.name
        if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
            return False
        if current.parent is not None and not current.parent.is_class:
            return False  # nested in a function: not documented API
        current = current.parent
    return True


class PlaceholderInPublicDocstring(Rule):
    """
    ## What it does
    Checks the docstrings of modules and of public classes, functions and methods under
    `diffusers/pipelines/`, `diffusers/models/` and `diffusers/modular_pipelines/` for placeholder text:
    `TODO`, `FIXME`, `<fill in>`, `lorem ipsum`, and the `TODO: Add description.` that the modular
    docstring generator writes for inputs and outputs declared without a `description`. Comments are not
    looked at.

    ## Why is this bad?
    These docstrings are the API reference users read (on the documentation site, in `help()`, in the
    generated modular block docs). A placeholder there documents nothing and tells the user the docs are
    unfinished. Meta issue #13656 (pattern 8) lists "generated docs or TODO placeholders remain in
    user-facing artifacts" among the signs of copy-paste drift.

    ## Example
    ```python
    class LTX2PipelineOutput(BaseOutput):
        r\"\"\"
        Args:
            audio (`torch.Tensor`, `np.ndarray`):
                TODO
        \"\"\"
    ```

    Use instead:
    ```python
    class LTX2PipelineOutput(BaseOutput):
        r\"\"\"
        Args:
            audio (`torch.Tensor`, `np.ndarray`):
                The generated audio waveform, of shape `(batch_size, num_channels, num_samples)`.
        \"\"\"
    ```

    ## Known problems
    `XXX` is not looked for (docstrings quote transformers' "Weights from XXX not initialized" warning).
    A docstring built at run time (`__doc__ = ...`, string formatting) is not seen. For generated modular
    docstrings one finding per block lists the undocumented inputs; the fix belongs on the leaf block's
    `InputParam`, so composed blocks that repeat an input report it again.

    ## References
    - huggingface/diffusers#13656, pattern 8 (TODO placeholders in user-facing artifacts)
    - diffusers `utils/modular_auto_docstring.py` (`make modular-autodoctrings`)
    """

    code = "DRB803"
    pattern = 8
    message = (
        "The public docstring of `{name}` still contains the placeholder `{text}`; write the missing "
        "documentation or move the note to a code comment."
    )
    message_generated = (
        "The generated docstring of `{name}` says `TODO: Add description.` for {params}; give those "
        "inputs and outputs a `description` and regenerate it with `python utils/modular_auto_docstring.py "
        "--fix_and_overwrite`."
    )
    PATHS = ("/pipelines/", "/models/", "/modular_pipelines/")
    REQUIRES_ANY = ("TODO", "Todo", "FIXME", "<fill", "<FILL", "orem ipsum")

    VALID = [
        # notes in comments, private helpers, nested functions and `XXX` in a quoted warning are fine
        Valid(
            '''
            """Flux pipeline."""


            class FluxPipeline(DiffusionPipeline):
                r"""
                Pipeline for text-to-image generation.
                """

                def from_pretrained(cls):
                    """The warning *Weights from XXX not initialized* means the layer XXX is new."""
                    # TODO: support sharded checkpoints
                    return cls

                def _prepare(self):
                    """TODO: document"""

                    def inner():
                        """FIXME"""


            class _Helper:
                def run(self):
                    """TODO"""
            '''
        ),
        # "todo" inside a word or in lower case prose is not a placeholder
        Valid(
            '''
            def encode(prompt):
                """Encode `prompt` (a todo list of <image> placeholders); nothing to do here."""
            ''',
            path="diffusers/models/transformers/transformer_foo.py",
        ),
    ]
    INVALID = [
        Invalid(
            '''
            class LTX2PipelineOutput(BaseOutput):
                r"""
                Args:
                    audio (`torch.Tensor`, `np.ndarray`):
                        TODO
                """
            ''',
            message=(
                "The public docstring of `LTX2PipelineOutput` still contains the placeholder `TODO`; write the "
                "missing documentation or move the note to a code comment."
            ),
            path="diffusers/pipelines/ltx2/pipeline_output.py",
        ),
        Invalid(
            '''
            class FluxBeforeDenoiseStep(SequentialPipelineBlocks):
                """
                Before denoise step.

                  Inputs:
                      height (`int`, *optional*):
                          TODO: Add description.
                      **denoiser_input_fields (`None`, *optional*):
                          TODO: Add description.
                      prompt (`str`):
                          The prompt.
                """
            ''',
            message=(
                "The generated docstring of `FluxBeforeDenoiseStep` says `TODO: Add description.` for `height`, "
                "`denoiser_input_fields`; give those inputs and outputs a `description` and regenerate it with "
                "`python utils/modular_auto_docstring.py --fix_and_overwrite`."
            ),
            path="diffusers/modular_pipelines/flux/modular_blocks_flux.py",
        ),
        Invalid(
            '''
            """FIXME: describe this module."""
            ''',
            message=(
                "The public docstring of `diffusers.models.foo` still contains the placeholder `FIXME`; write the "
                "missing documentation or move the note to a code comment."
            ),
            path="diffusers/models/foo.py",
        ),
    ]

    def check(self) -> None:
        module = self.context.module
        doc = module.get_docstring(clean=False)
        if doc and module.body:
            self._check_docstring(module.body[0], doc, self.context.module_name, "")
        for definition in self.context.definitions:
            if _public(definition):
                node = definition.node
                self._check_docstring(
                    node.name, node.get_docstring(clean=False), definition.qualname, definition.qualname
                )

    def _check_docstring(self, node: cst.CSTNode, doc: str | None, name: str, scope: str) -> None:
        if not doc:
            return
        generated = _GENERATED_PARAM_RE.findall(doc)
        if generated:
            params = ", ".join(f"`{p}`" for p in dict.fromkeys(generated))
            self.report(node, self.message_generated.format(name=name, params=params), symbol=name, scope=scope)
            doc = doc.replace(GENERATED, "")
        found = _PLACEHOLDER_RE.search(doc)
        if found:
            self.report(node, self.message.format(name=name, text=found.group()), symbol=name, scope=scope)
