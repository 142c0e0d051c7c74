"""DRB101: a conditioning tensor for the denoiser is repeated by `batch_size` only, not by `num_*_per_prompt`."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import denoiser_calls, parameters, pipeline_methods


#: `__call__` parameters that multiply the effective batch
PER_PROMPT_RE = re.compile(r"^num_\w+_per_prompt$")
#: tensor methods that grow the batch dimension when given `batch_size` first
EXPANDING_METHODS = frozenset({"repeat", "repeat_interleave", "expand"})
#: attributes of a tensor that read its metadata, not its values (`x.shape[0]` does not carry `x`)
METADATA_ATTRS = frozenset({"shape", "dtype", "device", "ndim", "size", "dim", "numel"})


def _is_name(node: cst.CSTNode | None, value: str) -> bool:
    return isinstance(node, cst.Name) and node.value == value


def _names(root: cst.CSTNode, skipped: set[int] | None = None) -> list[cst.Name]:
    """Every `Name` under `root` but the attribute of `a.b` and the keyword of `f(x=y)`.

    The `*args`/`**kwargs` parameters that `walk` leaves out are included.
    """
    excluded = {id(a.attr) for a in walk.nodes(root, cst.Attribute)}
    excluded |= {id(a.keyword) for a in walk.nodes(root, cst.Arg) if a.keyword is not None}
    found = [n for n in walk.nodes(root, cst.Name) if id(n) not in excluded]
    for params in walk.nodes(root, cst.Parameters):
        if skipped is not None and id(params) in skipped:
            continue
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                found.extend(_names(star, skipped))
    return found


def _value_reads(node: cst.CSTNode) -> set[str]:
    """Names whose tensor values flow into `node`: `x.shape[0]`, `x.dtype`, `x.size(1)` do not count."""
    skipped: set[int] = set()
    for lam in walk.nodes(node, cst.Lambda):
        if id(lam) not in skipped:
            skipped.update(id(n) for n in walk.walk(lam))
    for attribute in walk.nodes(node, cst.Attribute):
        if attribute.attr.value in METADATA_ATTRS and id(attribute) not in skipped:
            skipped.update(id(n) for n in walk.walk(attribute))
    return {n.value for n in _names(node, skipped) if id(n) not in skipped}


def _all_reads(node: cst.CSTNode) -> set[str]:
    return {n.value for n in _names(node)}


def _assignments(body: cst.CSTNode) -> list[tuple[str, cst.BaseExpression, cst.CSTNode]]:
    """(target name, value, statement) for `x = …`, `x += …` and each Name of `a, b = …` in `body`.

    Assignments inside nested functions are left out (not in source order: assignments come first).
    """
    found: list[tuple[str, cst.BaseExpression, cst.CSTNode]] = []
    nested = walk.nodes(body, cst.FunctionDef)
    inner: set[int] = set()
    for function in nested:
        for kind in (cst.Assign, cst.AugAssign, cst.AnnAssign):
            inner.update(id(n) for n in walk.nodes(function, kind))
    for assign in walk.nodes(body, cst.Assign):
        if id(assign) not in inner:
            for target in assign.targets:
                for name in _target_names(target.target):
                    found.append((name, assign.value, assign))
    for augmented in walk.nodes(body, cst.AugAssign):
        if id(augmented) not in inner:
            for name in _target_names(augmented.target):
                found.append((name, augmented.value, augmented))
    for annotated in walk.nodes(body, cst.AnnAssign):
        if id(annotated) not in inner and annotated.value is not None:
            for name in _target_names(annotated.target):
                found.append((name, annotated.value, annotated))
    return found


def _target_names(target: cst.BaseExpression) -> list[str]:
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for element in target.elements for n in _target_names(element.value)]
    return []


def _batch_size_expansion(value: cst.BaseExpression) -> cst.Call | None:
    """The `….repeat(batch_size, …)` / `repeat_interleave(batch_size, …)` / `expand(batch_size, …)` in `value`."""
    node: cst.BaseExpression = value
    while isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        if node.func.attr.value in EXPANDING_METHODS and node.args:
            first = node.args[0]
            if first.keyword is None and first.star == "" and _is_name(first.value, "batch_size"):
                return node
        node = node.func.value
    return None


def _multiplies(node: cst.CSTNode, left: str, right: str) -> bool:
    """Whether `node` holds `left * right` or `right * left` (both plain names)."""
    for op in _binary_ops(node):
        if isinstance(op.operator, cst.Multiply):
            names = {n.value for n in (op.left, op.right) if isinstance(n, cst.Name)}
            if names == {left, right}:
                return True
    return False


def _binary_ops(node: cst.CSTNode) -> list[cst.BinaryOperation]:
    return walk.nodes(node, cst.BinaryOperation)


class ConditioningExpandedByBatchSizeOnly(Rule):
    """
    ## What it does
    Checks pipeline `__call__` methods for a conditioning tensor that reaches the denoiser
    (`self.transformer(...)`, `self.unet(...)` or an alias) after being expanded with
    `.repeat(batch_size, ...)`, `.repeat_interleave(batch_size, ...)` or `.expand(batch_size, ...)`,
    where `batch_size` is the number of prompts, while the latents of the same call are sized
    `batch_size * num_images_per_prompt` (or `num_videos_per_prompt`, ...).

    ## Why is this bad?
    The prompt embeddings and the latents reach the effective batch `batch_size * num_*_per_prompt`,
    but this tensor stays at `batch_size`. With `num_*_per_prompt > 1` the denoiser receives
    conditioning of mismatched batch sizes: it crashes when it concatenates them, or pairs samples
    with the wrong conditioning when a broadcast hides the mismatch.

    ## Example
    ```python
    batch_size = len(prompt)
    prompt_embeds = self.encode_prompt(prompt, num_videos_per_prompt=num_videos_per_prompt)
    image_embeds = self.encode_image(image, device)
    image_embeds = image_embeds.repeat(batch_size, 1, 1)
    latents = self.prepare_latents(batch_size * num_videos_per_prompt, ...)
    noise_pred = self.transformer(latents, encoder_hidden_states=prompt_embeds, encoder_hidden_states_image=image_embeds)
    ```

    Use instead:
    ```python
    image_embeds = image_embeds.repeat(batch_size, 1, 1)
    image_embeds = image_embeds.repeat_interleave(num_videos_per_prompt, dim=0)
    ```

    ## Known problems
    Only an expansion written in `__call__` itself is seen; a helper that repeats by a `batch_size`
    argument is not followed. A tensor that is not expanded at all is not reported. A `__call__` that
    reassigns `batch_size` to include `num_*_per_prompt` is skipped.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#13578 (`WanImageToVideoPipeline` repeats `image_embeds` by `batch_size` only)
    - huggingface/diffusers#13693 (fix proposal: expand `image_embeds` by `num_videos_per_prompt`)
    """

    code = "DRB101"
    pattern = 1
    severity = "error"
    message = (
        "`{tensor}` reaches the denoiser expanded by `batch_size` only while the latents are sized "
        "`batch_size * {per_prompt}`; expand it to `batch_size * {per_prompt}` in prompt order, e.g. with "
        "`{tensor}.repeat_interleave({per_prompt}, dim=0)`."
    )
    REQUIRES_ANY = ("_per_prompt",)
    PATHS = ("/pipelines/",)

    VALID = [
        # the expansion folds the per-prompt count into the repeat
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, num_videos_per_prompt=1):
                    batch_size = len(prompt)
                    prompt_embeds = self.encode_prompt(prompt, num_videos_per_prompt=num_videos_per_prompt)
                    image_embeds = self.encode_image(image)
                    image_embeds = image_embeds.repeat(batch_size * num_videos_per_prompt, 1, 1)
                    latents = self.prepare_latents(batch_size * num_videos_per_prompt)
                    return self.transformer(latents, encoder_hidden_states=prompt_embeds, image=image_embeds)
            """
        ),
        # repeated by batch_size, then by the per-prompt count
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, num_videos_per_prompt=1):
                    batch_size = len(prompt)
                    image_embeds = self.encode_image(image).repeat(batch_size, 1, 1)
                    image_embeds = image_embeds.repeat_interleave(num_videos_per_prompt, dim=0)
                    latents = self.prepare_latents(batch_size * num_videos_per_prompt)
                    return self.transformer(latents, image=image_embeds)
            """
        ),
        # batch_size already is the effective batch
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, num_images_per_prompt=1):
                    batch_size = len(prompt) * num_images_per_prompt
                    image_embeds = self.encode_image(image).repeat(batch_size, 1, 1)
                    latents = self.prepare_latents(batch_size * num_images_per_prompt)
                    return self.unet(latents, image=image_embeds)
            """
        ),
        # the repeated tensor never reaches the denoiser (only its shape does)
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, num_images_per_prompt=1):
                    batch_size = len(prompt)
                    ids = self.make_ids().repeat(batch_size, 1)
                    seq_len = ids.shape[1]
                    latents = self.prepare_latents(batch_size * num_images_per_prompt, seq_len)
                    return self.transformer(latents)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class WanImageToVideoPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, image_embeds=None, num_videos_per_prompt=1):
                    batch_size = len(prompt)
                    prompt_embeds = self.encode_prompt(prompt, num_videos_per_prompt=num_videos_per_prompt)
                    if image_embeds is None:
                        image_embeds = self.encode_image(image)
                    image_embeds = image_embeds.repeat(batch_size, 1, 1)
                    latents = self.prepare_latents(batch_size * num_videos_per_prompt)
                    for t in timesteps:
                        noise_pred = self.transformer(
                            hidden_states=latents,
                            encoder_hidden_states=prompt_embeds,
                            encoder_hidden_states_image=image_embeds,
                        )
            """,
            message=(
                "`image_embeds` reaches the denoiser expanded by `batch_size` only while the latents are sized "
                "`batch_size * num_videos_per_prompt`; expand it to `batch_size * num_videos_per_prompt` in prompt "
                "order, e.g. with `image_embeds.repeat_interleave(num_videos_per_prompt, dim=0)`."
            ),
        ),
        # through an alias of the denoiser and of the tensor
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, num_images_per_prompt=1):
                    batch_size = len(prompt)
                    cond = self.encode_image(image).expand(batch_size, -1, -1)
                    latents = self.prepare_latents(num_images_per_prompt * batch_size)
                    model = self.transformer if high_noise else self.transformer_2
                    model_input = torch.cat([latents, cond], dim=1)
                    return model(model_input)
            """,
            message=(
                "`cond` reaches the denoiser expanded by `batch_size` only while the latents are sized "
                "`batch_size * num_images_per_prompt`; expand it to `batch_size * num_images_per_prompt` in prompt "
                "order, e.g. with `cond.repeat_interleave(num_images_per_prompt, dim=0)`."
            ),
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            self._check_call(f"{cls.qualname}.__call__", method)

    def _check_call(self, scope: str, function: cst.FunctionDef) -> None:
        per_prompt = [p.name.value for p in parameters(function) if PER_PROMPT_RE.match(p.name.value)]
        if not per_prompt:
            return
        body = function.body
        assignments = _assignments(body)
        # `batch_size = batch_size * num_images_per_prompt` or similar: batch_size is the effective batch
        batch_size_values = [value for name, value, _ in assignments if name == "batch_size"]
        per_prompt = [
            n
            for n in per_prompt
            if _multiplies(body, "batch_size", n) and not any(n in _all_reads(v) for v in batch_size_values)
        ]
        if not per_prompt:
            return
        n = per_prompt[0]
        value_reads: dict[int, set[str]] = {}
        denoiser_reads: set[str] = set()
        for call in denoiser_calls(function):
            for arg in call.args:
                denoiser_reads |= _value_reads(arg.value)
        if not denoiser_reads:
            return
        for name, value, statement in assignments:
            expansion = _batch_size_expansion(value)
            if expansion is None or name == "batch_size":
                continue
            carriers = self._carriers(name, assignments, value_reads)
            if not carriers & denoiser_reads:
                continue
            # an expansion of the tensor itself by the per-prompt count, before or after
            if any(target == name and n in _all_reads(v) for target, v, _ in assignments):
                continue
            self.report(statement, self.message.format(tensor=name, per_prompt=n), symbol=name, scope=scope)

    @staticmethod
    def _carriers(
        name: str, assignments: list[tuple[str, cst.BaseExpression, cst.CSTNode]], value_reads: dict[int, set[str]]
    ) -> set[str]:
        """`name` and the names assigned from its values, transitively (`x = torch.cat([latents, name])`)."""
        carriers = {name}
        changed = True
        while changed:
            changed = False
            for target, value, _ in assignments:
                if target in carriers:
                    continue
                reads = value_reads.get(id(value))
                if reads is None:
                    reads = value_reads[id(value)] = _value_reads(value)
                if reads & carriers:
                    carriers.add(target)
                    changed = True
        return carriers
