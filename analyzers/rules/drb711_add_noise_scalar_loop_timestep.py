"""DRB711: `scheduler.add_noise` is given the 0-d loop timestep, which schedulers the pipeline accepts cannot iterate."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import annotation_classes, parameters, pipeline_classes


#: schedulers whose `add_noise` looks each timestep up one by one (`for t in timesteps`), so a 0-d tensor raises
#: `TypeError: iteration over a 0-d tensor` (diffusers 0.42.1), and the annotations that admit them
ITERATING = frozenset(
    {
        "KarrasDiffusionSchedulers",
        "SchedulerMixin",
        "CMStochasticIterativeScheduler",
        "CosineDPMSolverMultistepScheduler",
        "DEISMultistepScheduler",
        "DPMSolverMultistepScheduler",
        "DPMSolverSDEScheduler",
        "DPMSolverSinglestepScheduler",
        "EDMDPMSolverMultistepScheduler",
        "EDMEulerScheduler",
        "EulerAncestralDiscreteScheduler",
        "EulerDiscreteScheduler",
        "HeunDiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "LMSDiscreteScheduler",
        "UniPCMultistepScheduler",
    }
)


def _loop_names(target: cst.BaseExpression) -> set[str]:
    if isinstance(target, cst.Name):
        return {target.value}
    if isinstance(target, (cst.Tuple, cst.List)):
        return {name for element in target.elements for name in _loop_names(element.value)}
    return set()


def _timestep_argument(call: cst.Call) -> cst.BaseExpression | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value in ("timesteps", "timestep"):
            return arg.value
    positional = [arg for arg in call.args if arg.keyword is None and not arg.star]
    return positional[2].value if len(positional) >= 3 else None


class AddNoiseScalarLoopTimestep(Rule):
    """
    ## What it does
    Checks pipelines whose `scheduler` is annotated with a scheduler family that includes schedulers
    iterating over the timesteps in `add_noise` (`KarrasDiffusionSchedulers`, `EulerDiscreteScheduler`, ...)
    for a `scheduler.add_noise(...)` call inside the denoising loop (`for i, t in enumerate(timesteps)`)
    that passes the loop's own `t`, a 0-d tensor, as the timesteps.

    ## Why is this bad?
    `add_noise` takes one timestep per sample. DDPM-style schedulers index with it and cope with a 0-d
    tensor, but Euler, Heun, KDPM2, LMS, DPM-Solver and UniPC look the timesteps up one by one
    (`[self.index_for_timestep(t) for t in timesteps]`) and raise `TypeError: iteration over a 0-d tensor`.
    The pipeline's annotation accepts those schedulers, so a configuration it validates fails in the middle
    of the loop. Diffusers fixed this in the GLIGEN pipelines (#5305) by passing `torch.tensor([t])`.

    ## Example
    ```python
    for i, t in enumerate(timesteps):
        if gligen_inpaint_image is not None:
            noisy = self.scheduler.add_noise(inpaint_latent, torch.randn_like(inpaint_latent), t)
    ```

    Use instead:
    ```python
    for i, t in enumerate(timesteps):
        if gligen_inpaint_image is not None:
            noisy = self.scheduler.add_noise(inpaint_latent, torch.randn_like(inpaint_latent), torch.tensor([t]))
    ```

    ## Known problems
    Only the loop variable itself is recognised, not a name assigned from it. The scheduler's type comes
    from the `scheduler` annotation of the pipeline's `__init__`; a pipeline without one, or one annotated
    with a scheduler whose `add_noise` indexes (`DDPMScheduler`, `DDIMScheduler`), is not reported.

    ## References
    - huggingface/diffusers#13656, pattern 7
    - huggingface/diffusers#5305 (GLIGEN inpainting passed the 0-d loop timestep to `add_noise`)
    """

    code = "DRB711"
    pattern = 7
    severity = "error"
    message = (
        "`{call}` passes the loop's 0-d timestep `{name}`, but `scheduler: {annotation}` admits schedulers "
        "whose `add_noise` iterates over the timesteps and raises on a 0-d tensor; pass `torch.tensor([{name}])`."
    )
    REQUIRES_ANY = ("add_noise(",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class FooPipeline(DiffusionPipeline):
                def __init__(self, vae, unet, scheduler: KarrasDiffusionSchedulers):
                    self.register_modules(vae=vae, unet=unet, scheduler=scheduler)

                def __call__(self, prompt, image=None):
                    for i, t in enumerate(self.scheduler.timesteps):
                        if image is not None:
                            noisy = self.scheduler.add_noise(image, torch.randn_like(image), torch.tensor([t]))
                    return noisy
            """
        ),
        Valid(
            # DDPM indexes with the timestep and copes with a 0-d tensor
            """
            class FooPipeline(DiffusionPipeline):
                def __init__(self, vae, unet, scheduler: DDPMScheduler):
                    self.register_modules(vae=vae, unet=unet, scheduler=scheduler)

                def __call__(self, prompt, image=None):
                    for t in self.scheduler.timesteps:
                        noisy = self.scheduler.add_noise(image, torch.randn_like(image), t)
                    return noisy
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class FooPipeline(DiffusionPipeline):
                def __init__(self, vae, unet, scheduler: KarrasDiffusionSchedulers):
                    self.register_modules(vae=vae, unet=unet, scheduler=scheduler)

                def __call__(self, prompt, image=None):
                    timesteps = self.scheduler.timesteps
                    for i, t in enumerate(timesteps):
                        if image is not None:
                            noisy = self.scheduler.add_noise(image, torch.randn_like(image), t)
                    return noisy
            """,
            message=(
                "`self.scheduler.add_noise(image, torch.randn_like(image), t)` passes the loop's 0-d timestep `t`, "
                "but `scheduler: KarrasDiffusionSchedulers` admits schedulers whose `add_noise` iterates over the "
                "timesteps and raises on a 0-d tensor; pass `torch.tensor([t])`."
            ),
        ),
        Invalid(
            """
            class FooPipeline(DiffusionPipeline):
                def __init__(self, vae, unet, scheduler: Union[DDIMScheduler, EulerDiscreteScheduler]):
                    self.register_modules(vae=vae, unet=unet, scheduler=scheduler)

                def __call__(self, prompt, image=None):
                    for t in self.progress_bar(self.scheduler.timesteps):
                        noisy = self.scheduler.add_noise(image, noise=torch.randn_like(image), timesteps=t)
                    return noisy
            """
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            methods = self.context.methods(cls)
            annotation = self._iterating_scheduler(methods.get("__init__"))
            if annotation is None:
                continue
            for method in methods.values():
                for loop in walk.own_nodes(method, cst.For):
                    if "timesteps" not in self.context.module.code_for_node(loop.iter):
                        continue
                    names = _loop_names(loop.target)
                    for call in walk.nodes(loop.body, cst.Call):
                        if not (isinstance(call.func, cst.Attribute) and call.func.attr.value == "add_noise"):
                            continue
                        if "scheduler" not in (dotted_name(call.func.value) or ""):
                            continue
                        timestep = _timestep_argument(call)
                        if not (isinstance(timestep, cst.Name) and timestep.value in names):
                            continue
                        code = " ".join(self.context.module.code_for_node(call).split())
                        message = self.message.format(call=code, name=timestep.value, annotation=annotation)
                        self.report(call, message, symbol="add_noise", scope=f"{cls.qualname}.{method.name.value}")

    def _iterating_scheduler(self, init: cst.FunctionDef | None) -> str | None:
        """The text of the `scheduler` annotation when it admits a scheduler whose `add_noise` iterates."""
        if init is None:
            return None
        for param in parameters(init):
            if param.name.value != "scheduler" or param.annotation is None:
                continue
            names = annotation_classes(param.annotation.annotation) or []
            if any(name.rpartition(".")[2] in ITERATING for name in names):
                return self.context.module.code_for_node(param.annotation.annotation)
        return None
