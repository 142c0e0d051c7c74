"""A rule base class for libcst's matcher decorators (`@m.visit`, `@m.leave`, `@m.call_if_inside`)."""

from __future__ import annotations

from typing import ClassVar

import libcst as cst
import libcst.matchers as m

from analyzers.core import FileContext, Rule


_NamesByMatcher = dict[m.BaseMatcherNode, tuple[str, ...]]


class DecoratedRule(Rule, m.MatcherDecoratableVisitor):
    """`Rule` plus libcst's `MatcherDecoratableVisitor`: decorated methods run during the default `check()`.

    libcst gathers decorated methods on every instantiation by scanning `dir(self)` (about 9 ms); here that
    happens once per class, and later instances rebind the gathered methods by name.
    """

    abstract = True
    #: {matcher: names of the methods decorated with it}, for `@m.visit` and for `@m.leave`; set on each class (never
    #: inherited: `__init__` looks in the class's own `__dict__`) by its first instance
    _decorated_names: ClassVar[tuple[_NamesByMatcher, _NamesByMatcher]]

    def __init__(self, context: FileContext) -> None:
        decorated = type(self).__dict__.get("_decorated_names")
        if decorated is None:
            m.MatcherDecoratableVisitor.__init__(self)
            type(self)._decorated_names = (
                {matcher: tuple(f.__name__ for f in funcs) for matcher, funcs in self._extra_visit_funcs.items()},
                {matcher: tuple(f.__name__ for f in funcs) for matcher, funcs in self._extra_leave_funcs.items()},
            )
        else:
            cst.CSTVisitor.__init__(self)
            self._MatcherDecoratableVisitor__matchers = None
            visit, leave = decorated
            self._extra_visit_funcs = {k: tuple(getattr(self, n) for n in names) for k, names in visit.items()}
            self._extra_leave_funcs = {k: tuple(getattr(self, n) for n in names) for k, names in leave.items()}
        self.context = context
        self.reports = []
