"""DRB105: a tensor that already holds both guidance halves is repeated by `num_*_per_prompt`, interleaving them."""

from __future__ import annotations

import re
from collections.abc import Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, nested_blocks
from analyzers.matchers import call_name


#: names that multiply the effective batch
PER_PROMPT_RE = re.compile(r"^num_\w+_per_prompt$")
CONCATENATE = frozenset({"torch.cat", "torch.concat", "torch.concatenate"})
#: methods that copy a tensor's rows without changing what they hold
COPYING_METHODS = frozenset(
    {"repeat", "repeat_interleave", "expand", "expand_as", "to", "clone", "contiguous", "detach", "view", "reshape"}
)


def _method_chain(value: cst.BaseExpression) -> tuple[cst.BaseExpression, list[cst.Call]]:
    """(base, calls) of `base.a(...).b(...)`, calls innermost first."""
    chain: list[cst.Call] = []
    node = value
    while isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and call_name(node) not in CONCATENATE:
        chain.append(node)
        node = node.func.value
    return node, list(reversed(chain))


def _method(call: cst.Call) -> str:
    return cst.ensure_type(call.func, cst.Attribute).attr.value


def _concatenated(value: cst.BaseExpression) -> list[cst.BaseExpression] | None:
    """The parts of `torch.cat([a, b, ...])` joined along the batch dimension, else None."""
    if not isinstance(value, cst.Call) or call_name(value) not in CONCATENATE or not value.args:
        return None
    first = value.args[0]
    if first.keyword is not None or not isinstance(first.value, (cst.List, cst.Tuple)):
        return None
    elements = first.value.elements
    if len(elements) < 2 or any(isinstance(e, cst.StarredElement) for e in elements):
        return None
    dims = [a.value for a in value.args[1:] if a.keyword is None or a.keyword.value in ("dim", "axis")]
    if dims and not (isinstance(dims[0], cst.Integer) and dims[0].value == "0"):
        return None
    return [e.value for e in elements]


def _tiling_repeat(value: cst.BaseExpression, tensor: str | None) -> str | None:
    """The per-prompt count of `tensor[...].repeat(<count>, ...)`, when the count multiplies the batch dimension
    (`tensor` None: of any base, as in `torch.cat([a, b]).repeat(<count>, 1)`)."""
    base, chain = _method_chain(value)
    if tensor is not None and not (isinstance(base, cst.Name) and base.value == tensor):
        return None
    for call in chain:
        method = _method(call)
        if method == "repeat" and call.args and call.args[0].keyword is None and not call.args[0].star:
            counts = [n.value for n in walk.nodes(call.args[0].value, cst.Name) if PER_PROMPT_RE.match(n.value)]
            return counts[0] if counts else None
        if method not in COPYING_METHODS:
            return None
    return None


def _branches(function: cst.FunctionDef) -> dict[int, dict[int, int]]:
    """For each assignment of `function`, the `if` statements around it and which of their branches holds it."""
    found: dict[int, dict[int, int]] = {}

    def visit(statements: Sequence[cst.CSTNode], path: dict[int, int]) -> None:
        for statement in statements:
            if isinstance(statement, cst.If):
                visit(statement.body.body, {**path, id(statement): 0})
                orelse = statement.orelse
                if isinstance(orelse, cst.If):
                    visit([orelse], {**path, id(statement): 1})
                elif isinstance(orelse, cst.Else):
                    visit(orelse.body.body, {**path, id(statement): 1})
            elif isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
                continue
            elif isinstance(statement, (cst.SimpleStatementLine, cst.SimpleStatementSuite)):
                for small in statement.body:
                    found[id(small)] = path
            else:
                for block in nested_blocks(statement):
                    visit(block, path)

    body = function.body
    visit(body.body if isinstance(body, cst.IndentedBlock) else [body], {})
    return found


def _exclusive(first: dict[int, int], second: dict[int, int]) -> bool:
    """Whether two statements sit in different branches of one `if`: one never runs after the other."""
    return any(branch != second[statement] for statement, branch in first.items() if statement in second)


class GuidanceBatchTiledByRepeat(Rule):
    """
    ## What it does
    Checks pipeline functions for a tensor built by concatenating two different tensors along the batch
    (`x = torch.cat([negative_x, x])`, the classifier-free guidance batch) that is then repeated by
    `num_images_per_prompt` (or `num_videos_per_prompt`, ...) along that same dimension:
    `x = x.repeat(num_images_per_prompt, 1, 1, 1)`.

    ## Why is this bad?
    `repeat` tiles the whole batch: `[uncond, cond]` becomes `[uncond, cond, uncond, cond, ...]`. The
    denoiser's output is later split in two halves with `chunk(2)`, so with `num_*_per_prompt > 1` the
    "unconditional" half holds conditional rows and the other way round. Nothing crashes: the shapes are
    right and the guidance is silently wrong.

    ## Example
    ```python
    if do_classifier_free_guidance:
        image_latents = torch.cat([torch.zeros_like(image_latents), image_latents])
    image_latents = image_latents.repeat(num_videos_per_prompt, 1, 1, 1)
    ```

    Use instead:
    ```python
    image_latents = image_latents.repeat(num_videos_per_prompt, 1, 1, 1)
    if do_classifier_free_guidance:
        image_latents = torch.cat([torch.zeros_like(image_latents), image_latents])
    ```

    ## Known problems
    The concatenation and the repeat are matched within one function, in source order, through the name the
    concatenation is bound to or in one chained expression; a repeat in another function, or after the tensor
    went through another call, is not seen. Concatenations of a tensor with copies of
    itself (`torch.cat([ids, ids])`, `torch.cat([ids, ids.repeat(k, 1)])`) are left alone: tiling identical
    rows changes nothing.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#7786 (Stable Video Diffusion: image latents repeated after the guidance concat)
    - huggingface/diffusers#4327 (SDXL refiner: `add_time_ids` repeated after the guidance concat)
    """

    code = "DRB105"
    pattern = 1
    severity = "error"
    message = (
        "`{tensor}` is repeated by `{per_prompt}` after `torch.cat` joined {parts} along the batch, which tiles "
        "them ({first}, {second}, {first}, {second}, ...) and mixes up the guidance halves; repeat before "
        "concatenating, or use `repeat_interleave({per_prompt}, dim=0)`."
    )
    REQUIRES_ANY = ("_per_prompt",)
    PATHS = ("/pipelines/",)

    VALID = [
        # each part is expanded before the concatenation
        Valid(
            """
            def encode_reference(self, image, num_videos_per_prompt, do_classifier_free_guidance):
                reference = self.vae.encode(image).latent_dist.mode()
                reference = reference.repeat(num_videos_per_prompt, 1, 1, 1)
                if do_classifier_free_guidance:
                    reference = torch.cat([torch.zeros_like(reference), reference])
                return reference
            """
        ),
        # interleaving keeps the halves in place; concatenating copies of one tensor tiles nothing
        Valid(
            """
            def __call__(self, prompt, num_images_per_prompt=1):
                cond = torch.cat([self.null_cond, self.cond], dim=0)
                cond = cond.repeat_interleave(num_images_per_prompt, dim=0)
                ids = self.ids()
                extra = ids.repeat(3, 1)
                ids = torch.cat([ids, extra], dim=0)
                ids = ids.to(self.device).repeat(num_images_per_prompt, 1)
                return self.unet(cond, ids)
            """
        ),
        # the concatenation and the repeat sit in different branches of one `if`
        Valid(
            """
            def prepare_reference(self, reference, num_images_per_prompt, do_classifier_free_guidance):
                if do_classifier_free_guidance:
                    positive, negative = reference.chunk(2)
                    reference = torch.cat([negative.repeat(num_images_per_prompt, 1), positive.repeat(num_images_per_prompt, 1)])
                else:
                    reference = reference.repeat(num_images_per_prompt, 1)
                return reference
            """
        ),
        # channels are joined, not the batch
        Valid(
            """
            def prepare_inputs(self, latents, mask, num_images_per_prompt):
                model_input = torch.cat([latents, mask], dim=1)
                model_input = model_input.repeat(num_images_per_prompt, 1, 1, 1)
                return model_input
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            def encode_reference(self, image, num_videos_per_prompt, do_classifier_free_guidance):
                reference = self.vae.encode(image).latent_dist.mode()
                if do_classifier_free_guidance:
                    empty = torch.zeros_like(reference)
                    reference = torch.cat([empty, reference])
                reference = reference.repeat(num_videos_per_prompt, 1, 1, 1)
                return reference
            """,
            message=(
                "`reference` is repeated by `num_videos_per_prompt` after `torch.cat` joined `empty` and `reference` "
                "along the batch, which tiles them (`empty`, `reference`, `empty`, `reference`, ...) and mixes up the "
                "guidance halves; repeat before concatenating, or use `repeat_interleave(num_videos_per_prompt, dim=0)`."
            ),
        ),
        # micro-conditioning ids, repeated through `.to(...)` by the effective batch
        Invalid(
            """
            class MyRefinerPipeline(DiffusionPipeline):
                def __call__(self, prompt, num_images_per_prompt=1, aesthetic_score=6.0, negative_aesthetic_score=2.5):
                    batch_size = len(prompt)
                    time_ids, negative_time_ids = self.make_time_ids(aesthetic_score, negative_aesthetic_score)
                    if self.do_classifier_free_guidance:
                        time_ids = torch.cat([negative_time_ids, time_ids], dim=0)
                    time_ids = time_ids.to(self.device).repeat(batch_size * num_images_per_prompt, 1)
                    return self.unet(latents, added_cond_kwargs={"time_ids": time_ids})
            """
        ),
        # the concatenation repeated in one expression
        Invalid(
            """
            def condition(self, style, negative_style, num_images_per_prompt):
                style_batch = torch.cat([negative_style, style], dim=0).repeat(num_images_per_prompt, 1)
                return style_batch
            """
        ),
        # repeated under another name
        Invalid(
            """
            def condition(self, style, negative_style, num_images_per_prompt):
                both = torch.concat((negative_style, style))
                style_batch = both.repeat(num_images_per_prompt, 1)
                return style_batch
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            if definition.is_class or not isinstance(definition.node, cst.FunctionDef):
                continue
            self._check_function(definition.qualname, definition.node)

    def _check_function(self, scope: str, function: cst.FunctionDef) -> None:
        assigns = [
            a
            for a in walk.own_nodes(function, cst.Assign)
            if len(a.targets) == 1 and isinstance(a.targets[0].target, cst.Name)
        ]
        if not assigns:
            return
        branches = _branches(function)
        # the latest assignment of each name, walking in source order
        latest: dict[str, cst.Assign] = {}
        for assign in assigns:
            target = cst.ensure_type(assign.targets[0].target, cst.Name).value
            base, _ = _method_chain(assign.value)
            # the repeated tensor: a name bound to the concatenation (under this or another name), or the
            # concatenation itself (`torch.cat([negative, ids]).repeat(n, 1)`)
            repeated = base.value if isinstance(base, cst.Name) else None
            previous = latest.get(repeated) if repeated is not None else None
            if previous is not None:
                parts = _concatenated(previous.value)
                per_prompt = _tiling_repeat(assign.value, repeated)
            elif base is not assign.value:
                parts, per_prompt, previous = _concatenated(base), _tiling_repeat(assign.value, None), assign
            else:
                parts = per_prompt = None
            if previous is not None:
                if (
                    parts is not None
                    and per_prompt is not None
                    and not _exclusive(branches.get(id(previous), {}), branches.get(id(assign), {}))
                    and not self._copies(parts, latest)
                ):
                    first, second = (self._label(p) for p in parts[:2])
                    names = " and ".join(self._label(p) for p in parts)
                    message = self.message.format(
                        tensor=repeated or target,
                        per_prompt=per_prompt,
                        parts=names,
                        first=first,
                        second=second,
                    )
                    self.report(assign, message, symbol=target, scope=scope)
            latest[target] = assign

    @staticmethod
    def _label(part: cst.BaseExpression) -> str:
        return f"`{part.value}`" if isinstance(part, cst.Name) else "a tensor"

    @staticmethod
    def _copies(parts: list[cst.BaseExpression], latest: dict[str, cst.Assign]) -> bool:
        """Whether every part is one tensor or a row copy of it (`ids`, `ids.repeat(2, 1)`, `ids.to(device)`)."""

        def root(expression: cst.BaseExpression, depth: int = 0) -> str | None:
            base, chain = _method_chain(expression)
            if any(_method(c) not in COPYING_METHODS for c in chain) or not isinstance(base, cst.Name):
                return None
            assign = latest.get(base.value)
            if depth < 4 and assign is not None and assign.value is not expression:
                inner_base, inner_chain = _method_chain(assign.value)
                if inner_chain and isinstance(inner_base, cst.Name) and inner_base.value != base.value:
                    found = root(assign.value, depth + 1)
                    if found is not None:
                        return found
            return base.value

        roots = {root(p) for p in parts}
        return None not in roots and len(roots) == 1
