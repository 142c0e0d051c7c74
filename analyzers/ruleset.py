"""The rule set: every rule class under `analyzers.rules`, found without registration, and the ruff-style
selection of some of them (`--select DRB2,P6 --ignore DRB204`)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Sequence

from analyzers.rule import Rule


def all_rules() -> list[type[Rule]]:
    """Every rule class under `analyzers.rules`, by code; nothing to register."""
    import analyzers.rules as package

    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        importlib.import_module(info.name)
    found: dict[str, type[Rule]] = {}
    stack = list(Rule.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        module = sys.modules.get(cls.__module__)
        # only the class its module exports: not abstract bases, not re-executed copies (mutation tests)
        if (
            not cls.__dict__.get("abstract", False)
            and cls.__module__.startswith(package.__name__ + ".")
            and getattr(module, cls.__name__, None) is cls
        ):
            found[cls.code] = cls
    return [found[code] for code in sorted(found)]


def select_rules(
    rules: Sequence[type[Rule]], select: Sequence[str] = (), ignore: Sequence[str] = ()
) -> list[type[Rule]]:
    """Filter rules by code prefix (`DRB2`, `DRB201`) or pattern (`P1`), ruff-style."""

    def matches(rule: type[Rule], selector: str) -> bool:
        selector = selector.strip().upper()
        if selector in ("ALL", ""):
            return True
        if selector.startswith("P") and selector[1:].isdigit():
            return rule.pattern == int(selector[1:])
        return rule.code.startswith(selector)

    chosen = [r for r in rules if not select or any(matches(r, s) for s in select)]
    return [r for r in chosen if not any(matches(r, s) for s in ignore)]
