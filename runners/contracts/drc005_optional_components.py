"""DRC005, pattern 4: every component listed in `_optional_components` may be None."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, describe


class OptionalComponentsContract:
    code = "DRC005"
    pattern = 4
    title = "optional components set to None work"

    def test_drc005_optional_components(self):
        import pytest

        # text encoders and tokenizers are optional only with precomputed embeddings, which a prompt call has not
        optional = [
            name
            for name in getattr(self.pipeline_class, "_optional_components", []) or []
            if not name.startswith(("tokenizer", "text_encoder"))
        ]
        if not optional:
            pytest.skip(f"{self.factory.pipeline_class} declares no optional components")
        failures = []
        for name in optional:
            components = self.factory.make_components(0)
            if components.get(name) is None:
                continue  # the factory already leaves it out
            components[name] = None
            try:
                pipe = self.pipeline_class(**components).to(self.torch_device)
                pipe.set_progress_bar_config(disable=True)
                pipe(**self.get_dummy_inputs())
            except Exception as error:  # noqa: BLE001 - the crash is the finding
                failures.append(f"`{name}=None`: {describe(error, 160)}")
        if failures:
            raise ContractFailure("optional component set to None breaks the pipeline: " + "; ".join(failures))
