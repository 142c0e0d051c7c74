"""DRB913: a projection-fusing method concatenates `to_q/to_k/to_v` but never the class's `add_*_proj` set."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, self_attribute


#: the main projections a fusion concatenates
MAIN_PROJECTIONS = frozenset({"to_q", "to_k", "to_v"})
#: the added (context) projections of joint attention
ADDED_PROJECTIONS = frozenset({"add_q_proj", "add_k_proj", "add_v_proj"})


def _fused_main_projection(call: cst.Call) -> bool:
    """`torch.cat([self.to_q.weight..., self.to_k.weight..., ...])`: two or more main projections concatenated."""
    if call_name(call) not in ("torch.cat", "torch.concat", "torch.concatenate") or not call.args:
        return False
    found = {
        attribute.attr.value
        for attribute in walk.nodes(call.args[0].value, cst.Attribute)
        if self_attribute(attribute) and attribute.attr.value in MAIN_PROJECTIONS
    }
    return len(found) >= 2


class FusionSkipsAddedProjections(Rule):
    """
    ## What it does
    Checks attention classes that create added (context) projections (`self.add_q_proj`, `self.add_k_proj`,
    `self.add_v_proj`) for a method that fuses the main projections (`torch.cat([self.to_q.weight, self.to_k.weight,
    self.to_v.weight])`) but never reads any of the added ones.

    ## Why is this bad?
    `fuse_qkv_projections()` runs this method on every attention module of the model. Joint attention (SD3, Flux,
    HunyuanVideo, ...) projects the context with the added set, and its fused processor expects the fused
    counterpart (`attn.to_added_qkv`): the model is left half fused, and the fused processor fails or falls back
    for every model whose attention has the added projections.

    ## Example
    ```python
    class Attention(nn.Module):
        def __init__(self, dim, added_kv_proj_dim=None):
            self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
            if added_kv_proj_dim is not None:
                self.add_q_proj = nn.Linear(added_kv_proj_dim, dim)
                ...

        def fuse_projections(self):
            weight = torch.cat([self.to_q.weight.data, self.to_k.weight.data, self.to_v.weight.data])
            self.to_qkv = nn.Linear(weight.shape[1], weight.shape[0])
            self.to_qkv.weight.copy_(weight)
    ```

    Use instead: also fuse `add_q_proj/add_k_proj/add_v_proj` into `self.to_added_qkv` when they exist.

    ## Known problems
    Only a class that assigns `self.add_q_proj` in its own body is checked (added keys and values alone have no
    fused processor to feed); a subclass that inherits the fusion, or added projections under other names, stays
    silent.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#8829 (Attention.fuse_projections ignored SD3's added projections)
    """

    code = "DRB913"
    pattern = 9
    severity = "warning"
    message = (
        "`{method}` fuses the main projections (`to_q/to_k/to_v`) but never the added projections "
        "(`{added}`) that `{cls}` also creates, so joint-attention models are left half fused; fuse them too "
        "(e.g. into `to_added_qkv`)."
    )
    REQUIRES_ANY = ("add_q_proj",)
    PATHS = ("/models/",)

    VALID = [
        Valid(
            """
            class JointAttention(nn.Module):
                def __init__(self, dim, added_kv_proj_dim=None):
                    super().__init__()
                    self.to_q = nn.Linear(dim, dim)
                    self.to_k = nn.Linear(dim, dim)
                    self.to_v = nn.Linear(dim, dim)
                    if added_kv_proj_dim is not None:
                        self.add_q_proj = nn.Linear(added_kv_proj_dim, dim)
                        self.add_k_proj = nn.Linear(added_kv_proj_dim, dim)
                        self.add_v_proj = nn.Linear(added_kv_proj_dim, dim)

                @torch.no_grad()
                def fuse_projections(self):
                    weight = torch.cat([self.to_q.weight.data, self.to_k.weight.data, self.to_v.weight.data])
                    self.to_qkv = nn.Linear(weight.shape[1], weight.shape[0])
                    self.to_qkv.weight.copy_(weight)
                    if getattr(self, "add_q_proj", None) is not None:
                        added = torch.cat([self.add_q_proj.weight, self.add_k_proj.weight, self.add_v_proj.weight])
                        self.to_added_qkv = nn.Linear(added.shape[1], added.shape[0])
                        self.to_added_qkv.weight.copy_(added)
            """,
            path="diffusers/models/attention_example.py",
        ),
        # no added projections in the class: nothing else to fuse
        Valid(
            """
            class SelfAttention(nn.Module):
                def __init__(self, dim):
                    super().__init__()
                    self.to_q = nn.Linear(dim, dim)
                    self.to_k = nn.Linear(dim, dim)
                    self.to_v = nn.Linear(dim, dim)

                def fuse_projections(self):
                    weight = torch.cat([self.to_q.weight.data, self.to_k.weight.data, self.to_v.weight.data])
                    self.to_qkv = nn.Linear(weight.shape[1], weight.shape[0])
            """,
            path="diffusers/models/attention_example.py",
        ),
        # added keys and values only (unCLIP-style added KV): their processors have no fused variant
        Valid(
            """
            class AddedKVAttention(nn.Module):
                def __init__(self, dim, added_kv_proj_dim=None):
                    super().__init__()
                    self.to_q = nn.Linear(dim, dim)
                    self.to_k = nn.Linear(dim, dim)
                    self.to_v = nn.Linear(dim, dim)
                    if added_kv_proj_dim is not None:
                        self.add_k_proj = nn.Linear(added_kv_proj_dim, dim)
                        self.add_v_proj = nn.Linear(added_kv_proj_dim, dim)

                def fuse_projections(self):
                    weight = torch.cat([self.to_q.weight.data, self.to_k.weight.data, self.to_v.weight.data])
                    self.to_qkv = nn.Linear(weight.shape[1], weight.shape[0])
            """,
            path="diffusers/models/attention_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class Attention(nn.Module):
                def __init__(self, dim, added_kv_proj_dim=None, cross=False):
                    super().__init__()
                    self.to_q = nn.Linear(dim, dim)
                    self.to_k = nn.Linear(dim, dim)
                    self.to_v = nn.Linear(dim, dim)
                    if added_kv_proj_dim is not None:
                        self.add_k_proj = nn.Linear(added_kv_proj_dim, dim)
                        self.add_v_proj = nn.Linear(added_kv_proj_dim, dim)
                        self.add_q_proj = nn.Linear(added_kv_proj_dim, dim)

                @torch.no_grad()
                def fuse_projections(self, fuse=True):
                    if not self.cross:
                        weight = torch.cat([self.to_q.weight.data, self.to_k.weight.data, self.to_v.weight.data])
                        self.to_qkv = nn.Linear(weight.shape[1], weight.shape[0])
                    else:
                        weight = torch.cat([self.to_k.weight.data, self.to_v.weight.data])
                        self.to_kv = nn.Linear(weight.shape[1], weight.shape[0])
                    self.fused_projections = fuse
            """,
            message=(
                "`fuse_projections` fuses the main projections (`to_q/to_k/to_v`) but never the added projections "
                "(`add_k_proj/add_v_proj/add_q_proj`) that `Attention` also creates, so joint-attention models are "
                "left half fused; fuse them too (e.g. into `to_added_qkv`)."
            ),
            path="diffusers/models/attention_example.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            cls = definition.node
            if not isinstance(cls, cst.ClassDef):
                continue
            methods = [s for s in cls.body.body if isinstance(s, cst.FunctionDef)]
            added: list[str] = []
            for method in methods:
                for assign in walk.own_nodes(method, cst.Assign):
                    for target in assign.targets:
                        for node in (target.target, *walk.nodes(target.target, cst.Attribute)):
                            if self_attribute(node) and node.attr.value in ADDED_PROJECTIONS:
                                if node.attr.value not in added:
                                    added.append(node.attr.value)
            # joint attention has the full added set; `add_k_proj/add_v_proj` alone (added KV of unCLIP-style
            # cross-attention) are concatenated with the main keys by their processors, which have no fused variant
            if "add_q_proj" not in added:
                continue
            for method in methods:
                if not any(_fused_main_projection(call) for call in walk.own_nodes(method, cst.Call)):
                    continue
                if any(n.attr.value in ADDED_PROJECTIONS for n in walk.own_nodes(method, cst.Attribute)):
                    continue
                strings = " ".join(s.value for s in walk.own_nodes(method, cst.SimpleString))
                if any(name in strings for name in ADDED_PROJECTIONS):
                    continue
                message = self.message.format(method=method.name.value, added="/".join(added), cls=cls.name.value)
                self.report(
                    method.name, message, symbol=method.name.value, scope=f"{definition.qualname}.{method.name.value}"
                )
