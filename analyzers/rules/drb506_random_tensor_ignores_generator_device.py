"""DRB506: a pipeline samples `torch.randn(..., generator=generator, device=device)` with the caller's generator."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import keyword, parameters, string_value


#: torch samplers that take both `generator=` and `device=`
_SAMPLERS = frozenset(
    {
        "randn",
        "rand",
        "randint",
        "randn_like",
        "rand_like",
        "randint_like",
        "randperm",
        "normal",
        "bernoulli",
        "multinomial",
        "poisson",
    }
)


def _root_name(node: cst.BaseExpression) -> str | None:
    """`generator` for `generator`, `generator[i]`, `generator[0]`; else None."""
    while isinstance(node, cst.Subscript):
        node = node.value
    return node.value if isinstance(node, cst.Name) else None


class RandomTensorIgnoresGeneratorDevice(Rule):
    """
    ## What it does
    Checks for pipeline methods that sample noise with a torch sampler (`torch.randn`, `torch.rand`,
    `torch.randint`, ...) given both the caller's `generator` (a parameter of the method) and a
    `device=` other than the generator's own device.

    ## Why is this bad?
    A `torch.Generator` can only drive a sampler on its own device. Users are told to pass a CPU generator
    for reproducible results across machines; `torch.randn(shape, generator=cpu_generator, device="cuda")`
    then raises `Expected a 'cuda' device type for generator but found 'cpu'`, and a list of generators
    is not accepted at all. `diffusers.utils.torch_utils.randn_tensor` samples on the generator's device
    and moves the result, which is why pipelines use it.

    ## Example
    ```python
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    ```

    Use instead:
    ```python
    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    ```

    ## Known problems
    Only generators that arrive as a parameter of the enclosing function are followed. A device
    written as `generator.device` or `"cpu"` is accepted; a device variable that happens to hold
    the generator's device is reported.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#10535 (LTX decode noise moved to `randn_tensor`) and #13228 (Helios block noise
      sampled on `generator.device`)
    """

    code = "DRB506"
    pattern = 5
    severity = "error"
    message = (
        "`{call}(..., generator={generator}, device=...)` fails for a generator on another device (a CPU "
        "generator with a CUDA pipeline); use `randn_tensor(..., generator={generator}, device=...)` or sample on "
        "`{generator}.device` and move the result instead."
    )
    REQUIRES_ANY = ("generator",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            import torch

            class NoisePipeline(DiffusionPipeline):
                def __call__(self, shape, generator=None):
                    device = self._execution_device
                    noise = randn_tensor(shape, generator=generator, device=device)
                    z = torch.randn(shape, generator=generator, device=generator.device).to(device)
                    cpu = torch.rand(1, generator=generator, device="cpu").to(device)
                    local = torch.Generator(device=device).manual_seed(0)
                    other = torch.randn(shape, generator=local, device=device)
                    return noise + z + cpu + other
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            class NoisePipeline(DiffusionPipeline):
                def add_decode_noise(self, latents, generator, device):
                    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
                    return latents + 0.05 * noise
            """,
            message=(
                "`torch.randn(..., generator=generator, device=...)` fails for a generator on another device (a CPU "
                "generator with a CUDA pipeline); use `randn_tensor(..., generator=generator, device=...)` or "
                "sample on `generator.device` and move the result instead."
            ),
        ),
        Invalid(
            """
            import torch

            class NoisePipeline(DiffusionPipeline):
                def __call__(self, image, generator=None, sigma_min=0.1, sigma_max=0.3):
                    device = self._execution_device
                    sigma = torch.rand(1, device=device, generator=generator) * (sigma_max - sigma_min) + sigma_min
                    return image + sigma
            """,
            message=(
                "`torch.rand(..., generator=generator, device=...)` fails for a generator on another device (a CPU "
                "generator with a CUDA pipeline); use `randn_tensor(..., generator=generator, device=...)` or "
                "sample on `generator.device` and move the result instead."
            ),
        ),
    ]

    def check(self) -> None:
        for function in walk.nodes(self.context.module, cst.FunctionDef):
            params = {p.name.value for p in parameters(function)}
            if not params:
                continue
            for call in walk.own_nodes(function, cst.Call):
                qualified = self.context.qualified_name(call.func) or ""
                head, _, sampler = qualified.rpartition(".")
                if head != "torch" or sampler not in _SAMPLERS:
                    continue
                generator_arg, device_arg = keyword(call, "generator"), keyword(call, "device")
                if generator_arg is None or device_arg is None:
                    continue
                generator = _root_name(generator_arg.value)
                if generator is None or generator not in params:
                    continue  # a generator the function made itself is on the device it chose
                device = device_arg.value
                if string_value(device) == "cpu" or generator in {n.value for n in walk.nodes(device, cst.Name)}:
                    continue  # on the CPU, or on the generator's own device (`generator.device`)
                if _root_name(device) is None and not isinstance(device, cst.Attribute):
                    continue  # `device=torch.device(...)` and the like: cannot tell
                spelled = dotted_name(call.func) or qualified
                self.report(call, self.message.format(call=spelled, generator=generator), symbol=f"torch.{sampler}")
