"""DRB301: `__call__` unpacks a prompt attention mask from `encode_prompt` and never hands it on."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, Invalid, Rule, Valid, nested_blocks
from analyzers.matchers import (
    DENOISER_ATTRS,
    annotation_classes,
    call_name,
    denoiser_calls,
    parameters,
    pipeline_methods,
    self_attribute,
)
from analyzers.models import ancestry


#: calls whose arguments go nowhere near the model: validation and logging
INERT_CALLS = (
    "check_inputs",
    "logger.info",
    "logger.warning",
    "logger.warn",
    "logger.debug",
    "warnings.warn",
    "print",
)


def _is_mask_name(name: str) -> bool:
    """`prompt_attention_mask`, `prompt_embeds_mask`, `cross_attn_mask`; not an inpainting `mask`/`mask_image`."""
    return "mask" in name and not name.startswith("mask")


def _is_prompt_encoder(call: cst.Call) -> bool:
    """`self.encode_prompt(...)`, `self._encode_prompt(...)`, `self.encode_prompt_multiple_images(...)`."""
    name = call_name(call) or ""
    head, _, method = name.rpartition(".")
    return head == "self" and "encode" in method and "prompt" in method


@dataclass
class _Unit:
    """One step of `__call__` in source order: a simple statement or a compound statement's header."""

    node: cst.CSTNode
    #: the expressions evaluated by this step (for a simple statement, the statement itself)
    parts: tuple[cst.CSTNode, ...]
    #: ids of the loops around this step
    loops: tuple[int, ...]


def _units(block: Sequence[cst.CSTNode], loops: tuple[int, ...] = ()) -> Iterator[_Unit]:
    """The steps of a statement list in source order, compound statements' blocks flattened in."""
    for statement in block:
        if isinstance(statement, (cst.SimpleStatementLine, cst.SimpleStatementSuite)):
            for small in statement.body:
                yield _Unit(small, (small,), loops)
        elif isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
            yield _Unit(statement, (statement,), loops)  # a closure: any read escapes
        elif isinstance(statement, (cst.If, cst.For, cst.While, cst.With, cst.Try)):
            inner = loops
            if isinstance(statement, (cst.If, cst.While)):
                if isinstance(statement, cst.While):
                    inner = (*loops, id(statement))
                yield _Unit(statement, (statement.test,), inner)
            elif isinstance(statement, cst.For):
                inner = (*loops, id(statement))
                yield _Unit(statement, (statement.iter,), inner)
            elif isinstance(statement, cst.With):
                yield _Unit(statement, tuple(statement.items), loops)
            for nested in nested_blocks(statement):
                # a loop's `else` runs once, after the loop
                in_loop = inner if nested is not _orelse_block(statement) else loops
                yield from _units(nested, in_loop)
        else:  # `match` and anything newer: every read escapes
            yield _Unit(statement, (statement,), loops)


def _orelse_block(statement: cst.CSTNode) -> Sequence[cst.CSTNode] | None:
    orelse = getattr(statement, "orelse", None)
    if isinstance(statement, (cst.For, cst.While)) and isinstance(orelse, cst.Else):
        return orelse.body.body
    return None


def _loads(node: cst.CSTNode) -> set[str]:
    """Names `node` reads: not the attribute of `a.b`, not a keyword, not an assignment's targets."""
    excluded = {id(a.attr) for a in walk.nodes(node, cst.Attribute)}
    excluded |= {id(a.keyword) for a in walk.nodes(node, cst.Arg) if a.keyword is not None}
    return {n.value for n in walk.nodes(node, cst.Name) if id(n) not in excluded}


def _bound_names(targets: Sequence[cst.BaseExpression]) -> list[str] | None:
    """The names plain targets bind, or None when a target stores into an attribute or a subscript."""
    names: list[str] = []
    for target in targets:
        if isinstance(target, (cst.Tuple, cst.List)):
            inner = _bound_names([e.value for e in target.elements])
            if inner is None:
                return None
            names += inner
        elif isinstance(target, cst.StarredElement):
            inner = _bound_names([target.value])
            if inner is None:
                return None
            names += inner
        elif isinstance(target, cst.Name):
            names.append(target.value)
        else:
            return None
    return names


def _none_check(test: cst.BaseExpression, tainted: set[str]) -> bool:
    """Whether `test` reads the tainted names only as `x is None`, `x is not None` or bare `x`/`not x`."""
    if isinstance(test, cst.BooleanOperation):
        return _none_check(test.left, tainted) and _none_check(test.right, tainted)
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        return _none_check(test.expression, tainted)
    if isinstance(test, cst.Name):
        return True
    if isinstance(test, cst.Comparison) and isinstance(test.left, cst.Name):
        return all(
            isinstance(c.operator, (cst.Is, cst.IsNot))
            and isinstance(c.comparator, cst.Name)
            and c.comparator.value == "None"
            for c in test.comparisons
        )
    return not (_loads(test) & tainted)


class _Flow:
    """Where a value bound at one step of `__call__` goes: the names it flows into, and whether it escapes."""

    def __init__(self, units: list[_Unit]) -> None:
        self.units = units
        self.loads = [_loads_of(unit) for unit in units]

    def escapes(self, start: int, name: str) -> bool:
        """Whether the value bound to `name` at step `start`, or anything derived from it, is used."""
        # name -> the first step after which a read of it reads the tainted value
        tainted: dict[str, int] = {name: start}
        changed = True
        while changed:
            changed = False
            for index, unit in enumerate(self.units):
                live = {n for n, since in tainted.items() if self._after(index, since)}
                if not live or not (self.loads[index] & live):
                    continue
                outcome = self._effect(unit, live)
                if outcome is None:
                    return True
                for bound in outcome:
                    if bound not in tainted or tainted[bound] > index:
                        tainted[bound] = index
                        changed = True
        return False

    def _after(self, index: int, since: int) -> bool:
        if index > since:
            return True
        later, earlier = self.units[index].loops, self.units[since].loops
        return index != since and any(loop in earlier for loop in later)

    @staticmethod
    def _effect(unit: _Unit, live: set[str]) -> list[str] | None:
        """The names a step that reads `live` binds from it, or None when the value escapes there."""
        node = unit.node
        if isinstance(node, (cst.Assign, cst.AnnAssign, cst.AugAssign)):
            targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
            if node.value is None:
                return []
            return _bound_names(targets)
        if isinstance(node, (cst.Del, cst.Assert, cst.Raise, cst.Pass)):
            return []
        if isinstance(node, cst.Expr) and isinstance(node.value, cst.Call):
            name = call_name(node.value) or ""
            if any(name == inert or name.endswith("." + inert) for inert in INERT_CALLS):
                return []
            return None
        if isinstance(node, (cst.If, cst.While)):
            return [] if _none_check(node.test, live) else None
        if isinstance(node, cst.For):
            return _bound_names([node.target])
        return None


def _loads_of(unit: _Unit) -> set[str]:
    found: set[str] = set()
    for part in unit.parts:
        if isinstance(part, (cst.Assign, cst.AnnAssign)):
            found |= _loads(part.value) if part.value is not None else set()
            targets = [t.target for t in part.targets] if isinstance(part, cst.Assign) else [part.target]
            for target in targets:
                if not isinstance(target, (cst.Name, cst.Tuple, cst.List)):
                    found |= _loads(target)
        else:
            found |= _loads(part)
    return found


def _forward_masks(rule: Rule, module: str, name: str) -> tuple[str, ...] | None:
    """The mask parameters of the `forward` of model class `name` seen from `module`, or None if unknown."""
    project = rule.context.project
    memo = project.__dict__.setdefault("_drb301_forward_masks", {})
    key = (module, name)
    if key not in memo:
        memo[key] = None
        located = project.locate_class(module, name)
        if located is not None:
            for _, node in ancestry(rule.context, located[0], located[1]):
                body = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
                forward = next((s for s in body if isinstance(s, cst.FunctionDef) and s.name.value == "forward"), None)
                if forward is not None:
                    masks = tuple(p.name.value for p in parameters(forward) if _is_mask_name(p.name.value))
                    has_kwargs = isinstance(forward.params.star_kwarg, cst.Param)
                    memo[key] = masks if masks or not has_kwargs else None
                    break
    return memo[key]


def _unpacked_masks(assign: cst.Assign) -> list[cst.Name]:
    """The mask names a tuple-unpacking assignment binds: `prompt_embeds, prompt_attention_mask = ...`."""
    found = []
    for target in assign.targets:
        if isinstance(target.target, (cst.Tuple, cst.List)):
            for element in target.target.elements:
                if isinstance(element.value, cst.Name) and _is_mask_name(element.value.value):
                    found.append(element.value)
    return found


SANA_MODEL = """
class SanaTransformer2DModel(ModelMixin, ConfigMixin):
    def forward(self, hidden_states, encoder_hidden_states, timestep, encoder_attention_mask=None, attention_mask=None):
        return self.blocks(hidden_states, encoder_hidden_states, encoder_attention_mask)
"""

AURAFLOW_MODEL = """
class AuraFlowTransformer2DModel(ModelMixin, ConfigMixin):
    def forward(self, hidden_states, encoder_hidden_states=None, timestep=None, return_dict=True):
        return self.blocks(hidden_states, encoder_hidden_states)
"""


class EncodedMaskNeverReachesDenoiser(Rule):
    """
    ## What it does
    Checks for a pipeline `__call__` that unpacks a prompt attention mask from `encode_prompt`
    (`prompt_attention_mask`, `negative_prompt_embeds_mask`, ...) and then never hands it, or anything
    computed from it, to the denoiser or to anything else, although the denoiser's `forward` takes a mask.

    ## Why is this bad?
    The text encoder pads every prompt to `max_sequence_length`; the mask is the only record of which
    tokens are padding. When it is built, expanded and returned but dropped before the transformer call,
    the padded tokens take part in cross-attention and change the output, and nothing tells the user.
    Meta issue #13656 (pattern 3) notes that mask bugs keep crossing the pipeline/model boundary this way:
    the pipeline builds the mask and the model never sees it. A common form passes the positive mask and
    forgets the negative one in the unconditional pass of classifier-free guidance.

    ## Example
    ```python
    class MyPipeline(DiffusionPipeline):
        def __init__(self, tokenizer, text_encoder, transformer: MyTransformer2DModel, scheduler): ...

        def __call__(self, prompt, negative_prompt=None):
            prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask = (
                self.encode_prompt(prompt, negative_prompt)
            )
            ...
            noise_pred = self.transformer(latents, encoder_hidden_states=prompt_embeds, timestep=t)[0]
    ```

    Use instead:
    ```python
            noise_pred = self.transformer(
                latents, encoder_hidden_states=prompt_embeds, encoder_attention_mask=prompt_attention_mask, timestep=t
            )[0]
    ```

    ## Known problems
    Only a mask bound by tuple unpacking of `self.encode_prompt(...)` (or another `self.*encode*prompt*`
    method) in `__call__` is followed; a mask discarded with `_` is taken as deliberately unused. The mask
    counts as used as soon as it, or a name computed from it, is passed to any call other than
    `check_inputs` or logging, returned, stored on an object, or tested other than against `None`. The
    rule reports only when the `forward` of the class that `__init__` annotates the denoiser
    (`transformer`, `unet`, ...) with takes a mask argument: models trained without a text mask (AuraFlow,
    EasyAnimate) get zeroed or unmasked embeddings by design, and an unresolvable denoiser keeps the rule
    silent.

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#13614 (Sana: the public `attention_mask` never reaches self-attention)
    - huggingface/diffusers#12294 (QwenImage `encoder_hidden_states_mask` unused)
    """

    code = "DRB301"
    pattern = 3
    severity = "error"
    message = (
        "`{mask}` comes back from `{encoder}` but never reaches `self.{denoiser}`, so padded prompt tokens are "
        "attended to; pass it to the denoiser as `{param}`."
    )
    REQUIRES_ANY = ("encode",)
    PATHS = ("/pipelines/",)

    VALID = [
        # Sana: both masks are concatenated for classifier-free guidance and passed on
        Valid(
            """
            from ...models.transformers.sana_transformer import SanaTransformer2DModel

            class SanaPipeline(DiffusionPipeline):
                def __init__(self, tokenizer, text_encoder, vae, transformer: SanaTransformer2DModel, scheduler):
                    super().__init__()

                def __call__(self, prompt, negative_prompt="", prompt_attention_mask=None):
                    (
                        prompt_embeds,
                        prompt_attention_mask,
                        negative_prompt_embeds,
                        negative_prompt_attention_mask,
                    ) = self.encode_prompt(prompt, negative_prompt=negative_prompt, prompt_attention_mask=prompt_attention_mask)
                    if self.do_classifier_free_guidance:
                        prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)
                        prompt_attention_mask = torch.cat([negative_prompt_attention_mask, prompt_attention_mask], dim=0)
                    for t in self.scheduler.timesteps:
                        noise_pred = self.transformer(
                            latents,
                            encoder_hidden_states=prompt_embeds,
                            encoder_attention_mask=prompt_attention_mask,
                            timestep=t,
                        )[0]
                    return noise_pred
            """,
            path="diffusers/pipelines/sana/pipeline_sana.py",
            files={"diffusers/models/transformers/sana_transformer.py": SANA_MODEL},
        ),
        # AuraFlow: the mask zeroes the padded embeddings inside `encode_prompt`; the model takes no mask
        Valid(
            """
            from ...models import AuraFlowTransformer2DModel

            class AuraFlowPipeline(DiffusionPipeline):
                def __init__(self, tokenizer, text_encoder, vae, transformer: AuraFlowTransformer2DModel, scheduler):
                    super().__init__()

                def __call__(self, prompt, negative_prompt=None):
                    (
                        prompt_embeds,
                        prompt_attention_mask,
                        negative_prompt_embeds,
                        negative_prompt_attention_mask,
                    ) = self.encode_prompt(prompt=prompt, negative_prompt=negative_prompt)
                    prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)
                    return self.transformer(latents, encoder_hidden_states=prompt_embeds, timestep=t)[0]
            """,
            path="diffusers/pipelines/aura_flow/pipeline_aura_flow.py",
            files={
                "diffusers/models/__init__.py": "from .transformers.auraflow_transformer_2d import AuraFlowTransformer2DModel\n",
                "diffusers/models/transformers/auraflow_transformer_2d.py": AURAFLOW_MODEL,
            },
        ),
        # Chroma: a helper turns the mask into the joint text+image mask the transformer gets
        Valid(
            """
            from ...models.transformers.sana_transformer import SanaTransformer2DModel

            class ChromaPipeline(DiffusionPipeline):
                def __init__(self, transformer: SanaTransformer2DModel | None = None):
                    super().__init__()

                def __call__(self, prompt):
                    prompt_embeds, text_ids, prompt_attention_mask = self.encode_prompt(prompt=prompt)
                    attention_mask = self._prepare_attention_mask(
                        batch_size=latents.shape[0], sequence_length=image_seq_len, attention_mask=prompt_attention_mask
                    )
                    return self.transformer(latents, encoder_hidden_states=prompt_embeds, attention_mask=attention_mask)
            """,
            files={"diffusers/models/transformers/sana_transformer.py": SANA_MODEL},
        ),
        # a mask discarded with `_`, one checked and stored into the denoiser's kwargs, and a loop reading it
        Valid(
            """
            from ...models.transformers.sana_transformer import SanaTransformer2DModel

            class MyPipeline(DiffusionPipeline):
                def __init__(self, transformer: SanaTransformer2DModel):
                    super().__init__()

                def __call__(self, prompt, prompts):
                    prompt_embeds, _ = self.encode_prompt(prompt)
                    kwargs = {}
                    negative_prompt_embeds, negative_prompt_attention_mask = self.encode_prompt("")
                    if negative_prompt_attention_mask is not None:
                        kwargs["encoder_attention_mask"] = negative_prompt_attention_mask
                    for chunk in prompts:
                        if chunk is not None:
                            latents = self.transformer(latents, encoder_hidden_states=embeds, encoder_attention_mask=mask)
                        embeds, mask = self.encode_prompt(chunk)
                    return self.transformer(latents, encoder_hidden_states=negative_prompt_embeds, **kwargs)
            """,
            files={"diffusers/models/transformers/sana_transformer.py": SANA_MODEL},
        ),
        # the denoiser's class cannot be resolved: stay silent
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __init__(self, transformer):
                    super().__init__()

                def __call__(self, prompt):
                    prompt_embeds, prompt_attention_mask = self.encode_prompt(prompt)
                    return self.transformer(latents, encoder_hidden_states=prompt_embeds)
            """
        ),
    ]
    INVALID = [
        # separate conditional and unconditional passes: the negative mask is forgotten
        Invalid(
            """
            from ...models.transformers.sana_transformer import SanaTransformer2DModel

            class MyPipeline(DiffusionPipeline):
                def __init__(self, tokenizer, text_encoder, vae, transformer: SanaTransformer2DModel, scheduler):
                    super().__init__()

                def __call__(self, prompt, negative_prompt=None, negative_prompt_attention_mask=None):
                    prompt_embeds, prompt_attention_mask = self.encode_prompt(prompt)
                    if self.do_classifier_free_guidance:
                        negative_prompt_embeds, negative_prompt_attention_mask = self.encode_prompt(
                            negative_prompt, prompt_attention_mask=negative_prompt_attention_mask
                        )
                    for i, t in enumerate(timesteps):
                        noise_pred = self.transformer(
                            latents, encoder_hidden_states=prompt_embeds, encoder_attention_mask=prompt_attention_mask
                        )[0]
                        if self.do_classifier_free_guidance:
                            neg_noise_pred = self.transformer(latents, encoder_hidden_states=negative_prompt_embeds)[0]
                            noise_pred = neg_noise_pred + self.guidance_scale * (noise_pred - neg_noise_pred)
                        latents = self.scheduler.step(noise_pred, t, latents)[0]
                    return latents
            """,
            message=(
                "`negative_prompt_attention_mask` comes back from `encode_prompt` but never reaches "
                "`self.transformer`, so padded prompt tokens are attended to; pass it to the denoiser as "
                "`encoder_attention_mask`."
            ),
            files={"diffusers/models/transformers/sana_transformer.py": SANA_MODEL},
        ),
        # the masks are expanded for guidance and moved to the device, then left behind
        Invalid(
            """
            from ...models import SanaTransformer2DModel

            class MyVideoPipeline(DiffusionPipeline):
                def __init__(self, tokenizer, text_encoder, vae, transformer: Optional[SanaTransformer2DModel] = None):
                    super().__init__()

                def __call__(self, prompt, negative_prompt=None):
                    prompt_embeds, negative_prompt_embeds, prompt_attention_mask, negative_prompt_attention_mask = (
                        self.encode_prompt(prompt=prompt, negative_prompt=negative_prompt)
                    )
                    if self.do_classifier_free_guidance:
                        prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
                        prompt_attention_mask = torch.cat([negative_prompt_attention_mask, prompt_attention_mask])
                    prompt_attention_mask = prompt_attention_mask.to(device=device)
                    if prompt_attention_mask is None:
                        raise ValueError(f"no mask: {prompt_attention_mask}")
                    logger.info(prompt_attention_mask.shape)
                    del negative_prompt_attention_mask
                    return self.transformer(latents, t, encoder_hidden_states=prompt_embeds)[0]
            """,
            files={
                "diffusers/models/__init__.py": "from .transformers.sana_transformer import SanaTransformer2DModel\n",
                "diffusers/models/transformers/sana_transformer.py": SANA_MODEL,
            },
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            unpacks = {
                id(assign)
                for assign in walk.nodes(method.body, cst.Assign)
                if isinstance(assign.value, cst.Call) and _is_prompt_encoder(assign.value) and _unpacked_masks(assign)
            }
            if unpacks:
                self._check_call(cls, method, unpacks)

    def _check_call(self, cls: Definition, method: cst.FunctionDef, unpacks: set[int]) -> None:
        units = list(_units(method.body.body if isinstance(method.body, cst.IndentedBlock) else [method.body]))
        flow = _Flow(units)
        target: tuple[str, str] | tuple[()] | None = None
        for index, unit in enumerate(units):
            node = unit.node
            if id(node) not in unpacks:
                continue  # not a mask unpacked from the prompt encoder (or one inside a nested def)
            assign = cst.ensure_type(node, cst.Assign)  # `unpacks` holds `… = <prompt encoder call>` assignments
            for name in _unpacked_masks(assign):
                if flow.escapes(index, name.value):
                    continue
                if target is None:
                    target = self._denoiser_mask(cls, method)
                if not target:
                    return
                encoder = (call_name(cst.ensure_type(assign.value, cst.Call)) or "").rpartition(".")[2]
                message = self.message.format(mask=name.value, encoder=encoder, denoiser=target[0], param=target[1])
                self.report(name, message, symbol=name.value, scope=f"{cls.qualname}.__call__")

    def _denoiser_mask(self, cls: Definition, method: cst.FunctionDef) -> tuple[str, str] | tuple[()]:
        """(denoiser attribute, mask parameter of its `forward`), or `()` when the denoiser takes no mask."""
        init = self.context.methods(cls).get("__init__")
        if init is None or not denoiser_calls(method):
            return ()
        annotations = {p.name.value: p.annotation.annotation for p in parameters(init) if p.annotation is not None}
        used = [
            a.attr.value
            for a in walk.nodes(method.body, cst.Attribute)
            if self_attribute(a) and a.attr.value in DENOISER_ATTRS and a.attr.value in annotations
        ]
        for attr in dict.fromkeys(used):
            for class_name in annotation_classes(annotations[attr]) or ():
                masks = _forward_masks(self, self.context.module_name, class_name)
                if masks:
                    preferred = [m for m in masks if "encoder" in m] or list(masks)
                    return attr, preferred[0]
        return ()
