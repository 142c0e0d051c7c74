"""DRB706: a divisibility check whose error message names another divisor than the one it tests."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


#: "divisible by 8", "multiple of 16", "a factor of 32" in a message
_CLAIM = re.compile(r"(?:divisible by|multiples? of|a factor of)\s+(\d+)\b", re.IGNORECASE)


def _literal_divisors(test: cst.BaseExpression) -> set[int] | None:
    """The integer divisors of every `x % N != 0` (or `x % N`) in the test; None when a divisor is not a literal."""
    divisors: set[int] = set()
    for operation in walk.nodes(test, cst.BinaryOperation):
        if not isinstance(operation.operator, cst.Modulo):
            continue
        right = operation.right
        if not isinstance(right, cst.Integer) or not isinstance(right.evaluated_value, int):
            return None
        divisors.add(right.evaluated_value)
    return divisors


def _message_text(node: cst.CSTNode) -> str:
    """The literal text of the strings under `node` (f-string literal parts included), joined."""
    parts: list[str] = []
    for string in walk.nodes(node, cst.SimpleString):
        value = string.evaluated_value
        parts.append(value if isinstance(value, str) else "")
    for fstring in walk.nodes(node, cst.FormattedString):
        parts.extend(p.value for p in fstring.parts if isinstance(p, cst.FormattedStringText))
    return " ".join(parts)


class SizeCheckMessageWrongDivisor(Rule):
    """
    ## What it does
    Checks for an `if` that tests divisibility by integer literals (`height % 16 != 0`) and raises an error
    whose message claims another divisor ("have to be divisible by 8").

    ## Why is this bad?
    The message is the only guidance the user gets. Following it (a size divisible by 8) fails the same
    check again; the validation and its explanation disagree, usually because the test was updated for a
    new model and the message was copied from a neighbouring pipeline.

    ## Example
    ```python
    if height % 16 != 0 or width % 16 != 0:
        raise ValueError(f"`height` and `width` have to be divisible by 8 but are {height} and {width}.")
    ```

    Use instead:
    ```python
    if height % 16 != 0 or width % 16 != 0:
        raise ValueError(f"`height` and `width` have to be divisible by 16 but are {height} and {width}.")
    ```

    ## Known problems
    Only literal divisors on both sides are compared ("divisible by", "multiple of", "a factor of"); a test
    written with `self.vae_scale_factor` is not checked against its message.

    ## References
    - huggingface/diffusers#13656, pattern 7
    - huggingface/diffusers#10684 (HunyuanVideo checked `% 16` and said "divisible by 8")
    """

    code = "DRB706"
    pattern = 7
    severity = "warning"
    message = (
        "this check requires divisibility by {tested} but its error message says {claimed}; make the message "
        "state the divisor the check tests."
    )
    REQUIRES_ANY = ("divisible by", "multiple of", "factor of")

    VALID = [
        Valid(
            """
            def check_inputs(height, width, num_frames):
                if height % 16 != 0 or width % 16 != 0:
                    raise ValueError(f"`height` and `width` have to be divisible by 16 but are {height} and {width}.")
                if num_frames % 4 != 1:
                    raise ValueError("`num_frames - 1` must be a multiple of 4")
                if height % self.vae_scale_factor != 0:
                    raise ValueError("`height` has to be divisible by 8")
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class VideoPipeline(DiffusionPipeline):
                def check_inputs(self, prompt, height, width):
                    if height % 16 != 0 or width % 16 != 0:
                        raise ValueError(f"`height` and `width` have to be divisible by 8 but are {height} and {width}.")
            """,
            message=(
                "this check requires divisibility by 16 but its error message says 8; make the message state the "
                "divisor the check tests."
            ),
        ),
    ]

    def check(self) -> None:
        for statement in walk.nodes(self.context.module, cst.If):
            divisors = _literal_divisors(statement.test)
            if not divisors:
                continue
            # only the raises of this block, not of `if`s nested in it (they check something else)
            raises = [
                small
                for line in statement.body.body
                if isinstance(line, cst.SimpleStatementLine)
                for small in line.body
                if isinstance(small, cst.Raise)
            ]
            if isinstance(statement.body, cst.SimpleStatementSuite):
                raises = [small for small in statement.body.body if isinstance(small, cst.Raise)]
            for raised in raises:
                if raised.exc is None:
                    continue
                claims = {int(n) for n in _CLAIM.findall(_message_text(raised.exc))}
                if claims and not claims & divisors:
                    tested = ", ".join(str(d) for d in sorted(divisors))
                    claimed = ", ".join(str(c) for c in sorted(claims))
                    self.report(
                        raised, self.message.format(tested=tested, claimed=claimed), symbol=f"{tested}/{claimed}"
                    )
                    break
