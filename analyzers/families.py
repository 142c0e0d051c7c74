"""A finding's family: the part of diffusers maintainers name it by (`flux`, `models/transformers`), from its path.

One rule, documented in docs/dashboard.md:

| path (package or repository)                         | family                         |
|------------------------------------------------------|--------------------------------|
| `diffusers/pipelines/flux/pipeline_flux.py`          | `flux`                         |
| `diffusers/pipelines/pipeline_utils.py`              | `pipelines`                    |
| `diffusers/modular_pipelines/wan/before_denoise.py`  | `modular_pipelines/wan`        |
| `diffusers/modular_pipelines/modular_pipeline.py`    | `modular_pipelines`            |
| `diffusers/models/transformers/transformer_flux.py`  | `models/transformers`          |
| `diffusers/models/attention_dispatch.py`             | `models`                       |
| `diffusers/schedulers/scheduling_ddim.py`            | `schedulers` (any other folder: its name) |
| `diffusers/training_utils.py`                        | `core` (a module at the top)   |
| `tests/pipelines/flux/test_pipeline_flux.py`         | `flux` (tests join their code) |
| `tests/others/test_config.py`                        | `tests/others`                 |

A pipeline family is its folder under `pipelines/`, as in the meta issue and the repository's own layout; models are
grouped one level deeper (`models/transformers`, `models/autoencoders`, `models/unets`, `models/controlnets`),
since a model folder holds dozens of unrelated architectures. `src/` in front of a path is ignored.
"""

from __future__ import annotations


#: folders whose sub-folders are the families (a file directly inside is the folder's own family)
NESTED = ("pipelines", "modular_pipelines", "models")
#: the family of a module at the top of the package (`diffusers/training_utils.py`)
CORE = "core"


def family(path: str) -> str:
    """The family of a finding path (`diffusers/pipelines/flux/pipeline_flux.py` -> `flux`); see the table above."""
    parts = [part for part in path.replace("\\", "/").split("/") if part]
    if parts[:1] == ["src"]:
        parts = parts[1:]
    in_tests = parts[:1] == ["tests"]
    inner = parts[1:]  # below the package (`diffusers/`) or `tests/`
    if len(inner) <= 1:
        return "tests" if in_tests else CORE
    top, rest = inner[0], inner[1:]
    if top in NESTED:
        if len(rest) == 1:  # a module directly in pipelines/, models/, …
            return top
        return rest[0] if top == "pipelines" else f"{top}/{rest[0]}"
    return f"tests/{top}" if in_tests else top
