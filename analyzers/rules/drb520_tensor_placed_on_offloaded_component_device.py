"""DRB520: a tensor is placed on a component's `.device` and then combined with tensors on the execution device."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import target_names, values_read


#: arithmetic that needs both operands on one device
_ARITHMETIC = (cst.Add, cst.Subtract, cst.Multiply, cst.Divide, cst.MatrixMultiply)


def _component_aliases(function: cst.FunctionDef) -> set[str]:
    """Local names bound to a component of a modular pipeline: `vae = components.vae`."""
    aliases: set[str] = set()
    for assign in walk.own_nodes(function, cst.Assign):
        if _component(assign.value, set()) is not None:
            for target in assign.targets:
                if isinstance(target.target, cst.Name):
                    aliases.add(target.target.value)
    return aliases


def _component(node: cst.BaseExpression, aliases: set[str]) -> str | None:
    """`components.vae`, `self.vae` or an alias of one: the code naming the component, else None."""
    if isinstance(node, cst.Name) and node.value in aliases:
        return node.value
    if (
        isinstance(node, cst.Attribute)
        and isinstance(node.value, cst.Name)
        and node.value.value in ("components", "self")
        and not node.attr.value.startswith("_")
        and node.attr.value not in ("device", "dtype", "config")
    ):
        return f"{node.value.value}.{node.attr.value}"
    return None


def _placements(value: cst.BaseExpression, aliases: set[str]) -> list[tuple[cst.Attribute, str]]:
    """`<component>.device` read as the target of a placement in `value`: an argument of `.to(...)` or the
    `device=` of a call. A device read elsewhere (a test, a fallback) is not a placement."""
    found = []
    for call in walk.nodes(value, cst.Call):
        is_to = isinstance(call.func, cst.Attribute) and call.func.attr.value == "to"
        for arg in call.args:
            if not (is_to and arg.keyword is None) and not (arg.keyword is not None and arg.keyword.value == "device"):
                continue
            node = arg.value
            if isinstance(node, cst.Attribute) and node.attr.value == "device":
                component = _component(node.value, aliases)
                if component is not None:
                    found.append((node, component))
    return found


def _combined(function: cst.FunctionDef, name: str, definition: cst.Assign, aliases: set[str]) -> bool:
    """Whether `name` is an operand of arithmetic with another tensor (an operand that reads a name other than a
    component's: `vae.config.scaling_factor` is a number) in a statement of `function` other than its own
    assignment."""
    ignored = {name, "self", "components", *aliases}
    inside = {id(n) for n in walk.walk(definition)}
    for binary in walk.own_nodes(function, cst.BinaryOperation):
        if id(binary) in inside or not isinstance(binary.operator, _ARITHMETIC):
            continue
        sides = [{n.value for n in values_read(side)} for side in (binary.left, binary.right)]
        for mine, other in ((sides[0], sides[1]), (sides[1], sides[0])):
            if name in mine and other - ignored:
                return True
    return False


class TensorPlacedOnOffloadedComponentDevice(Rule):
    """
    ## What it does
    Checks for pipeline methods and modular pipeline blocks that place a tensor on a component's device
    (`.to(vae.device, vae.dtype)` with `vae = components.vae`, `device=self.vae.device`) and then use it in
    arithmetic with another tensor (`(latents - latents_mean) * latents_std`).

    ## Why is this bad?
    Under model CPU offload (`enable_model_cpu_offload()`, a `ComponentsManager` with auto offload) a component
    waits on the CPU until its `forward` runs, so `vae.device` is the CPU while the latents and the model
    outputs are on the accelerator. The statistic lands on the CPU and the arithmetic fails with
    `Expected all tensors to be on the same device`. The execution device (`components._execution_device`,
    `self._execution_device`) or the other operand's `.device` is where the work happens.

    ## Example
    ```python
    vae = components.vae
    latents_mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(vae.device, vae.dtype)
    latents = latents / latents_std + latents_mean
    ```

    Use instead:
    ```python
    device = components._execution_device
    latents_mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(device, vae.dtype)
    latents = latents.to(device) / latents_std + latents_mean
    ```

    ## Known problems
    Only a name assigned in the same statement as the placement is followed, and only into `+ - * / @` with an
    operand that reads another name. A component is `components.<name>`, `self.<name>` or a local name bound
    to one of those. The other operand is assumed to be on the execution device. One finding per function, at
    its first such placement.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#14140 (the Helios decode step put `latents_mean` on `vae.device`, fixed in 0.40.0)
    """

    code = "DRB520"
    pattern = 5
    severity = "error"
    message = (
        "`{name}` is placed on `{device}`, which is the CPU while model offload has `{component}` parked, and then "
        "combined with tensors on the execution device; place it on `{remedy}` instead."
    )
    REQUIRES_ANY = (".device",)
    PATHS = ("/pipelines/", "/modular_pipelines/")

    VALID = [
        Valid(
            """
            class DecodeStep(ModularPipelineBlocks):
                def __call__(self, components, state):
                    vae = components.vae
                    device = components._execution_device
                    latents_mean = torch.tensor(vae.config.latents_mean).to(device, vae.dtype)
                    latents = state.latents.to(device) + latents_mean
                    return vae.decode(latents)
            """,
            path="diffusers/modular_pipelines/example/decoders.py",
        ),
        # the tensor only feeds the component itself, whose hook moves it
        Valid(
            """
            class GligenPipeline(DiffusionPipeline):
                def __call__(self, image):
                    image = image.to(dtype=self.vae.dtype, device=self.vae.device)
                    latents = self.vae.encode(image).latent_dist.sample()
                    image = image * self.vae.config.scaling_factor
                    return latents, image
            """
        ),
        # the device of the other operand
        Valid(
            """
            class VideoPipeline(DiffusionPipeline):
                def __call__(self, latents):
                    latents_std = 1.0 / torch.tensor(self.vae.config.latents_std).to(latents.device, latents.dtype)
                    return self.vae.decode(latents / latents_std)
            """
        ),
        # a fallback for a caller's device
        Valid(
            """
            def encode(components, prompt, device=None):
                text_encoder = components.text_encoder
                device = text_encoder.device if device is None else device
                ids = components.tokenizer(prompt).input_ids.to(device)
                return text_encoder(ids)[0] * 2
            """,
            path="diffusers/modular_pipelines/example/encoders.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class DecodeStep(ModularPipelineBlocks):
                def __call__(self, components, state):
                    vae = components.vae
                    latents_mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(vae.device, vae.dtype)
                    latents_std = 1.0 / torch.tensor(vae.config.latents_std).to(vae.device, vae.dtype)
                    videos = []
                    for chunk in state.latent_chunks:
                        videos.append(vae.decode(chunk.to(vae.dtype) / latents_std + latents_mean))
                    return videos
            """,
            message=(
                "`latents_mean` is placed on `vae.device`, which is the CPU while model offload has `vae` parked, "
                "and then combined with tensors on the execution device; place it on "
                "`components._execution_device` instead."
            ),
            path="diffusers/modular_pipelines/example/decoders.py",
        ),
        Invalid(
            """
            class ImageToVideoPipeline(DiffusionPipeline):
                def prepare_latents(self, image, generator):
                    mean = torch.tensor(self.vae.config.latents_mean).to(device=self.vae.device)
                    latents = self.vae.encode(image).latent_dist.sample(generator)
                    return latents - mean
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            aliases = _component_aliases(function)
            for assign in walk.own_nodes(function, cst.Assign):
                placements = _placements(assign.value, aliases)
                if not placements:
                    continue
                names = [name for target in assign.targets for name in target_names(target.target)]
                if len(names) != 1 or not _combined(function, names[0], assign, aliases):
                    continue
                node, component = placements[0]
                device = self.context.module.code_for_node(node)
                remedy = "self._execution_device" if component.startswith("self.") else "components._execution_device"
                self.report(
                    node,
                    self.message.format(name=names[0], device=device, component=component, remedy=remedy),
                    symbol=names[0],
                    scope=definition.qualname,
                )
                break  # one finding per function: the first placement; its siblings share the remedy
