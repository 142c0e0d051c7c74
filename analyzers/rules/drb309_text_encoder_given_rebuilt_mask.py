"""DRB309: a text encoder is run with a padding mask rebuilt from the tokenizer's mask, not the tokenizer's mask."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import keyword, names_read, string_value


#: methods after which a mask still marks the same positions (`mask.to(device)`, `mask.long()`)
KEEPS_MASK = frozenset(
    {"to", "clone", "bool", "int", "long", "float", "half", "type", "cpu", "cuda", "detach", "contiguous"}
)
MASK_FIELD = "attention_mask"


def _strip(expr: cst.BaseExpression) -> cst.BaseExpression:
    """`x.to(device).long()` -> `x`: drop the calls after which a mask keeps the same positions."""
    while isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and expr.func.attr.value in KEEPS_MASK:
        expr = expr.func.value
    return expr


def _rebuilt(expr: cst.BaseExpression) -> cst.Comparison | None:
    """The comparison that builds a mask from positions and lengths (`arange <= lengths`), once the mask-keeping
    calls around it are dropped; None for anything else."""
    expr = _strip(expr)
    return expr if isinstance(expr, cst.Comparison) else None


def _is_tokenizer_call(expr: cst.BaseExpression) -> bool:
    if not isinstance(expr, cst.Call):
        return False
    name = dotted_name(expr.func) or ""
    return "tokenizer" in name.rpartition(".")[2]


def _encoder_call(call: cst.Call) -> bool:
    name = dotted_name(call.func) or ""
    return "text_encoder" in name.rpartition(".")[2]


class TextEncoderGivenRebuiltMask(Rule):
    """
    ## What it does
    Checks functions that tokenize a prompt (`text_inputs = self.tokenizer(...)`), rebuild a padding mask from
    the tokenizer's `attention_mask` with a comparison of positions and lengths
    (`mask = (positions <= lengths.unsqueeze(1)).long()`), and then run the text encoder with that rebuilt mask
    instead of the tokenizer's own mask.

    ## Why is this bad?
    A mask rebuilt from lengths is a mask for the *denoiser* (Chroma un-masks one padding token for its
    transformer); the text encoder was trained with the tokenizer's mask. Fed the rebuilt mask, the encoder
    attends to padding tokens, and the prompt embeddings drift from the reference model's, so every image
    differs from what the checkpoint was trained to produce. Chroma's text-to-image and img2img pipelines
    shipped this until the encoder was given the tokenizer's mask and the extended mask was built only for
    the transformer.

    ## Example
    ```python
    text_inputs = self.tokenizer(prompt, padding="max_length", return_tensors="pt")
    attention_mask = text_inputs.attention_mask.clone()
    seq_lengths = attention_mask.sum(dim=1)
    positions = torch.arange(attention_mask.size(1)).unsqueeze(0)
    attention_mask = (positions <= seq_lengths.unsqueeze(1)).long()
    prompt_embeds = self.text_encoder(text_inputs.input_ids, attention_mask=attention_mask)[0]
    ```

    Use instead:
    ```python
    tokenizer_mask = text_inputs.attention_mask
    prompt_embeds = self.text_encoder(text_inputs.input_ids, attention_mask=tokenizer_mask)[0]
    seq_lengths = tokenizer_mask.sum(dim=1)
    positions = torch.arange(tokenizer_mask.size(1)).unsqueeze(0)
    attention_mask = (positions <= seq_lengths.unsqueeze(1)).long()  # for the transformer
    ```

    ## Known problems
    Only a mask rebuilt by a comparison is reported, and only when the comparison reads (through local names)
    the tokenizer's `attention_mask`; a mask concatenated with extra tokens (`torch.cat`) is left alone, since
    the input ids are usually extended the same way. Assignments are followed in source order, without
    regard to branches.

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#12508 (Chroma: T5 encoded with the transformer's extended mask)
    """

    code = "DRB309"
    pattern = 3
    severity = "error"
    message = (
        "`{encoder}` is run with `{mask}`, a mask rebuilt from the tokenizer's `attention_mask` (`{rebuilt}`), "
        "so the text encoder sees other tokens than it was trained on; pass the tokenizer's mask and build "
        "the rebuilt one for the denoiser only."
    )
    REQUIRES_ANY = ("attention_mask",)
    PATHS = ("/pipelines/", "/modular_pipelines/")

    VALID = [
        Valid(
            # the encoder gets the tokenizer's mask; the extended mask is built afterwards for the transformer
            """
            import torch

            class MyPipeline(DiffusionPipeline):
                def _get_t5_prompt_embeds(self, prompt, device):
                    text_inputs = self.tokenizer(prompt, padding="max_length", return_tensors="pt")
                    tokenizer_mask = text_inputs.attention_mask.to(device)
                    prompt_embeds = self.text_encoder(text_inputs.input_ids, attention_mask=tokenizer_mask)[0]
                    lengths = tokenizer_mask.sum(dim=1)
                    positions = torch.arange(tokenizer_mask.size(1), device=device).unsqueeze(0)
                    attention_mask = (positions <= lengths.unsqueeze(1)).long()
                    return prompt_embeds, attention_mask
            """
        ),
        Valid(
            # a mask compared from something the tokenizer did not produce (a caller's lengths)
            """
            import torch

            class MyPipeline(DiffusionPipeline):
                def _encode(self, prompt, lengths):
                    text_inputs = self.tokenizer(prompt, return_tensors="pt")
                    attention_mask = torch.arange(77)[None] < lengths[:, None]
                    return self.text_encoder(text_inputs.input_ids, attention_mask=attention_mask)[0]
            """
        ),
        Valid(
            # prefix tokens added to both the ids and the mask
            """
            import torch

            class MyPipeline(DiffusionPipeline):
                def _encode(self, prompt, prefix_ids):
                    text_inputs = self.tokenizer(prompt, return_tensors="pt")
                    ids = torch.cat([prefix_ids, text_inputs.input_ids], dim=1)
                    mask = torch.cat([torch.ones_like(prefix_ids), text_inputs.attention_mask], dim=1)
                    return self.text_encoder(ids, attention_mask=mask)[0]
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            class MyPipeline(DiffusionPipeline):
                def _get_t5_prompt_embeds(self, prompt, device):
                    text_inputs = self.tokenizer(prompt, padding="max_length", return_tensors="pt")
                    mask = text_inputs["attention_mask"]
                    lengths = mask.sum(dim=1)
                    positions = torch.arange(mask.size(1)).unsqueeze(0)
                    mask = (positions <= lengths.unsqueeze(1)).long()
                    prompt_embeds = self.text_encoder(text_inputs.input_ids.to(device), attention_mask=mask.to(device))
                    return prompt_embeds[0], mask
            """,
            message=(
                "`self.text_encoder` is run with `mask`, a mask rebuilt from the tokenizer's `attention_mask` "
                "(`positions <= lengths.unsqueeze(1)`), so the text encoder sees other tokens than it was trained "
                "on; pass the tokenizer's mask and build the rebuilt one for the denoiser only."
            ),
        ),
        Invalid(
            # the comparison inline in the encoder call, reading a length computed from the tokenizer output
            """
            import torch

            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt):
                    tokens = self.tokenizer_2(prompt, return_tensors="pt")
                    n = tokens.attention_mask.sum(-1, keepdim=True)
                    return self.text_encoder_2(tokens.input_ids, attention_mask=torch.arange(77)[None] <= n)[0]
            """,
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if isinstance(function, cst.FunctionDef):
                self._check_function(definition.qualname, function)

    def _check_function(self, scope: str, function: cst.FunctionDef) -> None:
        encoder_calls = [c for c in walk.own_nodes(function, cst.Call) if _encoder_call(c)]
        if not encoder_calls:
            return
        order = {id(node): i for i, node in enumerate(walk.walk(function.body))}
        assigns: list[tuple[int, str, cst.BaseExpression]] = []
        for assign in walk.own_nodes(function, cst.Assign):
            if len(assign.targets) == 1 and isinstance(assign.targets[0].target, cst.Name):
                assigns.append((order.get(id(assign), -1), assign.targets[0].target.value, assign.value))
        tokenized = {name for _, name, value in assigns if _is_tokenizer_call(value)}
        if not tokenized:
            return
        # names whose value reads the tokenizer's mask (through any chain of local names)
        derived: set[str] = set()
        changed = True
        while changed:
            changed = False
            for _, name, value in assigns:
                if name not in derived and self._reads_tokenizer_mask(value, tokenized, derived):
                    derived.add(name)
                    changed = True
        for call in encoder_calls:
            arg = keyword(call, MASK_FIELD)
            if arg is None:
                continue
            at = order.get(id(call), -1)
            expr, shown = _strip(arg.value), None
            seen: set[str] = set()
            while isinstance(expr, cst.Name) and expr.value not in seen:
                seen.add(expr.value)
                shown = shown or expr.value
                earlier = [(i, value) for i, name, value in assigns if name == expr.value and i < at]
                if not earlier:
                    break
                at, value = max(earlier, key=lambda pair: pair[0])
                expr = _strip(value)
            comparison = _rebuilt(expr)
            if comparison is None or not self._reads_tokenizer_mask(comparison, tokenized, derived):
                continue
            rebuilt = " ".join(cst.Module([]).code_for_node(comparison.with_changes(lpar=(), rpar=())).split())
            message = self.message.format(encoder=dotted_name(call.func), mask=shown or rebuilt, rebuilt=rebuilt)
            self.report(arg, message, symbol=MASK_FIELD, scope=scope)

    @staticmethod
    def _reads_tokenizer_mask(expr: cst.BaseExpression, tokenized: set[str], derived: set[str]) -> bool:
        for node in walk.walk(expr):
            if isinstance(node, cst.Attribute) and node.attr.value == MASK_FIELD:
                if isinstance(node.value, cst.Name) and node.value.value in tokenized:
                    return True
            if isinstance(node, cst.Subscript) and isinstance(node.value, cst.Name) and node.value.value in tokenized:
                if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
                    if string_value(node.slice[0].slice.value) == MASK_FIELD:
                        return True
        return any(n.value in derived for n in names_read(expr))
