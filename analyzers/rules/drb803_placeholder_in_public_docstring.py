"""DRB803: TODO/FIXME/placeholder text left in a public docstring of a pipeline, model or modular block."""

from __future__ import annotations

import re

import libcst as cst

from analyzers.core import Definition, Invalid, Rule, Valid


#: what the modular docstring generator writes for an input or output declared without a description
GENERATED = "TODO: Add description."
#: the block and parameter names a collapsed finding lists before it says "and N more"
SHOWN_BLOCKS, SHOWN_PARAMS = 3, 8
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


def _listed(names: list[str], limit: int) -> str:
    """`a`, `b`, `c` and 4 more (for a limit of 3)."""
    shown = ", ".join(f"`{name}`" for name in names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


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
    A docstring built at run time (`__doc__ = ...`, string formatting) is not seen. The generated
    `TODO: Add description.` is one finding per module, on the first block that carries it: the generator
    writes it into every composed block that repeats an undocumented input, so one missing `description`
    shows up in many blocks, and the fix is one `description` where the input is declared.

    Severity is `note`: a placeholder is documentation debt, not a defect a user runs into.

    ## References
    - huggingface/diffusers#13656, pattern 8 (TODO placeholders in user-facing artifacts)
    - diffusers `utils/modular_auto_docstring.py` (`make modular-autodoctrings`)
    """

    code = "DRB803"
    pattern = 8
    severity = "note"
    message = (
        "The public docstring of `{name}` still contains the placeholder `{text}`; write the missing "
        "documentation or move the note to a code comment."
    )
    message_generated = (
        "The generated docstring{s} of {count} block{s} in this module ({blocks}) say{verb} `TODO: Add description.` "
        "for {params}, which the modular docstring generator writes for each input and output declared without a "
        "`description`; give those a `description` and regenerate with `python utils/modular_auto_docstring.py "
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
                "The generated docstring of 1 block in this module (`FluxBeforeDenoiseStep`) says `TODO: Add "
                "description.` for `height`, `denoiser_input_fields`, which the modular docstring generator writes "
                "for each input and output declared without a `description`; give those a `description` and "
                "regenerate with `python utils/modular_auto_docstring.py --fix_and_overwrite`."
            ),
            path="diffusers/modular_pipelines/flux/modular_blocks_flux.py",
        ),
        # the generator's placeholder repeated in every block of a module: one finding for the module
        Invalid(
            '''
            class WanCoreDenoiseStep(SequentialPipelineBlocks):
                """
                  Inputs:
                      num_videos_per_prompt (`None`, *optional*, defaults to 1):
                          TODO: Add description.
                """


            class WanBlocks(SequentialPipelineBlocks):
                """
                  Inputs:
                      prompt (`str`):
                          TODO: Add description.
                      num_videos_per_prompt (`None`, *optional*, defaults to 1):
                          TODO: Add description.
                """


            class WanAutoBlocks(SequentialPipelineBlocks):
                """
                  Inputs:
                      prompt (`str`):
                          TODO: Add description.
                """


            class WanImage2VideoBlocks(SequentialPipelineBlocks):
                """
                  Outputs:
                      videos (`list`):
                          TODO: Add description.
                """
            ''',
            message=(
                "The generated docstrings of 4 blocks in this module (`WanCoreDenoiseStep`, `WanBlocks`, "
                "`WanAutoBlocks` and 1 more) say `TODO: Add description.` for `num_videos_per_prompt`, `prompt`, "
                "`videos`, which the modular docstring generator writes for each input and output declared without "
                "a `description`; give those a `description` and regenerate with `python "
                "utils/modular_auto_docstring.py --fix_and_overwrite`."
            ),
            path="diffusers/modular_pipelines/wan/modular_blocks_wan.py",
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
        #: (block node, block name, undocumented parameters) of each docstring the generator left placeholders in
        self.generated: list[tuple[cst.CSTNode, str, list[str]]] = []
        doc = module.get_docstring(clean=False)
        if doc and module.body:
            self._check_docstring(module.body[0], doc, self.context.module_name, "")
        for definition in self.context.definitions:
            if _public(definition):
                node = definition.node
                self._check_docstring(
                    node.name, node.get_docstring(clean=False), definition.qualname, definition.qualname
                )
        self._report_generated()

    def _check_docstring(self, node: cst.CSTNode, doc: str | None, name: str, scope: str) -> None:
        if not doc:
            return
        generated = _GENERATED_PARAM_RE.findall(doc)
        if generated:
            self.generated.append((node, name, list(dict.fromkeys(generated))))
            doc = doc.replace(GENERATED, "")
        found = _PLACEHOLDER_RE.search(doc)
        if found:
            self.report(node, self.message.format(name=name, text=found.group()), symbol=name, scope=scope)

    def _report_generated(self) -> None:
        """One finding for every generated placeholder of the module, on the first block that has one: the
        generator repeats an undocumented input in each block that composes it, so per-block findings would
        say one missing `description` many times."""
        if not self.generated:
            return
        blocks = [name for _, name, _ in self.generated]
        params = list(dict.fromkeys(p for _, _, found in self.generated for p in found))
        plural = len(blocks) > 1
        message = self.message_generated.format(
            s="s" if plural else "",
            verb="" if plural else "s",
            count=len(blocks),
            blocks=_listed(blocks, SHOWN_BLOCKS),
            params=_listed(params, SHOWN_PARAMS),
        )
        self.report(self.generated[0][0], message, symbol=GENERATED, scope="")
