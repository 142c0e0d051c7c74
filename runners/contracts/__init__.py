"""Contract tests (DRCnnn), one pytest mixin per file, each tied to a #13656 pattern; `all_contracts()` finds them."""

from __future__ import annotations

import importlib
import pkgutil


def all_contracts() -> list[type]:
    """Every contract mixin of this package, by code."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("drc"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and getattr(value, "code", "").startswith("DRC")
                and value.__module__ == module.__name__
            ):
                found.append(value)
    return sorted(found, key=lambda c: c.code)


def test_method(contract: type):
    """The contract's one `test_drcNNN_*` method."""
    (name,) = [n for n in vars(contract) if n.startswith("test_drc")]
    return name
