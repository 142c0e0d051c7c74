"""Contract tests (DRCnnn), one pytest mixin per file, each tied to a #13656 pattern; `all_contracts()` finds them."""

from __future__ import annotations

import importlib
import pkgutil
from typing import ClassVar, Protocol, cast


class Contract(Protocol):
    """What every contract mixin declares (its test method aside): its DRC code and its #13656 pattern."""

    code: ClassVar[str]
    pattern: ClassVar[int]


def all_contracts() -> list[type[Contract]]:
    """Every contract mixin of this package, by code."""
    found: list[type[Contract]] = []
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
                found.append(cast("type[Contract]", value))
    return sorted(found, key=lambda c: c.code)


def test_method(contract: type):
    """The contract's one `test_drcNNN_*` method."""
    (name,) = [n for n in vars(contract) if n.startswith("test_drc")]
    return name
