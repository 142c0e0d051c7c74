"""DRB807: a pipeline that wraps several ControlNets in a `Multi...ControlNetModel` reads `controlnet.config`
without the single-model branch its siblings put around that read."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import target_names


def _code(node: cst.CSTNode) -> str:
    return " ".join(cst.Module([]).code_for_node(node).split())


def _is_self_controlnet(expr: cst.BaseExpression) -> bool:
    return (
        isinstance(expr, cst.Attribute)
        and expr.attr.value == "controlnet"
        and isinstance(expr.value, cst.Name)
        and expr.value.value == "self"
    )


def _multi_names(module: cst.Module) -> bool:
    return any("Multi" in n.value and "ControlNet" in n.value for n in walk.nodes(module, cst.Name))


def _guarded(function: cst.FunctionDef, holders: set[str]) -> set[int]:
    """Ids of nodes under an `if`/conditional expression whose test asks what the controlnet is
    (`isinstance(controlnet, ...)`, `hasattr(...)`)."""
    found: set[int] = set()
    branches: list[cst.If | cst.IfExp] = [*walk.own_nodes(function, cst.If), *walk.own_nodes(function, cst.IfExp)]
    for node in branches:
        asks = False
        for call in walk.nodes(node.test, cst.Call):
            if isinstance(call.func, cst.Name) and call.func.value in {"isinstance", "hasattr"} and call.args:
                subject = call.args[0].value
                if _is_self_controlnet(subject) or (isinstance(subject, cst.Name) and subject.value in holders):
                    asks = True
        if asks:
            found.update(id(n) for n in walk.walk(node))
    return found


class MultiControlNetConfigRead(Rule):
    """
    ## What it does
    Checks pipelines that accept several ControlNets (wrapped in a `Multi...ControlNetModel`) for a read of
    `self.controlnet.config.<field>` (or of a local alias of `self.controlnet`) that is not under an
    `isinstance(controlnet, ...)` test.

    ## Why is this bad?
    The multi-ControlNet wrapper holds its models in `.nets` and registers no config of its own, so
    `config.<field>` raises for every user who passes a list of ControlNets. Sibling pipelines read the field
    from the single model or from `controlnet.nets[0]` depending on the type; a copy that reads
    `self.controlnet.config` directly breaks multi-ControlNet, which the pipeline's own `__init__` advertises.
    diffusers shipped this in the Flux ControlNet img2img pipeline (`guidance_embeds`).

    ## Example
    ```python
    guidance = torch.tensor([guidance_scale]) if self.controlnet.config.guidance_embeds else None
    ```

    Use instead:
    ```python
    if isinstance(self.controlnet, FluxControlNetModel):
        use_guidance = self.controlnet.config.guidance_embeds
    else:
        use_guidance = self.controlnet.nets[0].config.guidance_embeds
    ```

    ## Known problems
    Only files that name a `Multi...ControlNet` class are read, only `self.controlnet` and local names bound
    from it, and any enclosing `isinstance`/`hasattr` test of the controlnet counts as a guard.

    ## References
    - huggingface/diffusers#13656, pattern 8
    - huggingface/diffusers#9586 (Flux ControlNet img2img: `self.controlnet.config.guidance_embeds` with
      `FluxMultiControlNetModel`)
    """

    code = "DRB807"
    pattern = 8
    severity = "error"
    message = (
        "`{read}` is read without checking the controlnet's type, but this pipeline also takes a "
        "multi-ControlNet wrapper, which has no `config.{field}`; read it from the single model or from "
        "`controlnet.nets[0]` behind `isinstance`, as the sibling ControlNet pipelines do."
    )
    REQUIRES_ANY = ("MultiControlNet",)
    PATHS = ("/pipelines/", "/examples/")
    VALID = [
        Valid(
            """
            class MyControlNetPipeline(DiffusionPipeline):
                def __call__(self, guidance_scale=3.5):
                    if isinstance(self.controlnet, MyMultiControlNetModel):
                        use_guidance = self.controlnet.nets[0].config.guidance_embeds
                    else:
                        use_guidance = self.controlnet.config.guidance_embeds
                    return use_guidance
            """
        ),
        # no multi-ControlNet wrapper in the file: a single model always has its config
        Valid(
            """
            class MyControlNetPipeline(DiffusionPipeline):
                def __call__(self, guidance_scale=3.5):
                    return self.controlnet.config.guidance_embeds
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyControlNetPipeline(DiffusionPipeline):
                def __init__(self, controlnet):
                    if isinstance(controlnet, (list, tuple)):
                        controlnet = MyMultiControlNetModel(controlnet)
                    self.register_modules(controlnet=controlnet)

                def __call__(self, guidance_scale=3.5):
                    guidance = guidance_scale if self.controlnet.config.guidance_embeds else None
                    return guidance
            """,
            message=(
                "`self.controlnet.config.guidance_embeds` is read without checking the controlnet's type, but this "
                "pipeline also takes a multi-ControlNet wrapper, which has no `config.guidance_embeds`; read it "
                "from the single model or from `controlnet.nets[0]` behind `isinstance`, as the sibling ControlNet "
                "pipelines do."
            ),
        ),
        Invalid(
            """
            class MyControlNetPipeline(DiffusionPipeline):
                def __call__(self, image):
                    net = self.controlnet
                    if isinstance(net, MyMultiControlNetModel):
                        pass
                    return net.config.num_control_type
            """
        ),
    ]

    def check(self) -> None:
        if not _multi_names(self.context.module):
            return
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef) or function.name.value == "__init__":
                continue
            holders: set[str] = set()
            for assign in walk.own_nodes(function, cst.Assign):
                if _is_self_controlnet(assign.value):
                    for target in assign.targets:
                        holders.update(target_names(target.target))
            guarded: set[int] | None = None
            for attr in walk.own_nodes(function, cst.Attribute):
                config = attr.value
                if not (isinstance(config, cst.Attribute) and config.attr.value == "config"):
                    continue
                owner = config.value
                if not (_is_self_controlnet(owner) or (isinstance(owner, cst.Name) and owner.value in holders)):
                    continue
                if guarded is None:
                    guarded = _guarded(function, holders)
                if id(attr) in guarded:
                    continue
                self.report(
                    attr,
                    self.message.format(read=_code(attr), field=attr.attr.value),
                    symbol=attr.attr.value,
                    scope=definition.qualname,
                )
