"""DRB409: a pipeline's `__call__` documents an argument as optional, but the signature gives it no default."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.fixes import Proposal, Replace
from analyzers.matchers import none_comparison, pipeline_methods


#: a Google-style argument entry: `    name (`type`, *optional*):` (diffusers' docstrings)
_ENTRY = re.compile(r"^\s*(?P<name>\w+)\s*\((?P<spec>[^\n]*)\)\s*:", re.M)
_OPTIONAL = re.compile(r"\boptional\b", re.I)


def _optional_in_docstring(function: cst.FunctionDef) -> set[str]:
    docstring = function.get_docstring(clean=True)
    if not docstring:
        return set()
    return {m["name"] for m in _ENTRY.finditer(docstring) if _OPTIONAL.search(m["spec"])}


class DocumentedOptionalArgumentRequired(Rule):
    """
    ## What it does
    Checks a pipeline's `__call__` for an argument its docstring marks `*optional*` but whose signature has no
    default, when the pipeline treats it as optional itself: `__call__` compares it with `None`, or takes a
    precomputed alternative (`prompt_embeds` for `prompt`).

    ## Why is this bad?
    The documented way to call the pipeline fails before it starts: passing `prompt_embeds` instead of `prompt`,
    as the docstring allows and the code handles, raises `TypeError: __call__() missing 1 required positional
    argument: 'prompt'`. diffusers shipped this in AnimateDiff (`prompt: Union[str, List[str]],` documented
    optional, fixed by giving it `None`).

    ## Example
    ```python
    def __call__(self, prompt: str | list[str], prompt_embeds: torch.Tensor | None = None):
        r\"\"\"
        Args:
            prompt (`str` or `list[str]`, *optional*):
                The prompt. If not defined, pass `prompt_embeds` instead.
        \"\"\"
        if prompt is not None and isinstance(prompt, str):
            batch_size = 1
    ```

    Use instead:
    ```python
    def __call__(self, prompt: str | list[str] | None = None, prompt_embeds: torch.Tensor | None = None): ...
    ```

    ## Known problems
    Only `__call__` of pipeline classes is read (other methods such as `encode_prompt` take `prompt` positionally
    on purpose and accept `None` passed explicitly). An argument documented optional that really is required,
    with no `None` check and no precomputed alternative, is left alone: the docstring is what is wrong there.
    The fix adds `= None` only when every later positional parameter has a default already.

    ## References
    - huggingface/diffusers#13656, pattern 4
    - huggingface/diffusers#5702 (AnimateDiff: `prompt` documented optional, required by the signature)
    """

    code = "DRB409"
    pattern = 4
    severity = "warning"
    message = (
        "`{name}` is documented as optional and {why}, but the signature has no default, so calling the "
        "pipeline without it raises `TypeError`; give it `= None`."
    )
    REQUIRES_ANY = ("optional",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt: str | None = None, prompt_embeds=None):
                    r'''
                    Args:
                        prompt (`str`, *optional*):
                            The prompt; pass `prompt_embeds` instead if not given.
                    '''
                    if prompt is None and prompt_embeds is None:
                        raise ValueError("give `prompt` or `prompt_embeds`")
            """
        ),
        # documented optional, but nothing in the pipeline handles it missing: the docstring is what is wrong
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, height=None):
                    r'''
                    Args:
                        prompt (`str`, *optional*):
                            The prompt.
                    '''
                    return self.generate(prompt, height)
            """
        ),
        # not a pipeline's `__call__`: encode helpers take `prompt` positionally and accept an explicit None
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, device, prompt_embeds=None):
                    r'''
                    Args:
                        prompt (`str`, *optional*):
                            The prompt.
                    '''
                    if prompt is not None:
                        prompt_embeds = self.text_encoder(prompt)
                    return prompt_embeds
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyVideoPipeline(DiffusionPipeline):
                def __call__(self, prompt: str | list[str], num_frames: int = 16, prompt_embeds=None):
                    r'''
                    Args:
                        prompt (`str` or `list[str]`, *optional*):
                            The prompt or prompts to guide the video generation.
                    '''
                    if prompt is not None and isinstance(prompt, str):
                        batch_size = 1
                    return batch_size
            """,
            message=(
                "`prompt` is documented as optional and `__call__` handles it being `None`, but the signature has "
                "no default, so calling the pipeline without it raises `TypeError`; give it `= None`."
            ),
            fixed="""
            class MyVideoPipeline(DiffusionPipeline):
                def __call__(self, prompt: str | list[str] = None, num_frames: int = 16, prompt_embeds=None):
                    r'''
                    Args:
                        prompt (`str` or `list[str]`, *optional*):
                            The prompt or prompts to guide the video generation.
                    '''
                    if prompt is not None and isinstance(prompt, str):
                        batch_size = 1
                    return batch_size
            """,
        ),
        # the precomputed alternative alone says the argument may be left out; a later required argument keeps the
        # fix away (a default here would be a syntax error)
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, prompt_embeds=None):
                    '''
                    Args:
                        prompt (`str`, optional):
                            The prompt.
                        image (`PIL.Image.Image`):
                            The image.
                    '''
                    return self.run(prompt, image, prompt_embeds)
            """,
            message=(
                "`prompt` is documented as optional and the pipeline takes `prompt_embeds` instead, but the signature "
                "has no default, so calling the pipeline without it raises `TypeError`; give it `= None`."
            ),
        ),
    ]

    def check(self) -> None:
        for cls, function in pipeline_methods(self.context, "__call__"):
            optional = _optional_in_docstring(function)
            if not optional:
                continue
            params = function.params
            names = {p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)}
            tested = {
                found[0] for c in walk.own_nodes(function, cst.Comparison) if (found := none_comparison(c)) is not None
            }
            positional = [*params.posonly_params, *params.params]
            for index, param in enumerate((*positional, *params.kwonly_params)):
                name = param.name.value
                if param.default is not None or name not in optional or name == "self":
                    continue
                if name in tested:
                    why = "`__call__` handles it being `None`"
                elif f"{name}_embeds" in names:
                    why = f"the pipeline takes `{name}_embeds` instead"
                else:
                    continue
                fix = None
                later = positional[index + 1 :] if index < len(positional) else []
                if all(p.default is not None for p in later):
                    fix = Proposal(
                        f"give `{name}` the default `None`",
                        (
                            Replace(
                                param,
                                param.with_changes(
                                    default=cst.Name("None"),
                                    equal=cst.AssignEqual(
                                        whitespace_before=cst.SimpleWhitespace(" " if param.annotation else ""),
                                        whitespace_after=cst.SimpleWhitespace(" " if param.annotation else ""),
                                    ),
                                ),
                            ),
                        ),
                    )
                self.report(
                    param,
                    self.message.format(name=name, why=why),
                    symbol=name,
                    scope=f"{cls.qualname}.__call__",
                    fix=fix,
                )
