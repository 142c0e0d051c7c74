"""DRB905: a loop appends an index suffix to the path it made on the previous pass (`dir`, `dir_1`, `dir_1_2`)."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, target_names


#: parts of a variable name that say it holds a path or a directory
PATH_WORDS = ("path", "dir", "folder", "file", "location")
#: a suffix starts with one of these separators (`_1`, `-1`, `.1`)
SEPARATORS = ("_", "-", ".")


def _starts_with_separator(string: cst.SimpleString) -> bool:
    value = string.evaluated_value
    return isinstance(value, str) and value.startswith(SEPARATORS)


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _loop_varying(loop: cst.For | cst.While) -> set[str]:
    """Names that change from one pass of `loop` to the next: its target and the names bound in its body."""
    names: set[str] = set(target_names(loop.target)) if isinstance(loop, cst.For) else set()
    for assign in walk.nodes(loop.body, cst.Assign):
        for target in assign.targets:
            names.update(target_names(target.target))
    for augmented in walk.nodes(loop.body, cst.AugAssign):
        names.update(target_names(augmented.target))
    for inner in walk.nodes(loop.body, cst.For):
        names.update(target_names(inner.target))
    return names


def _suffix(value: cst.BaseExpression) -> cst.BaseExpression | None:
    """The suffix of `<name> + <suffix>`: an f-string that starts with a separator (`f"_{idx}"`), or a separator
    string concatenated with a value (`"_" + str(idx)`)."""
    if isinstance(value, cst.FormattedString):
        first = value.parts[0] if value.parts else None
        if isinstance(first, cst.FormattedStringText) and first.value.startswith(SEPARATORS):
            return value
        return None
    if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Add):
        head = value.left
        while isinstance(head, cst.BinaryOperation) and isinstance(head.operator, cst.Add):
            head = head.left
        if isinstance(head, cst.SimpleString) and _starts_with_separator(head):
            return value
    return None


def _self_append(node: cst.CSTNode) -> tuple[str, cst.BaseExpression] | None:
    """(name, suffix) of `name = name + suffix` or `name += suffix`."""
    if isinstance(node, cst.AugAssign) and isinstance(node.operator, cst.AddAssign):
        if isinstance(node.target, cst.Name):
            suffix = _suffix(node.value)
            return (node.target.value, suffix) if suffix is not None else None
    if isinstance(node, cst.Assign) and len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
        name = node.targets[0].target.value
        value = node.value
        if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Add):
            if isinstance(value.left, cst.Name) and value.left.value == name:
                suffix = _suffix(value.right)
                return (name, suffix) if suffix is not None else None
            # `name = name + "_" + str(idx)` parses as `(name + "_") + str(idx)`
            left = value.left
            if (
                isinstance(left, cst.BinaryOperation)
                and isinstance(left.operator, cst.Add)
                and isinstance(left.left, cst.Name)
                and left.left.value == name
                and isinstance(left.right, cst.SimpleString)
                and _starts_with_separator(left.right)
            ):
                return name, cst.BinaryOperation(left=left.right, operator=cst.Add(), right=value.right)
    return None


class PathSuffixAccumulatedInLoop(Rule):
    """
    ## What it does
    Checks loops that save or load one item per pass under a path variable (`model_path_to_save`,
    `save_dir`, `file_path`) and give each next item its path by appending an index suffix to that variable
    itself (`model_path_to_save = model_path_to_save + f"_{idx}"`, `path += f"_{i}"`) instead of to the base.

    ## Why is this bad?
    The suffixes pile up: the items land in `dir`, `dir_1`, `dir_1_2`, `dir_1_2_3`, while the matching loader
    looks for `dir`, `dir_1`, `dir_2`. With two items both sides agree, so tests pass; from the third item on
    what was saved cannot be loaded back (`MultiControlNetModel`, `MultiAdapter` with three or more models),
    or it silently loads fewer items than were saved.

    ## Example
    ```python
    idx = 0
    model_path_to_save = save_directory
    for controlnet in self.nets:
        controlnet.save_pretrained(model_path_to_save)
        idx += 1
        model_path_to_save = model_path_to_save + f"_{idx}"
    ```

    Use instead:
    ```python
    for idx, controlnet in enumerate(self.nets):
        suffix = "" if idx == 0 else f"_{idx}"
        controlnet.save_pretrained(save_directory + suffix)
    ```

    ## Known problems
    Only a variable that the loop passes to a `save_*`/`load_*`/`*_pretrained` call, or whose name mentions a
    path, directory, folder or file and that the loop passes to some call, is checked (a name the loop only
    tests, `while os.path.exists(path)`, stays silent), and only a suffix that starts with `_`, `-` or `.`
    and carries a value that changes from pass to pass (the loop variable or a counter bumped in the loop).
    A suffix meant to nest (`os.path.join(path, name)`) is not an append and stays silent.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#7821 (`MultiControlNetModel.save_pretrained` saved to `dir_1_2`, fixed in 0.28.0)
    """

    code = "DRB905"
    pattern = 9
    severity = "error"
    message = (
        "`{name}` gets `{suffix}` appended to its own previous value on every pass of the loop, so the suffixes "
        "pile up (`dir`, `dir_1`, `dir_1_2`) while a loader expects `dir_2`; build each path from the base "
        "(`{base} + {suffix}`)."
    )
    REQUIRES_ANY = ('f"_', "f'_", '"_"', "'_'", 'f"-', "f'-")

    VALID = [
        # each path is derived from the base
        Valid(
            """
            class MultiThing(ModelMixin):
                def save_pretrained(self, save_directory):
                    for idx, net in enumerate(self.nets):
                        suffix = "" if idx == 0 else f"_{idx}"
                        net.save_pretrained(save_directory + suffix)

                @classmethod
                def from_pretrained(cls, pretrained_model_path):
                    idx = 0
                    model_path_to_load = pretrained_model_path
                    while os.path.isdir(model_path_to_load):
                        nets.append(Net.from_pretrained(model_path_to_load))
                        idx += 1
                        model_path_to_load = pretrained_model_path + f"_{idx}"
            """,
            path="diffusers/models/example.py",
        ),
        # building text, not a path; a constant suffix; a path only tested, never used per pass
        Valid(
            """
            def describe(items, out_path):
                text = ""
                for i, item in enumerate(items):
                    text += f"_{i}: {item}"
                for item in items:
                    out_path = out_path + "_done"
                count = 0
                while os.path.exists(out_path):
                    count += 1
                    out_path = out_path + f"_{count}"
                return text, out_path
            """,
            path="diffusers/utils/example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MultiThing(ModelMixin):
                def save_pretrained(self, save_directory, safe_serialization=True):
                    idx = 0
                    model_path_to_save = save_directory
                    for net in self.nets:
                        net.save_pretrained(model_path_to_save, safe_serialization=safe_serialization)
                        idx += 1
                        model_path_to_save = model_path_to_save + f"_{idx}"
            """,
            message=(
                '`model_path_to_save` gets `f"_{idx}"` appended to its own previous value on every pass of the loop, '
                "so the suffixes pile up (`dir`, `dir_1`, `dir_1_2`) while a loader expects `dir_2`; build each path "
                'from the base (`save_directory + f"_{idx}"`).'
            ),
            path="diffusers/models/example.py",
        ),
        # augmented assignment, a string concatenation, a name that does not say "path" but is saved to
        Invalid(
            """
            def save_all(models, target):
                for i, model in enumerate(models):
                    model.save_pretrained(target)
                    target += "_" + str(i + 1)
            """,
            path="diffusers/utils/example.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            loops: list[cst.For | cst.While] = [
                *walk.own_nodes(function, cst.For),
                *walk.own_nodes(function, cst.While),
            ]
            reported: set[str] = set()
            for loop in loops:
                varying = _loop_varying(loop)
                for node in [*walk.nodes(loop.body, cst.Assign), *walk.nodes(loop.body, cst.AugAssign)]:
                    found = _self_append(node)
                    if found is None:
                        continue
                    name, suffix = found
                    if name in reported:
                        continue
                    if not {n.value for n in walk.nodes(suffix, cst.Name)} & varying:
                        continue  # a constant suffix: the same text each pass, another question
                    if not _saved_under(loop, name) and not (
                        any(word in name.lower() for word in PATH_WORDS) and _passed_in(loop, name)
                    ):
                        continue  # a name only tested (`while os.path.exists(path)`) names no item per pass
                    reported.add(name)
                    base = _base(function, loop, name)
                    message = self.message.format(name=name, suffix=_code(suffix), base=base)
                    self.report(node, message, symbol=name, scope=definition.qualname)


def _saved_under(loop: cst.For | cst.While, name: str) -> bool:
    """Whether the loop passes `name` to a `save_*` / `*_pretrained` / `load_*` call."""
    for call in walk.nodes(loop.body, cst.Call):
        method = (call_name(call) or "").rpartition(".")[2]
        if not (method.startswith(("save", "load")) or method.endswith("pretrained")):
            continue
        if any(isinstance(arg.value, cst.Name) and arg.value.value == name for arg in call.args):
            return True
    return False


def _passed_in(loop: cst.For | cst.While, name: str) -> bool:
    """Whether the loop body passes `name` to some call: each pass uses the path it holds then."""
    return any(
        isinstance(arg.value, cst.Name) and arg.value.value == name
        for call in walk.nodes(loop.body, cst.Call)
        for arg in call.args
    )


def _base(function: cst.FunctionDef, loop: cst.For | cst.While, name: str) -> str:
    """What `name` starts from before the loop (`model_path_to_save = save_directory`), else the name itself."""
    loop_span = walk.span(loop)
    base = name
    for assign in walk.own_nodes(function, cst.Assign):
        assign_span = walk.span(assign)
        if loop_span is None or assign_span is None or assign_span[0] >= loop_span[0] or len(assign.targets) != 1:
            continue
        target = assign.targets[0].target
        if (
            isinstance(target, cst.Name)
            and target.value == name
            and isinstance(assign.value, (cst.Name, cst.Attribute))
        ):
            base = _code(assign.value)
    return base
