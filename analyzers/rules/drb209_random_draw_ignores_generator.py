"""DRB209: a function takes the caller's `generator`, but one of its random draws does not use it."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.context import Definition
from analyzers.core import FileContext, Invalid, Rule, Valid, dotted_name
from analyzers.matchers import has_var_keyword, keyword, names_read, parameters, string_value, target_names


#: torch samplers whose `generator` is keyword-only, with what they draw
TORCH_SAMPLERS = {
    "randn": "draws noise",
    "randn_like": "draws noise",
    "normal": "draws noise",
    "rand": "draws random values",
    "rand_like": "draws random values",
    "randint": "draws random values",
    "randint_like": "draws random values",
    "randperm": "draws a random permutation",
    "multinomial": "draws random samples",
    "bernoulli": "draws random samples",
    "poisson": "draws random samples",
}
#: in-place tensor samplers (`x.normal_()`), which take `generator=` as a keyword
IN_PLACE_SAMPLERS = frozenset(
    {"normal_", "uniform_", "random_", "bernoulli_", "exponential_", "log_normal_", "cauchy_", "geometric_"}
)
GENERATOR = "generator"
#: longest call text quoted whole in a message; longer calls are quoted as `name(...)`
_QUOTE_LIMIT = 60


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _quoted(call: cst.Call) -> str:
    text = " ".join(_code(call).split())
    if len(text) <= _QUOTE_LIMIT:
        return text
    return f"{_code(call.func)}(...)"


def _positional(call: cst.Call) -> list[cst.Arg]:
    return [a for a in call.args if a.keyword is None and not a.star]


def _splat(call: cst.Call) -> bool:
    return any(a.star for a in call.args)


def _none_test(test: cst.BaseExpression) -> bool | None:
    """True for `generator is None` / `not generator`, False for `generator is not None` / `generator`; else None."""
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1:
        target = test.comparisons[0]
        if (
            isinstance(test.left, cst.Name)
            and test.left.value == GENERATOR
            and isinstance(target.comparator, cst.Name)
            and target.comparator.value == "None"
        ):
            if isinstance(target.operator, cst.Is):
                return True
            if isinstance(target.operator, cst.IsNot):
                return False
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        inner = test.expression
        if isinstance(inner, cst.Name) and inner.value == GENERATOR:
            return True
    if isinstance(test, cst.Name) and test.value == GENERATOR:
        return False
    return None


def _fallback_nodes(function: cst.FunctionDef) -> set[int]:
    """Ids of the nodes that run only without a generator: under `if generator is None:` or the `else` of
    `if generator is not None:` (statements and conditional expressions)."""
    found: set[int] = set()
    branches: list[cst.CSTNode | None] = []
    tests: list[cst.If | cst.IfExp] = [*walk.own_nodes(function, cst.If), *walk.own_nodes(function, cst.IfExp)]
    for node in tests:
        absent = _none_test(node.test)
        if absent is True:
            branches.append(node.body)
        elif absent is False:
            branches.append(node.orelse)
    for branch in branches:
        if branch is not None:
            found.update(id(n) for n in walk.walk(branch))
    return found


def _latent_dist(expr: cst.BaseExpression, aliases: set[str]) -> bool:
    """Whether `expr` is a latent distribution: `<x>.latent_dist`, or a local name bound to one."""
    if isinstance(expr, cst.Attribute) and expr.attr.value == "latent_dist":
        return True
    return isinstance(expr, cst.Name) and expr.value in aliases


def _torch_distribution_aliases(function: cst.FunctionDef, qualified) -> set[str]:
    """Local names bound to a `torch.distributions` object (`MultivariateNormal(...)`, `Normal(...)`): their
    `sample()`/`rsample()` draw from torch's global generator and take none of their own."""
    aliases: set[str] = set()
    for assign in walk.own_nodes(function, cst.Assign):
        value = assign.value
        if isinstance(value, cst.Call) and (qualified(value.func) or "").startswith("torch.distributions."):
            for target in assign.targets:
                aliases.update(target_names(target.target))
    return aliases


def _torch_distribution(expr: cst.BaseExpression, aliases: frozenset[str] | set[str], qualified) -> bool:
    """Whether `expr` is a `torch.distributions` object: a local name bound to one, or the constructor call."""
    if isinstance(expr, cst.Name):
        return expr.value in aliases
    return isinstance(expr, cst.Call) and (qualified(expr.func) or "").startswith("torch.distributions.")


def _distribution_aliases(function: cst.FunctionDef) -> set[str]:
    """Local names bound to `<x>.latent_dist` or a `DiagonalGaussianDistribution(...)`."""
    aliases: set[str] = set()
    for assign in walk.own_nodes(function, cst.Assign):
        value = assign.value
        is_dist = (isinstance(value, cst.Attribute) and value.attr.value == "latent_dist") or (
            isinstance(value, cst.Call) and (dotted_name(value.func) or "").endswith("DiagonalGaussianDistribution")
        )
        if is_dist:
            for target in assign.targets:
                aliases.update(target_names(target.target))
    return aliases


class RandomDrawIgnoresGenerator(Rule):
    """
    ## What it does
    Checks pipeline, modular-pipeline and scheduler functions that take a `generator` parameter for a
    random draw that does not use it: `torch.randn_like(x)`, `torch.randn/rand/randint/normal/multinomial/
    bernoulli(...)` without `generator=`, `randn_tensor(...)` without a generator, `x.normal_()`-style
    in-place draws, a VAE's `latent_dist.sample()` without a generator, or `retrieve_latents(encoder_output)`
    in its default `"sample"` mode without a generator.

    ## Why is this bad?
    `generator` is how a user makes a run reproducible. When one draw of the function takes its randomness
    from torch's global state instead, the same seed gives a different image on every call (or the same
    image only by accident of the global seed), and the documented contract of `generator` silently fails.
    diffusers shipped this twice: the Flux ControlNet img2img pipeline sampled the control image latents
    without the generator, and `FlowMatchEulerDiscreteScheduler.step` drew its stochastic-sampling noise with
    `torch.randn_like`.

    ## Example
    ```python
    def step(self, model_output, timestep, sample, generator=None):
        ...
        noise = torch.randn_like(sample)
        prev_sample = (1.0 - next_sigma) * x0 + next_sigma * noise
    ```

    Use instead:
    ```python
    def step(self, model_output, timestep, sample, generator=None):
        ...
        noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
        prev_sample = (1.0 - next_sigma) * x0 + next_sigma * noise
    ```

    It also checks `self.<helper>(...)` calls to a method of the same class that takes no `generator` (nor
    `**kwargs`) yet draws randomness itself, and `sample()`/`rsample()` of a `torch.distributions` object,
    which has no generator at all.

    ## Known problems
    Only a parameter named `generator` is followed, and only draws written in the function itself or in a
    method of the same class that it calls directly and that cannot receive the generator. A draw under `if generator is None:` (a fallback) is
    accepted. In a pipeline, a function that reads `generator` nowhere is left to DRB201 (an argument that is
    never read); a scheduler has no such rule, so there the draw is reported either way. A `.sample()` is
    only matched on `<x>.latent_dist` or a local name bound to one, and `retrieve_latents` only where its
    definition (nested, of the module, or imported) can be read. A helper that samples latents but takes no
    `generator` parameter at all, and a modular block that reads `block_state.generator`, are not looked at.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#9981 (Flux ControlNet img2img: `latent_dist.sample()` without the generator)
    - huggingface/diffusers#13678 (`FlowMatchEulerDiscreteScheduler.step`: `torch.randn_like` ignored `generator`)
    - huggingface/diffusers#13223 (Helios pyramid: `sample_block_noise` drew from a `MultivariateNormal`)
    """

    code = "DRB209"
    pattern = 2
    severity = "warning"
    message = (
        "`{call}` {what} without the `generator` this function takes, so a fixed seed does not reproduce "
        "the result; {remedy}."
    )
    helper_message = (
        "`{call}` {what} (`{draw}`) in a helper that takes no `generator`, so the `generator` this function "
        "takes does not govern that draw and a fixed seed does not reproduce the result; give the helper a "
        "`generator` parameter, draw with it, and pass `generator=generator`."
    )
    REQUIRES_ANY = ("generator",)
    PATHS = ("/pipelines/", "/schedulers/", "/modular_pipelines/")

    #: diffusers' own `retrieve_latents`: samples with the generator it is given (none by default) unless "argmax"
    _RETRIEVE_LATENTS = """
            from ...utils.torch_utils import randn_tensor

            def retrieve_latents(encoder_output, generator=None, sample_mode="sample"):
                if hasattr(encoder_output, "latent_dist") and sample_mode == "sample":
                    return encoder_output.latent_dist.sample(generator)
                elif hasattr(encoder_output, "latent_dist") and sample_mode == "argmax":
                    return encoder_output.latent_dist.mode()
                return encoder_output.latents
    """

    VALID = [
        Valid(
            # every draw is seeded; a fallback draw runs only without a generator; argmax is deterministic
            _RETRIEVE_LATENTS
            + """
            import torch

            class MyImg2ImgPipeline(DiffusionPipeline):
                def prepare_latents(self, image, shape, generator=None, device=None, dtype=None):
                    image_latents = retrieve_latents(self.vae.encode(image), generator=generator)
                    control_latents = self.vae.encode(image).latent_dist.sample(generator)
                    mean_latents = retrieve_latents(self.vae.encode(image), sample_mode="argmax")
                    if generator is None:
                        jitter = torch.rand(1, device=device)
                    else:
                        jitter = torch.rand(1, generator=generator, device=generator.device).to(device)
                    noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    extra = torch.randn_like(noise) if generator is None else randn_tensor(shape, generator=generator)
                    return image_latents + control_latents + mean_latents + jitter * noise + extra
            """
        ),
        Valid(
            # a `retrieve_latents` of its own that takes no generator and returns the mode (Marigold)
            """
            from ...utils.torch_utils import randn_tensor

            class MyDepthPipeline(DiffusionPipeline):
                def prepare_latents(self, image, latents, generator, ensemble_size):
                    def retrieve_latents(encoder_output):
                        return encoder_output.latent_dist.mode()

                    image_latent = retrieve_latents(self.vae.encode(image))
                    if latents is None:
                        latents = randn_tensor(image_latent.shape, generator=generator, device=image_latent.device)
                    return image_latent, latents
            """
        ),
        Valid(
            # no `generator` parameter: nothing to be faithful to
            """
            import torch

            class MyScheduler(SchedulerMixin):
                def add_noise(self, original_samples, timesteps):
                    noise = torch.randn_like(original_samples)
                    return original_samples + timesteps * noise
            """,
            path="diffusers/schedulers/scheduling_example.py",
        ),
        Valid(
            # a pipeline `__call__` that reads `generator` nowhere: DRB201 reports the unused argument
            """
            import torch

            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, generator=None):
                    latents = torch.randn(1, 4, 64, 64)
                    return self.unet(latents, prompt)
            """
        ),
        Valid(
            # helpers the generator reaches: one takes it, one forwards `**kwargs`, one is only the fallback
            """
            import torch

            class MyVideoPipeline(DiffusionPipeline):
                def sample_block_noise(self, shape, generator=None):
                    return torch.randn(shape, generator=generator)

                def jitter(self, shape, **kwargs):
                    return torch.rand(shape, **kwargs)

                def unseeded_noise(self, shape):
                    return torch.randn(shape)

                def __call__(self, prompt, generator=None):
                    noise = self.sample_block_noise((1, 4), generator=generator)
                    jitter = self.jitter((1,), generator=generator)
                    extra = self.unseeded_noise((1, 4)) if generator is None else noise
                    return self.transformer(noise + jitter + extra, prompt)
            """
        ),
    ]
    INVALID = [
        Invalid(
            # a helper without a `generator` draws from a `torch.distributions` sampler (Helios pyramid, #13223)
            """
            import torch

            class MyPyramidPipeline(DiffusionPipeline):
                def block_noise(self, n, size, device=None):
                    cov = torch.eye(size, device=device) * 1.5
                    law = torch.distributions.MultivariateNormal(torch.zeros(size, device=device), covariance_matrix=cov)
                    return law.sample((n,))

                def __call__(self, prompt, latents, generator=None):
                    latents = latents + randn_tensor(latents.shape, generator=generator)
                    noise = self.block_noise(latents.numel() // 4, 4, device=latents.device)
                    return self.transformer(latents + noise.view_as(latents), prompt)
            """,
            message=(
                "`self.block_noise(...)` draws random samples (`law.sample((n,))`) in a helper that takes no "
                "`generator`, so the `generator` this function takes does not govern that draw and a fixed seed "
                "does not reproduce the result; give the helper a `generator` parameter, draw with it, and pass "
                "`generator=generator`."
            ),
        ),
        Invalid(
            # a `torch.distributions` sampler in the function that takes the generator
            """
            import torch

            class MyScheduler(SchedulerMixin):
                def step(self, model_output, timestep, sample, generator=None):
                    noise = torch.distributions.Normal(0.0, 1.0).sample(sample.shape)
                    return sample + model_output * noise
            """,
            path="diffusers/schedulers/scheduling_example.py",
        ),
        Invalid(
            # diffusers 0.31.0, FluxControlNetImg2ImgPipeline.__call__ (#9981)
            """
            class FluxControlNetImg2ImgPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, control_image, generator=None):
                    control_image = self.prepare_image(control_image)
                    control_image = self.vae.encode(control_image).latent_dist.sample()
                    latents = self.prepare_latents(image, generator)
                    return self.transformer(latents, controlnet_cond=control_image)
            """,
            message=(
                "`self.vae.encode(control_image).latent_dist.sample()` samples latents without the `generator` this "
                "function takes, so a fixed seed does not reproduce the result; pass `generator=generator`."
            ),
        ),
        Invalid(
            # diffusers 0.38.0, FlowMatchEulerDiscreteScheduler.step (#13678): `generator` is read nowhere else
            """
            import torch

            class FlowMatchEulerDiscreteScheduler(SchedulerMixin):
                def step(self, model_output, timestep, sample, s_noise=1.0, generator=None, return_dict=True):
                    sigma = self.sigmas[self.step_index]
                    sigma_next = self.sigmas[self.step_index + 1]
                    if self.config.stochastic_sampling:
                        x0 = sample - sigma * model_output
                        noise = torch.randn_like(sample)
                        prev_sample = (1.0 - sigma_next) * x0 + sigma_next * noise
                    else:
                        prev_sample = sample + (sigma_next - sigma) * model_output
                    return (prev_sample,)
            """,
            path="diffusers/schedulers/scheduling_flow_match_euler_discrete.py",
            message=(
                "`torch.randn_like(sample)` draws noise without the `generator` this function takes, so a fixed seed "
                "does not reproduce the result; draw it with `randn_tensor(sample.shape, generator=generator, "
                "device=sample.device, dtype=sample.dtype)`."
            ),
        ),
        Invalid(
            # `retrieve_latents` in its default "sample" mode, while the generator seeds the noise
            _RETRIEVE_LATENTS
            + """
            class MyImg2ImgPipeline(DiffusionPipeline):
                def prepare_latents(self, image, shape, generator=None, device=None, dtype=None):
                    image_latents = retrieve_latents(self.vae.encode(image))
                    noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    return image_latents + noise
            """,
            message=(
                "`retrieve_latents(self.vae.encode(image))` samples latents without the `generator` this function "
                "takes, so a fixed seed does not reproduce the result; pass `generator=generator`."
            ),
        ),
        Invalid(
            # a seeded branch for a generator, and an unseeded draw outside any `generator is None` test
            """
            import torch
            from ...utils.torch_utils import randn_tensor

            class MyPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, generator, device, dtype):
                    latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    mask = torch.rand(shape[0], device=device) < 0.5
                    noise = randn_tensor(shape, device=device, dtype=dtype)
                    latents.normal_()
                    return latents + mask * noise
            """,
        ),
    ]

    def check(self) -> None:
        in_pipelines = "/schedulers/" not in f"/{self.context.path}"
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            if GENERATOR not in {p.name.value for p in parameters(function)}:
                continue
            self._check_function(definition.qualname, function, in_pipelines)
            self._check_helpers(definition, function, in_pipelines)

    def _check_helpers(self, definition: Definition, function: cst.FunctionDef, in_pipelines: bool) -> None:
        """Report `self.helper(...)` calls to a method of the same class that takes no `generator` (nor
        `**kwargs`) and draws randomness itself: the caller's generator cannot reach that draw."""
        owner = definition.parent
        if owner is None or not owner.is_class:
            return
        if in_pipelines and not any(n.value == GENERATOR for n in names_read(function.body)):
            return  # the argument is read nowhere: DRB201's finding
        methods = self.context.methods(owner)
        fallback: set[int] | None = None
        seen: set[str] = set()
        for call in walk.own_nodes(function, cst.Call):
            name = dotted_name(call.func) or ""
            head, _, method = name.partition(".")
            if head != "self" or "." in method or method in seen:
                continue
            helper = methods.get(method)
            if helper is None or helper is function or has_var_keyword(helper):
                continue
            if GENERATOR in {p.name.value for p in parameters(helper)}:
                continue
            draw = self._helper_draw(helper)
            if draw is None:
                continue
            if fallback is None:
                fallback = _fallback_nodes(function)
            if id(call) in fallback:
                continue
            seen.add(method)
            draw_call, what = draw
            message = self.helper_message.format(call=f"{name}(...)", draw=_quoted(draw_call), what=what)
            self.report(call, message, symbol=GENERATOR, scope=definition.qualname)

    def _helper_draw(self, helper: cst.FunctionDef) -> tuple[cst.Call, str] | None:
        """The first random draw written in `helper` (which takes no generator), with what it draws."""
        aliases = _distribution_aliases(helper)
        dist_aliases = _torch_distribution_aliases(helper, self.context.qualified_name)
        for call in walk.own_nodes(helper, cst.Call):
            found = self._unseeded(call, helper, aliases, dist_aliases)
            if found is not None:
                return call, found[1]
        return None

    def _check_function(self, scope: str, function: cst.FunctionDef, in_pipelines: bool) -> None:
        draws: list[tuple[str, cst.Call, str, str]] = []
        aliases = _distribution_aliases(function)
        dist_aliases = _torch_distribution_aliases(function, self.context.qualified_name)
        for call in walk.own_nodes(function, cst.Call):
            found = self._unseeded(call, function, aliases, dist_aliases)
            if found is not None:
                kind, what, remedy = found
                draws.append((kind, call, what, remedy))
        if not draws:
            return
        fallback = _fallback_nodes(function)
        draws = [d for d in draws if id(d[1]) not in fallback]
        if not draws:
            return
        if in_pipelines and not any(n.value == GENERATOR for n in names_read(function.body)):
            return  # the argument is read nowhere: DRB201's finding, not a draw that slipped
        reported: set[str] = set()
        for kind, call, what, remedy in draws:
            if kind in reported:
                continue
            reported.add(kind)
            message = self.message.format(call=_quoted(call), what=what, remedy=remedy)
            self.report(call, message, symbol=GENERATOR, scope=scope)

    def _unseeded(
        self,
        call: cst.Call,
        function: cst.FunctionDef,
        aliases: set[str],
        dist_aliases: frozenset[str] | set[str] = frozenset(),
    ) -> tuple[str, str, str] | None:
        """(kind, what it draws, remedy) for a random draw without a generator; None for anything else."""
        if _splat(call) or keyword(call, GENERATOR) is not None:
            return None
        func = call.func
        qualified = self.context.qualified_name(func) or ""
        head, _, sampler = qualified.rpartition(".")
        if head == "torch" and sampler in TORCH_SAMPLERS:
            what = TORCH_SAMPLERS[sampler]
            positional = _positional(call)
            if (
                sampler == "randn_like"
                and len(positional) == 1
                and len(call.args) == 1
                and dotted_name(positional[0].value) is not None
            ):
                x = _code(positional[0].value)
                remedy = (
                    f"draw it with `randn_tensor({x}.shape, generator=generator, device={x}.device, dtype={x}.dtype)`"
                )
            elif sampler == "randn_like":
                remedy = "draw it with `randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)`"
            elif sampler == "randn":
                remedy = "draw it with `randn_tensor(..., generator=generator)`"
            else:
                remedy = "pass `generator=generator`, sampling on the generator's device as `randn_tensor` does"
            return f"torch.{sampler}", what, remedy
        name = dotted_name(func) or ""
        if name == "randn_tensor" or qualified.endswith(".randn_tensor"):
            if len(_positional(call)) >= 2:
                return None  # `randn_tensor(shape, generator, ...)`
            return "randn_tensor", "draws noise", "pass `generator=generator`"
        if name == "retrieve_latents":
            if not self._samples_unseeded(call, function):
                return None
            return "retrieve_latents", "samples latents", "pass `generator=generator`"
        if not isinstance(func, cst.Attribute):
            return None
        method = func.attr.value
        if method in {"sample", "rsample"} and _torch_distribution(
            func.value, dist_aliases, self.context.qualified_name
        ):
            return (
                "distribution.sample",
                "draws random samples",
                "draw them from `torch.randn(..., generator=generator)` instead (a `torch.distributions` sampler "
                "takes no generator)",
            )
        if method == "sample" and not call.args:
            if _latent_dist(func.value, aliases):
                return "latent_dist.sample", "samples latents", "pass `generator=generator`"
            return None
        if method in IN_PLACE_SAMPLERS:
            owner = dotted_name(func.value)
            if owner is not None and (owner.split(".")[0] in self.context.imports or "init" in owner.split(".")):
                return None  # `torch.nn.init.normal_(w)`: weight initialisation, a module function
            return f".{method}", "draws random values", "pass `generator=generator`"
        return None

    def _samples_unseeded(self, call: cst.Call, function: cst.FunctionDef) -> bool:
        """Whether `retrieve_latents(...)` here samples without a generator: the `retrieve_latents` it calls (nested,
        of this module, or imported) takes a `generator`, none is passed, and its mode is (or defaults to) `"sample"`.
        """
        definition = _retrieve_latents_definition(self.context, function)
        if definition is None:
            return False  # not found: cannot tell whether it takes a generator
        positional_names = [p.name.value for p in (*definition.params.posonly_params, *definition.params.params)]
        all_names = positional_names + [p.name.value for p in definition.params.kwonly_params]
        if GENERATOR not in all_names:
            return False  # a `retrieve_latents` that takes no generator (Marigold's uses the mode)
        given = _positional(call)
        if GENERATOR in positional_names and len(given) > positional_names.index(GENERATOR):
            return False  # `retrieve_latents(output, generator)`
        mode: cst.BaseExpression | None = None
        mode_arg = keyword(call, "sample_mode")
        if mode_arg is not None:
            mode = mode_arg.value
        elif "sample_mode" in positional_names and len(given) > positional_names.index("sample_mode"):
            mode = given[positional_names.index("sample_mode")].value
        if mode is None:
            defaults = {p.name.value: p.default for p in parameters(definition)}
            if "sample_mode" not in defaults:
                return True  # takes a generator and no mode: it samples
            mode = defaults["sample_mode"]
        return mode is not None and string_value(mode) == "sample"  # `"argmax"` is deterministic


#: modules followed from an import of `retrieve_latents` to its definition (re-exports included)
_IMPORT_HOPS = 3


def _retrieve_latents_definition(context: FileContext, function: cst.FunctionDef) -> cst.FunctionDef | None:
    """The `retrieve_latents` that a call in `function` reaches: a nested def, this module's, or an imported one."""
    for nested in walk.nodes(function.body, cst.FunctionDef):
        if nested.name.value == "retrieve_latents":
            return nested
    found = _top_level_function(context.module, "retrieve_latents")
    if found is not None:
        return found
    target = context.imports.get("retrieve_latents")
    for _ in range(_IMPORT_HOPS):
        if not target:
            return None
        dotted, _, name = target.rpartition(".")
        module = context.project.module(dotted)
        if module is None:
            return None
        found = _top_level_function(module, name)
        if found is not None:
            return found
        target = context.project.imports(dotted).get(name)
    return None


def _top_level_function(module: cst.Module, name: str) -> cst.FunctionDef | None:
    for statement in module.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value == name:
            return statement
    return None
