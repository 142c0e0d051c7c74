"""DRB709: a version check reads the version of one package while it guards (and names) another."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import string_value


#: how packages are spelled in names and messages, by the distribution whose version they mean
PACKAGES = {
    "torch": "torch",
    "pytorch": "torch",
    "torchao": "torchao",
    "torch_xla": "torch_xla",
    "torch_npu": "torch_npu",
    "torchvision": "torchvision",
    "transformers": "transformers",
    "accelerate": "accelerate",
    "peft": "peft",
    "bitsandbytes": "bitsandbytes",
    "bnb": "bitsandbytes",
    "huggingface_hub": "huggingface_hub",
    "hf_hub": "huggingface_hub",
    "gguf": "gguf",
    "optimum_quanto": "optimum_quanto",
    "quanto": "optimum_quanto",
    "nvidia_modelopt": "nvidia_modelopt",
    "modelopt": "nvidia_modelopt",
    "xformers": "xformers",
    "safetensors": "safetensors",
    "flash_attn": "flash_attn",
    "sageattention": "sageattention",
    "onnxruntime": "onnxruntime",
    "jax": "jax",
    "flax": "flax",
    "numpy": "numpy",
    "scipy": "scipy",
}
#: functions that read an installed distribution's version from its name
METADATA_VERSION = frozenset(
    {"version", "importlib.metadata.version", "importlib_metadata.version", "metadata.version"}
)
_IS_VERSION = re.compile(r"^is_(?P<package>\w+?)_version$")
_VERSION_NAME = re.compile(r"^_?(?P<package>[a-z][a-z0-9_]*?)_version$")
#: a package named with a version next to it: "torchao>=0.7", "`accelerate` version", "torch 2.0", "version of peft"
_MENTION = re.compile(
    r"(?P<before>version\s+of\s+)?[`'\"]?(?P<name>[A-Za-z][A-Za-z0-9_\-]*)[`'\"]?"
    r"(?=(?P<after>\s*(?:[<>=]=?|~=)\s*\d|\s+v?\d+\.\d+|\s+version))?",
    re.IGNORECASE,
)


def _package(spelling: str) -> str | None:
    return PACKAGES.get(spelling.lower().replace("-", "_"))


def _read(call: cst.Call) -> str | None:
    """The package whose version `call` reads: `is_torch_version(...)`, `importlib.metadata.version("torch")`."""
    name = dotted_name(call.func) or ""
    found = _IS_VERSION.match(name.rpartition(".")[2])
    if found:
        return _package(found["package"])
    if name in METADATA_VERSION and len(call.args) == 1 and call.args[0].keyword is None:
        spelled = string_value(call.args[0].value)
        return _package(spelled) if spelled else None
    return None


def _packages_read(node: cst.CSTNode) -> set[str] | None:
    """Every package whose version `node` reads (calls, `torch.__version__`); None where one cannot be told."""
    found: set[str] = set()
    for sub in walk.walk(node):
        if isinstance(sub, cst.Call):
            name = dotted_name(sub.func) or ""
            if name in METADATA_VERSION and _read(sub) is None:
                return None  # a distribution named by a variable or one we do not know
            package = _read(sub)
            if package:
                found.add(package)
        elif isinstance(sub, cst.Attribute) and sub.attr.value == "__version__":
            owner = dotted_name(sub.value) or ""
            package = _package(owner.rpartition(".")[2])
            if package is None:
                return None
            found.add(package)
    return found


def _text(node: cst.BaseExpression) -> str:
    """The literal text of a (formatted, concatenated) string, with `{...}` for each replacement field."""
    if isinstance(node, cst.ConcatenatedString):
        return _text(node.left) + _text(node.right)
    if isinstance(node, cst.FormattedString):
        return "".join(p.value if isinstance(p, cst.FormattedStringText) else "{}" for p in node.parts)
    return string_value(node) or ""


def _mentions(message: str) -> tuple[set[str], set[str]]:
    """(packages the message names at all, packages it names next to a version)."""
    named: set[str] = set()
    versioned: set[str] = set()
    for match in _MENTION.finditer(message):
        package = _package(match["name"])
        if package is None:
            continue
        named.add(package)
        if match["before"] or match["after"]:
            versioned.add(package)
    return named, versioned


class VersionCheckReadsOtherPackage(Rule):
    """
    ## What it does
    Checks for version checks that read one package's version while everything around them is about another:
    a variable named for one package bound to another's version
    (`torchao_version = version.parse(importlib.metadata.version("torch"))`), or an `if` that tests only
    `is_torch_version(...)` (or `torch.__version__`, `importlib.metadata.version("torch")`) and raises an error
    that asks for another package at some version, never naming the one it tested.

    ## Why is this bad?
    The guard compares the wrong number. A check for `torchao>=0.7.0` that reads torch's version (2.x) always
    passes, so a too-old torchao is let through to fail later with an obscure error, and the message
    reports torch's version as torchao's; the reverse rejects installs that are fine. diffusers' torchao
    quantizer read torch's version for its minimum-torchao check from 0.32 to 0.37.

    ## Example
    ```python
    torchao_version = version.parse(importlib.metadata.version("torch"))
    if torchao_version < version.parse("0.7.0"):
        raise RuntimeError(f"The minimum required version of `torchao` is 0.7.0, but found {torchao_version}.")
    ```

    Use instead:
    ```python
    torchao_version = version.parse(importlib.metadata.version("torchao"))
    ```

    ## Known problems
    Only packages of a fixed list are recognised (torch, torchao, transformers, accelerate, peft, bitsandbytes,
    huggingface_hub, gguf, optimum-quanto, ...), and only a message that names a package next to a version
    (`torchao>=0.7`, "`peft` version", "version of accelerate") counts as asking for it.

    ## References
    - huggingface/diffusers#13656, pattern 7
    - huggingface/diffusers#13355 (torchao quantizer: minimum torchao version checked against torch's)
    """

    code = "DRB709"
    pattern = 7
    severity = "error"
    message = (
        "`{name}` holds the version of `{read}`, not of `{meant}`, so the check compares the wrong package; {fix}."
    )
    raise_message = (
        "this check reads the version of `{read}` but its error asks for `{meant}` at a version; "
        "test `{meant}`'s version (`is_{meant}_version(...)`) or fix the message."
    )
    REQUIRES_ANY = ("version",)

    VALID = [
        Valid(
            # each variable holds the version of the package it is named for
            """
            import importlib.metadata
            from packaging import version

            def validate_environment():
                torchao_version = version.parse(importlib.metadata.version("torchao"))
                torch_version = version.parse(torch.__version__)
                if torchao_version < version.parse("0.7.0"):
                    raise RuntimeError(f"torchao>=0.7.0 is required, found {torchao_version}")
                if is_torch_version("<", "2.0"):
                    raise ValueError("These processors require PyTorch 2.0. Please upgrade your PyTorch installation.")
                if not is_accelerate_available() or is_accelerate_version("<", "0.26.0"):
                    raise ImportError("Loading requires `accelerate`: `pip install 'accelerate>=0.26.0'`")
                if is_torch_version("<", "2.2.0") and dtype == torch.bfloat16:
                    raise ValueError("bfloat16 needs a newer install")
            """
        ),
        Valid(
            # a package name the list does not know, and a message that names a package without a version
            """
            def check():
                _bs4_version = importlib_metadata.version("beautifulsoup4")
                if is_torch_version("<", "2.1"):
                    raise ValueError("This feature of transformers models needs a newer torch build")
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import importlib.metadata
            from packaging import version

            class TorchAoHfQuantizer(DiffusersQuantizer):
                def validate_environment(self, *args, **kwargs):
                    torchao_version = version.parse(importlib.metadata.version("torch"))
                    if torchao_version < version.parse("0.7.0"):
                        raise RuntimeError(f"The minimum required version of `torchao` is 0.7.0, not {torchao_version}")
            """,
            path="diffusers/quantizers/torchao/torchao_quantizer.py",
            message=(
                "`torchao_version` holds the version of `torch`, not of `torchao`, so the check compares the wrong "
                'package; read `importlib.metadata.version("torchao")`.'
            ),
        ),
        Invalid(
            # the guard tests torch, the error asks for peft
            """
            def load_lora(config):
                if config.use_dora and is_torch_version("<", "0.9.0"):
                    raise ValueError("You need `peft` 0.9.0 at least to use DoRA-enabled LoRAs.")
            """,
            message=(
                "this check reads the version of `torch` but its error asks for `peft` at a version; "
                "test `peft`'s version (`is_peft_version(...)`) or fix the message."
            ),
        ),
    ]

    def check(self) -> None:
        module = self.context.module
        for assign in walk.nodes(module, cst.Assign):
            self._check_assign(assign)
        for branch in walk.nodes(module, cst.If):
            self._check_if(branch)

    def _check_assign(self, assign: cst.Assign) -> None:
        if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
            return
        name = assign.targets[0].target.value
        found = _VERSION_NAME.match(name)
        if not found:
            return
        meant = _package(found["package"])
        read = _packages_read(assign.value)
        if meant is None or not read or len(read) != 1 or meant in read:
            return
        (package,) = read
        fix = f'read `importlib.metadata.version("{meant}")`'
        self.report(assign.value, self.message.format(name=name, read=package, meant=meant, fix=fix), symbol=name)

    def _check_if(self, branch: cst.If) -> None:
        read = _packages_read(branch.test)
        if not read:
            return
        body = branch.body.body if isinstance(branch.body, cst.IndentedBlock) else ()
        if not body or not isinstance(body[0], cst.SimpleStatementLine):
            return
        first = body[0].body[0]
        if not isinstance(first, cst.Raise) or not isinstance(first.exc, cst.Call) or not first.exc.args:
            return
        named, versioned = _mentions(_text(first.exc.args[0].value))
        if named & read or len(versioned) != 1:
            return
        (meant,) = versioned
        message = self.raise_message.format(read=", ".join(sorted(read)), meant=meant)
        self.report(branch.test, message, symbol=meant)
