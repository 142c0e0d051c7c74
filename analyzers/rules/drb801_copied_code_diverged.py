"""DRB801: a `# Copied from diffusers.…` block that no longer matches its source (what `make fix-copies` fixes)."""

from __future__ import annotations

import re

import libcst as cst

from analyzers.copies import COPY_RE as _COPY_RE
from analyzers.copies import Missing as _Missing
from analyzers.copies import find_code as _find_code
from analyzers.copies import lines as _lines
from analyzers.copies import should_continue as _should_continue
from analyzers.core import Definition, Invalid, Rule, Valid
from analyzers.findings import Edit
from analyzers.fixes import Proposal


# The contract of diffusers' `utils/check_copies.py`, reproduced line by line on text (`analyzers.copies` holds the
# part `drbot fix` shares: the marker, and where a copied object's body lies in its source).
_REPLACE_RE = re.compile(r"^\s*(\S+)->(\S+)(\s+.*|$)")
_DEF_RE = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)")
# what a hand-written marker looks like when check_copies will not read it: `# copied from diffusers.x.y`, or a
# marker garbled by a merge or an editor (`# Copied fromCopied from diffusers.x.y`, `# Copied fromdiffusers.x.y`);
# only repeats of the marker's own words may precede `diffusers.`, so `# Adapted from ...` prose stays out
_LOOSE_RE = re.compile(r"^\s*#\s*(?:copied\s*from\s*)+diffusers\.(\S+)", re.IGNORECASE)


def _get_indent(code: str) -> str:
    for line in code.split("\n"):
        if line:
            found = re.search(r"^(\s*)\S", line)
            return found.groups()[0] if found else ""
    return ""


def _normalized(code: str) -> str:
    """Code with what `ruff format` may change after a replacement taken out: whitespace, line breaks,
    magic trailing commas and the parentheses ruff adds or drops when it rewraps a line."""
    code = re.sub(r"\s+", "", code)
    code = re.sub(r",(?=[)\]}])", "", code)
    return code.replace("(", "").replace(")", "")


def _marked_definitions(
    module: cst.Module, definitions: list[Definition], marker: re.Pattern = _COPY_RE
) -> dict[tuple[str, str], list[Definition]]:
    """(comment text, defined name) -> the definitions whose leading comments carry a `# Copied from`."""
    marked: dict[tuple[str, str], list[Definition]] = {}
    first = module.body[0] if module.body else None
    for definition in definitions:
        node = definition.node
        empty_lines = list(node.leading_lines) + list(node.lines_after_decorators)
        if node is first:  # libcst keeps the comments above a file's first statement in the module header
            empty_lines = list(module.header) + empty_lines
        for line in empty_lines:
            if line.comment is not None and marker.search(line.comment.value):
                marked.setdefault((line.comment.value.strip(), definition.name), []).append(definition)
    return marked


class CopiedCodeDiverged(Rule):
    """
    ## What it does
    Checks that every class or function marked `# Copied from diffusers.<module>.<object>` (optionally
    `with A->B, C->D` and `all-casing`) still matches its source once the replacements are applied, with
    the same contract as diffusers' `utils/check_copies.py`: the source is looked up by module path and
    `class`/`def` name, the comparison covers the body below the `def`/`class` line up to the end of the
    indented block (or an `# End copy` comment), trailing blank lines and the source's own nested
    `# Copied from` comments are ignored. Also checks for markers that `check_copies.py` does not read at
    all, such as `# copied from diffusers.…` in lower case: the copy looks synced and never is.

    ## Why is this bad?
    A `# Copied from` header promises that the copy follows its source: `make fix-copies` overwrites the
    copy from the source. A copy edited by hand loses its edit on the next `make fix-copies`; a source
    edited without running it leaves the fix in one variant and the bug in the others. Meta issue #13656
    (pattern 8) describes exactly this drift: fixes land in one variant pipeline but not another.

    ## Example
    ```python
    # Copied from diffusers.pipelines.flux.pipeline_flux.calculate_shift
    def calculate_shift(image_seq_len, base_seq_len=256, max_shift=1.15):
        m = max_shift / base_seq_len  # the source was fixed, this copy was not
        return image_seq_len * m
    ```

    Use instead:
    ```python
    # Copied from diffusers.pipelines.flux.pipeline_flux.calculate_shift
    def calculate_shift(image_seq_len, base_seq_len=256, max_shift=1.15):
        m = (max_shift - 0.5) / (4096 - base_seq_len)
        return image_seq_len * m
    ```
    (edit the source, then run `make fix-copies`; or drop the header if the copy must differ.)

    ## Known problems
    `check_copies.py` runs `ruff format` on the source after applying `with A->B` replacements; a rule
    cannot, so for copies with replacements only differences that survive removing whitespace,
    trailing commas and parentheses are reported: a drift that only changes those is missed. Like
    `check_copies.py`, the `def`/`class` line itself is not compared (a default changed on a one-line
    signature goes unseen). A source module outside the scanned tree is not looked at.

    ## References
    - huggingface/diffusers#13656, pattern 8 (copy-paste divergence)
    - diffusers `utils/check_copies.py` (`make fix-copies`)
    """

    code = "DRB801"
    pattern = 8
    severity = "warning"
    DRIFT_FIX = True
    message = (
        "`{copy}` no longer matches `diffusers.{source}`, which its `# Copied from` comment names; edit the "
        "source and run `make fix-copies`, or drop the comment if the copy must differ."
    )
    message_missing = (
        "`# Copied from diffusers.{source}` names no class or function, so `make fix-copies` fails on "
        "`{copy}`; point the comment at the current source or drop it."
    )
    message_unread = (
        "`{marker}` above `{copy}` is not the `# Copied from diffusers.<module>.<object>` comment that "
        "`make fix-copies` reads, so the copy is never checked against its source; write the marker exactly so."
    )
    REQUIRES_ANY = ("Copied from diffusers.", "copied from diffusers.")

    VALID = [
        # an exact copy, and a copy with a replacement and its `all-casing` variants
        Valid(
            """
            # Copied from diffusers.pipelines.flux.pipeline_flux.calculate_shift
            def calculate_shift(image_seq_len, base_seq_len=256):
                # the slope
                m = 1.0 / base_seq_len
                return image_seq_len * m


            class FooPipeline(DiffusionPipeline):
                # Copied from diffusers.pipelines.flux.pipeline_flux.FluxPipeline._unpack with Flux->Foo all-casing
                def _unpack(self, latents):
                    foo_latents = FooHelper.unpack(latents)

                    return foo_latents
            """,
            path="diffusers/pipelines/foo/pipeline_foo.py",
            files={
                "diffusers/pipelines/flux/pipeline_flux.py": """
                    # Copied from diffusers.pipelines.sd.pipeline_sd.calculate_shift
                    def calculate_shift(image_seq_len, base_seq_len=256):
                        # the slope
                        m = 1.0 / base_seq_len
                        return image_seq_len * m


                    class FluxPipeline(DiffusionPipeline):
                        def _pack(self, latents):
                            return latents

                        def _unpack(self, latents):
                            flux_latents = FluxHelper.unpack(latents)

                            return flux_latents
                    """,
            },
        ),
        # a replacement that makes the line shorter: ruff re-joins what the copy still wraps
        Valid(
            """
            class FooPipeline(DiffusionPipeline):
                # Copied from diffusers.pipelines.flux.pipeline_flux.FluxPipeline.encode with VeryLongFluxName->Foo
                def encode(self, prompt):
                    return Foo.encode_everything(prompt, max_sequence_length=512, num_images_per_prompt=1)
            """,
            path="diffusers/pipelines/foo/pipeline_foo.py",
            files={
                "diffusers/pipelines/flux/pipeline_flux.py": """
                    class FluxPipeline(DiffusionPipeline):
                        def encode(self, prompt):
                            return VeryLongFluxName.encode_everything(
                                prompt, max_sequence_length=512, num_images_per_prompt=1
                            )
                    """,
            },
        ),
        # the source module is not in the scanned tree: nothing to compare with
        Valid(
            """
            # Copied from diffusers.pipelines.bar.pipeline_bar.retrieve_latents
            def retrieve_latents(encoder_output):
                return encoder_output.latents
            """
        ),
        # an `# End copy` comment ends the copied block; what follows may differ
        Valid(
            """
            class FooPipeline(DiffusionPipeline):
                # Copied from diffusers.pipelines.flux.pipeline_flux.FluxPipeline.check
                def check(self, height):
                    if height % 8 != 0:
                        raise ValueError(height)
                    # End copy
                    extra = 1
            """,
            path="diffusers/pipelines/foo/pipeline_foo.py",
            files={
                "diffusers/pipelines/flux/pipeline_flux.py": """
                    class FluxPipeline(DiffusionPipeline):
                        def check(self, height):
                            if height % 8 != 0:
                                raise ValueError(height)
                    """,
            },
        ),
    ]
    INVALID = [
        # the source was fixed, the copy was not (what `make fix-copies` would have propagated)
        Invalid(
            """
            class FooImg2ImgPipeline(DiffusionPipeline):
                # Copied from diffusers.pipelines.flux.pipeline_flux.FluxPipeline.check_inputs
                def check_inputs(self, height, width):
                    if height % self.vae_scale_factor * 2 != 0:
                        raise ValueError(height)
            """,
            message=(
                "`FooImg2ImgPipeline.check_inputs` no longer matches "
                "`diffusers.pipelines.flux.pipeline_flux.FluxPipeline.check_inputs`, which its `# Copied from` "
                "comment names; edit the source and run `make fix-copies`, or drop the comment if the copy "
                "must differ."
            ),
            path="diffusers/pipelines/foo/pipeline_foo_img2img.py",
            files={
                "diffusers/pipelines/flux/pipeline_flux.py": """
                    class FluxPipeline(DiffusionPipeline):
                        def check_inputs(self, height, width):
                            if height % (self.vae_scale_factor * 2) != 0:
                                raise ValueError(height)
                    """,
            },
            fixed="""
            class FooImg2ImgPipeline(DiffusionPipeline):
                # Copied from diffusers.pipelines.flux.pipeline_flux.FluxPipeline.check_inputs
                def check_inputs(self, height, width):
                    if height % (self.vae_scale_factor * 2) != 0:
                        raise ValueError(height)
            """,
        ),
        # a drift with replacements: a real token changed, not just formatting
        Invalid(
            """
            # Copied from diffusers.pipelines.flux.pipeline_flux.calculate_shift with flux->foo
            def calculate_shift(image_seq_len, base_seq_len=256, max_shift=1.15):
                foo_m = max_shift / base_seq_len
                return image_seq_len * foo_m
            """,
            message=(
                "`calculate_shift` no longer matches `diffusers.pipelines.flux.pipeline_flux.calculate_shift`, "
                "which its `# Copied from` comment names; edit the source and run `make fix-copies`, or drop "
                "the comment if the copy must differ."
            ),
            path="diffusers/pipelines/foo/pipeline_foo.py",
            files={
                "diffusers/pipelines/flux/pipeline_flux.py": """
                    def calculate_shift(image_seq_len, base_seq_len=256, max_shift=1.15):
                        flux_m = (max_shift - 0.5) / base_seq_len
                        return image_seq_len * flux_m
                    """,
            },
            fixed="""
            # Copied from diffusers.pipelines.flux.pipeline_flux.calculate_shift with flux->foo
            def calculate_shift(image_seq_len, base_seq_len=256, max_shift=1.15):
                foo_m = (max_shift - 0.5) / base_seq_len
                return image_seq_len * foo_m
            """,
        ),
        # the source object was renamed or removed
        Invalid(
            """
            # Copied from diffusers.pipelines.flux.pipeline_flux.retrieve_latents
            def retrieve_latents(encoder_output):
                return encoder_output.latents
            """,
            message=(
                "`# Copied from diffusers.pipelines.flux.pipeline_flux.retrieve_latents` names no class or "
                "function, so `make fix-copies` fails on `retrieve_latents`; point the comment at the current "
                "source or drop it."
            ),
            path="diffusers/pipelines/foo/pipeline_foo.py",
            files={"diffusers/pipelines/flux/pipeline_flux.py": "def calculate_shift(x):\n    return x\n"},
        ),
        Invalid(
            # a marker in lower case: `make fix-copies` skips it, so the copy can drift unseen
            """
            class FooScheduler(SchedulerMixin):
                # copied from diffusers.schedulers.scheduling_bar.BarScheduler._karras
                def _karras(self, sigmas):
                    return sigmas.flip(0)
            """,
            message=(
                "`# copied from diffusers.schedulers.scheduling_bar.BarScheduler._karras` above `FooScheduler._karras` "
                "is not the `# Copied from diffusers.<module>.<object>` comment that `make fix-copies` reads, so the "
                "copy is never checked against its source; write the marker exactly so."
            ),
            path="diffusers/schedulers/scheduling_foo.py",
        ),
        Invalid(
            # a marker doubled by a bad merge: check_copies' pattern does not match it either
            """
            class FooEditPipeline(DiffusionPipeline):
                # Copied fromCopied from diffusers.pipelines.bar.pipeline_bar.BarPipeline.encode_prompt
                def encode_prompt(self, prompt):
                    return self.text_encoder(prompt)
            """,
            message=(
                "`# Copied fromCopied from diffusers.pipelines.bar.pipeline_bar.BarPipeline.encode_prompt` above "
                "`FooEditPipeline.encode_prompt` is not the `# Copied from diffusers.<module>.<object>` comment that "
                "`make fix-copies` reads, so the copy is never checked against its source; write the marker exactly so."
            ),
            path="diffusers/pipelines/foo/pipeline_foo_edit.py",
        ),
    ]

    def check(self) -> None:
        self._check_unread_markers()
        marked = _marked_definitions(self.context.module, self.context.definitions)
        if not marked:
            return
        taken: dict[tuple[str, str], int] = {}
        lines = _lines(self.context.source)
        for index, line in enumerate(lines):
            search = _COPY_RE.search(line)
            if search is None:
                continue
            name = self._defined_name(lines, index)
            key = (line.strip(), name or "")
            candidates = marked.get(key, [])
            position = taken.get(key, 0)
            taken[key] = position + 1
            if position >= len(candidates):
                continue  # not a comment above a definition (inside a body, a docstring, ...)
            definition = candidates[position]
            try:
                consistent = self._is_consistent(lines, index, search)
            except _Missing:
                self.report(
                    definition.node.name,
                    self.message_missing.format(source=search.group(2), copy=definition.qualname),
                    symbol=f"diffusers.{search.group(2)}",
                    scope=definition.qualname,
                )
                continue
            if consistent is False:
                start, end, expected = self._expected
                fix = None
                if start < end:  # what `make fix-copies` writes: the source, replacements applied, over the copy
                    fix = Proposal(
                        f"sync the copy with `diffusers.{search.group(2).split()[0]}`, as `make fix-copies` does",
                        edits=(Edit(start + 1, end, expected),),
                    )
                self.report(
                    definition.node.name,
                    self.message.format(source=search.group(2), copy=definition.qualname),
                    symbol=f"diffusers.{search.group(2)}",
                    scope=definition.qualname,
                    fix=fix,
                )

    def _check_unread_markers(self) -> None:
        """Markers check_copies skips: `# copied from diffusers.…` in another case, or naming no object."""
        loose = _marked_definitions(self.context.module, self.context.definitions, _LOOSE_RE)
        for (comment, _), definitions in loose.items():
            found = _COPY_RE.search(comment)
            if found is not None:
                continue  # check_copies reads it; `check` compares it
            marker = comment.strip()
            loose_match = _LOOSE_RE.search(comment)
            target = loose_match.group(1) if loose_match else ""
            for definition in definitions:
                message = self.message_unread.format(marker=marker, copy=definition.qualname)
                self.report(definition.node.name, message, symbol=f"diffusers.{target}", scope=definition.qualname)

    @staticmethod
    def _defined_name(lines: list[str], index: int) -> str | None:
        """The name of the first `def`/`class` after the comment, over decorators and other comments."""
        for line in lines[index + 1 : index + 12]:
            found = _DEF_RE.match(line)
            if found:
                return found.group(1)
            stripped = line.strip()
            if stripped and not stripped.startswith(("#", "@")):
                return None
        return None

    def _is_consistent(self, lines: list[str], line_index: int, search: re.Match) -> bool | None:
        """`is_copy_consistent` for one comment: True, False, or None when the source is not in view."""
        indent, object_name, replace_pattern = search.groups()
        theoretical_code = _find_code(self.context.project, object_name)
        if theoretical_code is None:
            return None
        theoretical_indent = _get_indent(theoretical_code)
        start_index = line_index + 1 if indent == theoretical_indent else line_index + 2
        indent = theoretical_indent
        line_index = start_index
        should_continue = True
        while line_index < len(lines) and should_continue:
            line_index += 1
            if line_index >= len(lines):
                break
            line = lines[line_index]
            should_continue = _should_continue(line, indent) and re.search(f"^{indent}# End copy", line) is None
        while line_index > 0 and len(lines[line_index - 1]) <= 1:
            line_index -= 1
        observed_code = "".join(lines[start_index:line_index])

        theoretical_code = "\n".join(line for line in theoretical_code.split("\n") if _COPY_RE.search(line) is None)
        self._expected = (start_index, line_index, theoretical_code)
        if not replace_pattern:
            return observed_code == theoretical_code
        try:
            for pattern in replace_pattern.replace("with", "").split(","):
                found = _REPLACE_RE.search(pattern)
                if found is None:
                    continue
                obj1, obj2, option = found.groups()
                theoretical_code = re.sub(obj1, obj2, theoretical_code)
                if option.strip() == "all-casing":
                    theoretical_code = re.sub(obj1.lower(), obj2.lower(), theoretical_code)
                    theoretical_code = re.sub(obj1.upper(), obj2.upper(), theoretical_code)
        except re.error:
            return None
        self._expected = (start_index, line_index, theoretical_code)
        if observed_code == theoretical_code:
            return True
        # check_copies runs `ruff format` here; compare what formatting cannot change
        return _normalized(observed_code) == _normalized(theoretical_code)
