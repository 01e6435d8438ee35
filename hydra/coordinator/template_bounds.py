"""Apply-time refusal of templates that would go over the sandbox's limits, as far
as it shows in their text: literal ``range(10**10)``, literal ranges nested in
loops past MAX_LOOP_ITERATIONS, ``'x' * 200000000``, ``lipsum(n=100000)``.

Only literal operands are looked at, and evaluating them is bounded the same way
as rendering (:func:`hydra.coordinator.sandbox.checked_binop`): this runs on the
coordinator's event loop. What depends on params or other variables is bounded
when it renders.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import nodes

from hydra.coordinator.sandbox import (
    MAX_FIELD_BYTES,
    MAX_LOOP_ITERATIONS,
    MAX_RANGE,
    LimitExceeded,
    check_lipsum,
    check_repeat_size,
    checked_binop,
    size_text,
)

_OPERATORS: dict[type[nodes.Node], str] = {
    nodes.Add: "+",
    nodes.Sub: "-",
    nodes.Mul: "*",
    nodes.Pow: "**",
    nodes.FloorDiv: "//",
    nodes.Mod: "%",
}
_LIPSUM_ARGUMENTS = ("n", "html", "min", "max")


@dataclass(frozen=True, slots=True)
class _Text:
    """A literal string, by its length only: evaluating never builds it."""

    length: int


def problems(ast: nodes.Template) -> list[str]:
    """What in a parsed template is sure to go over a limit, one message each."""
    evaluator = _Literals()
    for node in ast.find_all(nodes.BinExpr):
        evaluator.value(node)
    for call in ast.find_all(nodes.Call):
        evaluator.check_call(call)
    evaluator.check_loops(ast, 1)
    return list(evaluator.problems)


class _Literals:
    """Values of literal expressions (ints, and strings by length), each node once."""

    def __init__(self) -> None:
        self.problems: dict[str, None] = {}  # in order, without repeats
        self._values: dict[int, int | _Text | None] = {}
        self._loop_reported = False

    def value(self, node: nodes.Node) -> int | _Text | None:
        """The node's literal value, or None if it is not literal (or over a limit)."""
        key = id(node)
        if key not in self._values:
            self._values[key] = self._evaluate(node)
        return self._values[key]

    def _evaluate(self, node: nodes.Node) -> int | _Text | None:
        if isinstance(node, nodes.Const):
            if isinstance(node.value, str):
                return _Text(len(node.value))
            return node.value if type(node.value) is int else None
        if isinstance(node, nodes.Neg | nodes.Pos):
            inner = self.value(node.node)
            if type(inner) is not int:
                return None
            return -inner if isinstance(node, nodes.Neg) else inner
        symbol = _OPERATORS.get(type(node))
        if symbol is None:
            return None
        assert isinstance(node, nodes.BinExpr)
        left, right = self.value(node.left), self.value(node.right)
        if left is None or right is None:
            return None
        try:
            return _operate(symbol, left, right)
        except LimitExceeded as error:
            self.problems[str(error.message)] = None
        except (ArithmeticError, TypeError, ValueError):
            pass  # fails when it renders, with Python's message
        return None

    def check_call(self, call: nodes.Call) -> None:
        """Literal arguments of ``range`` and ``lipsum`` over their limits."""
        if not isinstance(call.node, nodes.Name) or call.dyn_args or call.dyn_kwargs:
            return
        if call.node.name == "range":
            self.range_length(call)
        elif call.node.name == "lipsum":
            named = dict(zip(_LIPSUM_ARGUMENTS, call.args, strict=False))
            named |= {keyword.key: keyword.value for keyword in call.kwargs}
            counts = {name: self.value(node) for name, node in named.items() if name != "html"}
            try:
                check_lipsum(**counts)
            except LimitExceeded as error:
                self.problems[str(error.message)] = None

    def range_length(self, call: nodes.Call) -> int | None:
        """Items of a literal ``range(...)`` call; None if not literal."""
        if not isinstance(call.node, nodes.Name) or call.node.name != "range" or call.kwargs:
            return None
        arguments = [self.value(argument) for argument in call.args]
        if not 1 <= len(arguments) <= 3 or not all(type(a) is int for a in arguments):
            return None
        try:
            length = len(range(*arguments))  # type: ignore[arg-type]
        except (ValueError, OverflowError):
            return None
        if length > MAX_RANGE:
            self.problems[f"range() of {length:,} items is over the limit of {MAX_RANGE:,}"] = None
        return length

    def check_loops(self, node: nodes.Node, iterations: int) -> None:
        """Loops over literal ranges nested past MAX_LOOP_ITERATIONS in all."""
        if not isinstance(node, nodes.For):
            for child in node.iter_child_nodes():
                self.check_loops(child, iterations)
            return
        length = self.range_length(node.iter) if isinstance(node.iter, nodes.Call) else None
        inner = iterations * (length or 1)
        if length is not None and length <= MAX_RANGE and inner > MAX_LOOP_ITERATIONS:
            self._report_loops(inner)
        for child in node.body:
            self.check_loops(child, inner)
        for child in node.else_:
            self.check_loops(child, iterations)

    def _report_loops(self, iterations: int) -> None:
        if not self._loop_reported:
            self._loop_reported = True
            message = (
                f"nested loops would run {iterations:,} iterations, over the limit of "
                f"{MAX_LOOP_ITERATIONS:,}"
            )
            self.problems[message] = None


def _operate(symbol: str, left: int | _Text, right: int | _Text) -> int | _Text | None:
    if isinstance(left, int) and isinstance(right, int):
        return int(checked_binop(symbol, left, right))
    if symbol == "+" and isinstance(left, _Text) and isinstance(right, _Text):
        return _text(left.length + right.length)
    if symbol == "*":
        text, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(text, _Text) and isinstance(times, int):
            check_repeat_size(text.length, times, text=True)  # refuses before building
            return _Text(text.length * max(times, 0))
    return None


def _text(length: int) -> _Text:
    if length > MAX_FIELD_BYTES:
        raise LimitExceeded(
            f"would make a string of {length:,} characters; "
            f"a rendered field is at most {size_text(MAX_FIELD_BYTES)}"
        )
    return _Text(length)
