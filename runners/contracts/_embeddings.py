"""What `encode_prompt` returns, as the `__call__` arguments that take it back (DRC015, DRC016).

A pipeline's `encode_prompt` returns a tuple whose items are named in its `return` statement (`return prompt_embeds,
negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds`); by diffusers convention those names are
the `__call__` parameters that take the tensors back. Some pipelines encode the prompt and the negative prompt in one
call (the tuple names both), others call `encode_prompt` once per text and the negative call's items are the
`negative_` arguments. Rather than call `encode_prompt` with arguments that differ per family, the contracts record
the calls the pipeline makes itself during a prompt call; anything the mapping cannot place exactly raises
`Unmappable`, whose message is the contract's skip reason.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from contextlib import contextmanager


class Unmappable(LookupError):
    """The pipeline's `encode_prompt` output cannot be mapped onto `__call__` arguments without guessing."""


#: a non-empty negative prompt, so that the negative embeddings carry something a default ("" or zeros) does not
NEGATIVE = "a blurry photo"
#: `prompt`, `prompt_2`, `negative_prompt_3`, ...: the text arguments that embeddings replace
TEXT_ARGUMENT = re.compile(r"(negative_)?prompt(_\d+)?")


def return_names(pipeline_class) -> tuple[str, ...]:
    """The names `encode_prompt` returns, read from its `return` statements (which must all agree)."""
    function = getattr(pipeline_class, "encode_prompt", None)
    if function is None:
        raise Unmappable(f"{pipeline_class.__name__} has no encode_prompt")
    try:
        source = textwrap.dedent(inspect.getsource(inspect.unwrap(function)))
        node = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError, IndexError) as error:
        raise Unmappable(f"the source of {pipeline_class.__name__}.encode_prompt cannot be read ({error})") from None
    found: set[tuple[str, ...]] = set()
    for child in ast.walk(node):
        if not isinstance(child, ast.Return) or child.value is None:
            continue
        value = child.value
        items = value.elts if isinstance(value, ast.Tuple) else [value]
        if not all(isinstance(item, ast.Name) for item in items):
            raise Unmappable(f"encode_prompt returns `{ast.unparse(value)[:60]}`, not a tuple of named embeddings")
        found.add(tuple(item.id for item in items if isinstance(item, ast.Name)))
    if len(found) != 1:
        shown = " or ".join(f"({', '.join(names)})" for names in sorted(found)) or "nothing"
        raise Unmappable(f"encode_prompt returns {shown}: no single layout to map onto __call__ arguments")
    return found.pop()


def _detached(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(item) for item in value)
    return value


@contextmanager
def recording(pipe):
    """Record every `pipe.encode_prompt(...)` of the block: a list of (bound arguments, returned value)."""
    original = pipe.encode_prompt
    signature = inspect.signature(original)
    calls: list[tuple[dict, object]] = []

    def record(*args, **kwargs):
        result = original(*args, **kwargs)
        try:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
        except TypeError:
            arguments = {}
        calls.append((arguments, _detached(result)))
        return result

    pipe.encode_prompt = record
    try:
        yield calls
    finally:
        del pipe.encode_prompt  # the instance attribute: the class's method is back


def _texts(value) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _batch(value) -> int | None:
    import torch

    if isinstance(value, torch.Tensor):
        return int(value.shape[0]) if value.ndim else None
    if isinstance(value, (list, tuple)):
        return len(value)
    return None


def prompt_inputs(case, seed: int = 0) -> dict:
    """The dummy inputs, with one output per prompt and, where the pipeline takes one, a non-empty negative prompt."""
    inputs = case.get_dummy_inputs(seed)
    params = case.call_parameters()
    per_prompt = case.factory.per_prompt_arg
    if per_prompt in inputs:
        inputs[per_prompt] = 1
    if "negative_prompt" in params and not inputs.get("negative_prompt"):
        inputs["negative_prompt"] = NEGATIVE
    return inputs


def embedding_arguments(pipeline_class, inputs: dict, calls: list[tuple[dict, object]]) -> dict:
    """The `__call__` arguments, `prompt_embeds` and the rest, that the recorded `encode_prompt` calls returned."""
    names = return_names(pipeline_class)
    params = set(inspect.signature(pipeline_class.__call__).parameters)
    prompts = _texts(inputs.get("prompt"))
    negatives = _texts(inputs.get("negative_prompt"))
    if prompts is None:
        raise Unmappable("the dummy inputs have no text prompt")
    if not calls:
        raise Unmappable("the prompt call never ran encode_prompt")
    combined = any(name.startswith("negative_") for name in names)
    if combined and len(calls) != 1:
        raise Unmappable(f"encode_prompt returns negative embeddings too, yet ran {len(calls)} times in one call")
    if not combined and negatives is not None and negatives == prompts:
        raise Unmappable("the prompt and the negative prompt are the same text: their encode_prompt calls look alike")
    arguments: dict = {}
    seen: set[str] = set()
    for bound, result in calls:
        prefix = ""
        if not combined:
            text = _texts(bound.get("prompt"))
            if text == prompts:
                prefix = ""
            elif negatives is not None and text == negatives:
                prefix = "negative_"
            else:
                raise Unmappable(f"an encode_prompt call encoded {text!r}, neither the prompt nor the negative prompt")
            if prefix in seen:
                raise Unmappable(f"encode_prompt encoded the {prefix.rstrip('_') or 'prompt'} text twice in one call")
            seen.add(prefix)
        values = result if isinstance(result, tuple) else (result,)
        if len(values) != len(names):
            raise Unmappable(f"encode_prompt returned {len(values)} items where its return names {len(names)}")
        for name, value in zip(names, values, strict=True):
            target = prefix + name
            if target in params:
                batch = _batch(value)
                if value is not None and batch != len(prompts):
                    raise Unmappable(
                        f"encode_prompt returned `{name}` with batch {batch} for {len(prompts)} prompt(s): not the "
                        "layout `__call__` takes back (guidance halves concatenated?)"
                    )
                arguments[target] = value
            elif value is None or name.endswith("_ids"):
                continue  # nothing to pass, or position ids the pipeline derives from the embeddings again
            else:
                raise Unmappable(f"encode_prompt returns `{name}`, which __call__ takes no `{target}` argument for")
    if arguments.get("prompt_embeds") is None:
        raise Unmappable("no recorded encode_prompt call gave `prompt_embeds`")
    return arguments


def prompt_call_and_embeddings(case, pipe) -> tuple:
    """(the output of the prompt call, the `__call__` arguments that pass what its `encode_prompt` calls returned);
    skips the contract, saying why, when the embeddings cannot be mapped or the prompt call itself fails."""
    import pytest
    import torch

    from runners.contracts._base import describe, first_output

    inputs = prompt_inputs(case)
    try:
        return_names(case.pipeline_class)
        with recording(pipe) as calls:
            reference = torch.as_tensor(first_output(pipe(**inputs))).float()
        return reference, embedding_arguments(case.pipeline_class, inputs, calls)
    except Unmappable as why:
        pytest.skip(str(why))
    except Exception as error:  # noqa: BLE001 - the prompt call itself is other contracts' business
        pytest.skip(f"the prompt call with a negative prompt raised {describe(error, 160)}")


def with_embeddings(inputs: dict, arguments: dict) -> dict:
    """`inputs` with the embeddings instead of the texts they encode (a negative text stays where no negative
    embeddings replace it)."""
    replaced = {**inputs, **arguments}
    has_negative = any(k.startswith("negative_") and v is not None for k, v in arguments.items())
    for key in inputs:
        if TEXT_ARGUMENT.fullmatch(key) and (has_negative or not key.startswith("negative_")):
            replaced[key] = None
    return replaced


def tolerance(case) -> float:
    """The same computation twice: exact on CPU in float32; rounding and kernel choice elsewhere. In half precision
    the steps compound it: on an H100 in bf16 two runs of one computation differed by up to 1.6e-2."""
    return half_precision_tolerance(case, 1e-3)


def half_precision_tolerance(case, exact: float) -> float:
    """`exact` on CPU in float32, 1e-2 on an accelerator in float32, 5e-2 in half precision."""
    if case.dtype is not None and case.dtype != _float32():
        return 5e-2
    return exact if case.torch_device == "cpu" else 1e-2


def _float32():
    import torch

    return torch.float32
