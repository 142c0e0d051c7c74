"""One reader of diffusers' `_import_structure` tables, shared by DRB404 (which submodules a package loads) and
DRB604 (which names it exports)."""

from __future__ import annotations

import textwrap

import libcst as cst

from analyzers.import_structure import lazy_exports, package_exports
from analyzers.rules import drb404_optional_dependency_imported_unguarded as drb404
from analyzers.rules import drb604_lazy_export_not_defined as drb604


INIT = textwrap.dedent(
    """
    _import_structure = {"pipeline_output": ["FooOutput"], "controlnet": [], "loaders": LOADERS}
    _import_structure["modeling_foo"] = ["FooModel", "FOO_SIZE"]
    _import_structure["lora_pipeline"] += ["FooLoraLoaderMixin"]
    if is_torch_available():
        _import_structure["pipeline_foo"].extend(["FooPipeline"])
    try:
        import torch
    except ImportError:
        pass
    else:
        _import_structure["pipeline_foo"].append("FooImg2ImgPipeline")
    _import_structure.update({"pipeline_bar": ("BarPipeline",)})
    def later():
        _import_structure["never"] = ["NotAnExport"]
    """
)


def test_every_form_of_entry_in_source_order():
    entries = list(package_exports(cst.parse_module(INIT)))
    assert [(e.submodule, [name for name, _ in e.names], e.exports) for e in entries] == [
        ("pipeline_output", ["FooOutput"], True),
        ("controlnet", [], False),  # listed for its own exports: the package loads nothing from it
        ("loaders", [], True),  # a variable: names unknown, but it exports
        ("modeling_foo", ["FooModel", "FOO_SIZE"], True),
        ("lora_pipeline", ["FooLoraLoaderMixin"], True),
        ("pipeline_foo", ["FooPipeline"], True),
        ("pipeline_foo", ["FooImg2ImgPipeline"], True),
        ("pipeline_bar", ["BarPipeline"], True),
    ]


def test_one_statement_at_a_time():
    (statement,) = cst.parse_statement('_import_structure["m"].append("Name")\n').body
    (entry,) = lazy_exports(statement)
    assert entry.submodule == "m" and [name for name, _ in entry.names] == ["Name"]
    (statement,) = cst.parse_statement('other["m"].append("Name")\n').body
    assert lazy_exports(statement) == []


def test_both_rules_read_the_table_with_it():
    assert drb404.lazy_exports is lazy_exports
    assert drb604.package_exports is package_exports
