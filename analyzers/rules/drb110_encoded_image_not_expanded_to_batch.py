"""DRB110: latents encoded from the given images are joined with a `batch_size`-row tensor, never expanded to it."""

from __future__ import annotations

import libcst as cst

from analyzers import casts, walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import calls, keyword, parameters, pipeline_classes, target_names, values_read


#: tensor methods and functions that grow a tensor's batch (what the standard `batch_size > x.shape[0]` branch uses)
_EXPANDING = frozenset({"repeat", "repeat_interleave", "expand", "expand_as", "tile"})
#: constructors of a tensor of a given shape
_SHAPED = frozenset({"zeros", "ones", "full", "empty", "randn", "randn_tensor", "new_zeros", "new_ones", "new_full"})


def _last(name: str | None) -> str:
    return (name or "").rpartition(".")[2]


def _encodes(value: cst.CSTNode) -> bool:
    """Whether `value` runs the VAE's encoder: `self.vae.encode(...)` (through `retrieve_latents` or not)."""
    return any(dotted_name(call.func) in ("self.vae.encode", "self.vae._encode") for call in calls(value))


def _expands(value: cst.CSTNode, name: str) -> bool:
    """Whether `value` grows `name` along its batch: `name.repeat(...)`, `torch.cat([name] * n)`, `expand`, ..."""
    for call in calls(value):
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value in _EXPANDING:
            if any(n.value == name for n in walk.nodes(func.value, cst.Name)):
                return True
            if dotted_name(func.value) == "torch" and any(
                n.value == name for arg in call.args for n in walk.nodes(arg.value, cst.Name)
            ):
                return True
        if dotted_name(func) == "torch.cat" and call.args:
            first = call.args[0].value
            if isinstance(first, cst.BinaryOperation) and isinstance(first.operator, cst.Multiply):
                if any(n.value == name for n in walk.nodes(first, cst.Name)):
                    return True
    return False


def _dim(call: cst.Call) -> int | None:
    """The literal `dim` of a `torch.cat` call (0 when not given), or None when it is not a literal."""
    arg = keyword(call, "dim")
    if arg is None:
        positional = [a for a in call.args if a.keyword is None]
        if len(positional) < 2:
            return 0
        arg = positional[1]
    value = arg.value
    if isinstance(value, cst.Integer):
        return int(value.value)
    if isinstance(value, cst.UnaryOperation) and isinstance(value.operator, cst.Minus):
        if isinstance(value.expression, cst.Integer):
            return -int(value.expression.value)
    return None


def _end(node: cst.CSTNode) -> int:
    """Where `node` ends in the file's walk: an assignment takes effect after the calls in its value."""
    found = walk.span(node)
    return found[1] if found is not None else -1


def _appended(call: cst.Call) -> tuple[str, cst.BaseExpression] | None:
    """(list name, item) for `items.append(item)`, else None."""
    func = call.func
    if (
        isinstance(func, cst.Attribute)
        and func.attr.value == "append"
        and isinstance(func.value, cst.Name)
        and len(call.args) == 1
        and call.args[0].keyword is None
    ):
        return func.value.value, call.args[0].value
    return None


def _loop_bindings(loop: cst.For) -> list[tuple[str, str | None]]:
    """(loop variable, the name of the sequence it walks, or None) for `for x in xs`,
    `for a, b in zip(xs, ys)` and `for i, x in enumerate(xs)`."""
    target, source = loop.target, loop.iter
    if isinstance(target, cst.Name):
        return [(target.value, source.value if isinstance(source, cst.Name) else None)]
    if not isinstance(target, (cst.Tuple, cst.List)):
        return []
    elements = [e.value for e in target.elements]
    sequences: list[cst.BaseExpression | None] = [None] * len(elements)
    if isinstance(source, cst.Call) and dotted_name(source.func) == "zip":
        if len(source.args) == len(elements) and all(a.keyword is None and a.star == "" for a in source.args):
            sequences = [a.value for a in source.args]
    elif isinstance(source, cst.Call) and dotted_name(source.func) == "enumerate" and len(elements) == 2:
        if source.args and source.args[0].keyword is None:
            sequences = [None, source.args[0].value]
    bindings: list[tuple[str, str | None]] = []
    for element, sequence in zip(elements, sequences, strict=True):
        for name in target_names(element):
            bindings.append(
                (name, sequence.value if isinstance(sequence, cst.Name) and isinstance(element, cst.Name) else None)
            )
    return bindings


def _passes_on(value: cst.BaseExpression, name: str) -> bool:
    """Whether `value` hands `name` to a helper that keeps its rows: `self._pack_latents(latents, ...)`,
    `latents.to(dtype)`."""
    node = value
    while isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "to":
        node = node.func.value
    if isinstance(node, cst.Name):
        return node is not value and node.value == name
    if not isinstance(node, cst.Call) or not node.args:
        return False
    first = node.args[0]
    return (
        first.keyword is None and first.star == "" and isinstance(first.value, cst.Name) and first.value.value == name
    )


class EncodedImageNotExpandedToBatch(Rule):
    """
    ## What it does
    Checks pipeline methods that take `batch_size` for latents encoded from the given images with the
    VAE (one row per image) that are concatenated along another axis (`dim=1`, `dim=2`: frames or
    channels) with a tensor built with `batch_size` rows, while nothing in between expands the encoded
    latents to `batch_size` (`repeat`, `repeat_interleave`, `expand`, `torch.cat([x] * n)`).

    ## Why is this bad?
    `batch_size` is the number of prompts times `num_videos_per_prompt` (or `num_images_per_prompt`). With
    one image and `num_videos_per_prompt=2`, or two prompts, the encoded latents have fewer rows than the
    padding or noise they are joined with, and the call fails with "Sizes of tensors must match except in
    dimension 1". Only a single prompt with one output per prompt works.

    ## Example
    ```python
    def prepare_latents(self, image, batch_size, num_frames, dtype, device, generator):
        image_latents = [retrieve_latents(self.vae.encode(img.unsqueeze(0)), generator) for img in image]
        image_latents = torch.cat(image_latents, dim=0).to(dtype)
        padding_shape = (batch_size, num_frames - 1, 16, 60, 90)
        latent_padding = torch.zeros(padding_shape, device=device, dtype=dtype)
        image_latents = torch.cat([image_latents, latent_padding], dim=1)
    ```

    Use instead:
    ```python
        image_latents = torch.cat(image_latents, dim=0).to(dtype)
        if batch_size % image_latents.shape[0] != 0:
            raise ValueError(f"Cannot duplicate {image_latents.shape[0]} images to a batch of {batch_size}.")
        image_latents = image_latents.repeat_interleave(batch_size // image_latents.shape[0], dim=0)
    ```

    ## Known problems
    The encoded tensor is followed by name through assignments that read it; the other tensor must be
    made by a shape constructor (`torch.zeros`, `new_ones`, `randn_tensor`, ...) from a shape whose first
    entry is `batch_size`, given in the call or in a tuple assigned to a name of the method. A join along
    the batch axis (`dim=0`) is not looked at, and neither is a `dim` that is not a literal.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - DRC001 (one output per prompt and per `num_videos_per_prompt`) fails on CogVideoXImageToVideoPipeline
      and HunyuanSkyreelsImageToVideoPipeline of the 2026-08 tree with "Sizes of tensors must match"
    """

    code = "DRB110"
    pattern = 1
    severity = "error"
    message = (
        "`{name}` has one row per given image (VAE-encoded) but is concatenated along dim {dim} with `{other}`, "
        "which has `batch_size` rows; expand it to `batch_size` first "
        "(`{name}.repeat_interleave(batch_size // {name}.shape[0], dim=0)`), or several prompts or more than one "
        "output per prompt fail."
    )
    list_message = (
        "the tensors collected in `{name}` have one row per given image (VAE-encoded) but are concatenated along "
        "dim {dim} with `{other}`, which has `batch_size` rows; expand each to `batch_size` before collecting it "
        "(`item.expand(batch_size, ...)` or `repeat_interleave`), or several prompts or more than one output per "
        "prompt fail."
    )
    REQUIRES_ALL = ("vae.encode", "batch_size")
    PATHS = ("/pipelines/",)

    VALID = [
        # the standard branch expands the encoded latents before they are joined
        Valid(
            """
            class I2VPipeline(DiffusionPipeline):
                def prepare_latents(self, image, batch_size, num_frames, dtype, device, generator):
                    image_latents = [retrieve_latents(self.vae.encode(i.unsqueeze(0)), generator) for i in image]
                    image_latents = torch.cat(image_latents, dim=0).to(dtype)
                    if batch_size > image_latents.shape[0] and batch_size % image_latents.shape[0] == 0:
                        additional = batch_size // image_latents.shape[0]
                        image_latents = torch.cat([image_latents] * additional, dim=0)
                    padding = torch.zeros((batch_size, num_frames - 1, 16, 8, 8), device=device, dtype=dtype)
                    return torch.cat([image_latents, padding], dim=1)
            """
        ),
        # joined along the batch axis: a different question
        Valid(
            """
            class ConcatPipeline(DiffusionPipeline):
                def prepare_latents(self, image, batch_size, dtype, device):
                    image_latents = self.vae.encode(image).latent_dist.mode()
                    extra = torch.zeros((batch_size, 4, 8, 8), device=device, dtype=dtype)
                    return torch.cat([image_latents, extra], dim=0)
            """
        ),
        # the other tensor is shaped like the encoded latents, not by batch_size
        Valid(
            """
            class MaskPipeline(DiffusionPipeline):
                def prepare_latents(self, image, batch_size, dtype, device):
                    image_latents = self.vae.encode(image).latent_dist.mode()
                    mask = torch.ones((image_latents.shape[0], 1, 8, 8), device=device, dtype=dtype)
                    return torch.cat([image_latents, mask], dim=1)
            """
        ),
        # each collected condition is expanded to the batch before it is appended
        Valid(
            """
            class KeyframePipeline(DiffusionPipeline):
                def prepare_latents(self, conditions, batch_size, dtype, device, generator):
                    latents = torch.zeros((batch_size, 16, 4, 8, 8), device=device, dtype=dtype)
                    latents = self._pack_latents(latents)
                    encoded = []
                    for frame in conditions:
                        encoded.append(self._pack_latents(retrieve_latents(self.vae.encode(frame), generator)))
                    tokens = []
                    for index, cond in enumerate(encoded):
                        tokens.append(cond.expand(batch_size, -1, -1))
                    return torch.cat([latents, torch.cat(tokens, dim=1)], dim=1)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class FrameConditionedPipeline(DiffusionPipeline):
                def prepare_latents(self, image, batch_size, num_frames, dtype, device, generator, latents=None):
                    image = image.unsqueeze(2)
                    first = [retrieve_latents(self.vae.encode(frame.unsqueeze(0)), generator) for frame in image]
                    first = torch.cat(first, dim=0).to(dtype) * self.vae.config.scaling_factor
                    pad_shape = (batch_size, 16, num_frames - 1, 8, 8)
                    pad = torch.zeros(pad_shape, device=device, dtype=dtype)
                    first = torch.cat([first, pad], dim=2)
                    if latents is None:
                        latents = randn_tensor((batch_size, 16, num_frames, 8, 8), generator=generator, device=device)
                    return latents, first
            """,
            message=(
                "`first` has one row per given image (VAE-encoded) but is concatenated along dim 2 with `pad`, "
                "which has `batch_size` rows; expand it to `batch_size` first "
                "(`first.repeat_interleave(batch_size // first.shape[0], dim=0)`), or several prompts or more "
                "than one output per prompt fail."
            ),
        ),
        # the shape given in the call, `new_ones`, a negative axis, keyword arguments
        Invalid(
            """
            class ReferencePipeline(DiffusionPipeline):
                def prepare_reference(self, reference_image, batch_size, height, width, dtype):
                    ref = self.vae.encode(reference_image.to(dtype)).latent_dist.sample()
                    ref = (ref - self.vae.config.shift_factor) * self.vae.config.scaling_factor
                    marker = ref.new_ones((batch_size, 1, height // 8, width // 8))
                    return torch.cat(tensors=[ref, marker], dim=-3)
            """
        ),
        # collected in a list through a loop over `zip`, the noise rebound through a packing helper
        Invalid(
            """
            class KeyframePipeline(DiffusionPipeline):
                def prepare_latents(self, conditions, strengths, batch_size, dtype, device, generator):
                    shape = (batch_size, 16, 4, 8, 8)
                    latents = torch.zeros(shape, device=device, dtype=dtype)
                    latents = self._pack_latents(latents, 1, 1)
                    encoded = []
                    for frame in conditions:
                        cond = retrieve_latents(self.vae.encode(frame), generator)
                        encoded.append(self._pack_latents(cond, 1, 1))
                    tokens = []
                    for cond, strength in zip(encoded, strengths):
                        tokens.append(cond * strength)
                    if tokens:
                        latents = torch.cat([latents, torch.cat(tokens, dim=1)], dim=1)
                    return latents
            """,
            message=(
                "the tensors collected in `tokens` have one row per given image (VAE-encoded) but are concatenated "
                "along dim 1 with `latents`, which has `batch_size` rows; expand each to `batch_size` before "
                "collecting it (`item.expand(batch_size, ...)` or `repeat_interleave`), or several prompts or more "
                "than one output per prompt fail."
            ),
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            for name, method in self.context.methods(cls).items():
                if "batch_size" in {p.name.value for p in parameters(method)}:
                    self._check_method(f"{cls.qualname}.{name}", method)

    def _check_method(self, scope: str, method: cst.FunctionDef) -> None:
        assigns = [a for a in walk.nodes(method.body, cst.Assign) if len(a.targets) == 1]
        joins = [c for c in calls(method.body) if dotted_name(c.func) == "torch.cat" and _dim(c) not in (None, 0)]
        # `tokens.append(cond)`: the list collects the rows of what it is given
        appends = [c for c in calls(method.body) if _appended(c) is not None]
        loops = walk.nodes(method.body, cst.For)
        shapes: dict[str, cst.BaseExpression] = {}  # name -> the tuple last assigned to it
        batch_rows: set[str] = set()  # names made with `batch_size` rows
        encoded: set[str] = set()  # names holding the encoded latents (or lists of them), one row per given image
        collected: set[str] = set()  # the lists among them
        # in source order; a join inside an assignment's value comes before the assignment takes effect
        events = sorted(
            [(_end(a), 1, a) for a in assigns]
            + [(casts.order(c), 0, c) for c in joins + appends]
            + [(casts.order(f), 1, f) for f in loops],
            key=lambda e: e[:2],
        )
        for _, _, node in events:
            if isinstance(node, cst.For):
                for name, source in _loop_bindings(node):
                    if source is not None and source in encoded:
                        encoded.add(name)
                    else:
                        encoded.discard(name)
                    batch_rows.discard(name)
                continue
            if isinstance(node, cst.Call):
                appended = _appended(node)
                if appended is not None:
                    into, item = appended
                    reads = {n.value for n in values_read(item)}
                    if into not in batch_rows and any(r in encoded and not _expands(item, r) for r in reads):
                        encoded.add(into)
                        collected.add(into)
                    continue
                found = self._join(node, encoded, batch_rows)
                if found is not None:
                    source, other = found
                    template = self.list_message if source in collected else self.message
                    self.report(
                        node,
                        template.format(name=source, dim=_dim(node), other=other),
                        symbol=source,
                        scope=scope,
                    )
                    return
                continue
            target = node.targets[0].target
            if not isinstance(target, cst.Name):
                continue
            name, value = target.value, node.value
            if isinstance(value, cst.Tuple):
                shapes[name] = value
            reads = {n.value for n in values_read(value)}
            if self._batch_shaped(value, shapes) or name in batch_rows and _passes_on(value, name):
                batch_rows.add(name)
                encoded.discard(name)
                continue
            batch_rows.discard(name)
            if _encodes(value):
                encoded.add(name)
            elif name in encoded:
                if _expands(value, name) or name not in reads:
                    encoded.discard(name)  # grown to the batch, or replaced by something else
            elif any(r in encoded for r in reads) and not any(_expands(value, r) for r in reads if r in encoded):
                encoded.add(name)  # derived from it, rows and all

    @staticmethod
    def _join(cat: cst.Call, encoded: set[str], batch_rows: set[str]) -> tuple[str, str] | None:
        """(encoded name, batch-sized name) when `cat` joins one of each, else None.

        An element may be a name or the concatenation of a list of encoded latents:
        `torch.cat([latents, torch.cat(tokens, dim=1)], dim=1)`.
        """
        joined = cat.args[0].value if cat.args else None
        if not isinstance(joined, (cst.List, cst.Tuple)):
            return None
        names = []
        for element in joined.elements:
            value = element.value
            if isinstance(value, cst.Call) and dotted_name(value.func) == "torch.cat" and value.args:
                value = value.args[0].value  # the list whose rows the inner concatenation keeps
            if isinstance(value, cst.Name):
                names.append(value.value)
        source = next((n for n in names if n in encoded), None)
        other = next((n for n in names if n in batch_rows), None)
        return (source, other) if source is not None and other is not None else None

    @staticmethod
    def _batch_shaped(value: cst.BaseExpression, shapes: dict[str, cst.BaseExpression]) -> bool:
        """Whether `value` is a shape constructor whose shape's first entry is `batch_size`."""
        if not isinstance(value, cst.Call) or _last(dotted_name(value.func)) not in _SHAPED or not value.args:
            return False
        shape = value.args[0].value
        if isinstance(shape, cst.Name):
            shape = shapes.get(shape.value, shape)
        if not isinstance(shape, cst.Tuple) or not shape.elements:
            return False
        first = shape.elements[0].value
        return isinstance(first, cst.Name) and first.value == "batch_size"
