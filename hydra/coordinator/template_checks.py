"""Apply-time checks of a spec's templates: what can be refused before any run
needs it, each problem naming its field (the bounds of literal runaways are in
:mod:`hydra.coordinator.template_bounds`)."""

from __future__ import annotations

import jinja2
from jinja2 import nodes

from hydra.coordinator import template_bounds
from hydra.coordinator.sandbox import undeclared_variables
from hydra.coordinator.templates import (
    _ENV,
    _MAPPING_METHODS,
    _REFERENCES,
    CONTEXT_NAMES,
    _compile,
    syntax_message,
    templated_fields,
)
from hydra.domain import After, TaskSpec
from hydra.errors import FieldProblem, InvalidArgument


def check_templates(spec: TaskSpec) -> None:
    """Refuse templates that cannot render, before any run needs them.

    Checks every templated field (command elements, env values, workdir,
    precondition argv, path and url) for syntax errors, unknown variables,
    params the task does not declare, upstream tasks it does not depend on,
    private attributes and includes.

    Raises:
        InvalidArgument: with one problem per finding, each naming its field.
    """
    declared = frozenset(spec.params)
    upstream = frozenset(
        name for trigger in spec.triggers if isinstance(trigger, After) for name in trigger.tasks
    )
    problems = [
        problem
        for path, source, _ in templated_fields(spec)
        for problem in _check(path, source, declared, upstream)
    ]
    if problems:
        raise InvalidArgument(problems)


def _check(
    path: str, source: str, declared: frozenset[str], upstream: frozenset[str]
) -> list[FieldProblem]:
    """Problems with one templated field."""
    try:
        ast = _ENV.parse(source)
        _compile(source)  # some errors (unknown filters) only show when compiling
        unknown = undeclared_variables(ast)
    except jinja2.TemplateSyntaxError as error:
        return [FieldProblem(path=path, message=syntax_message(error))]
    messages = [f"unknown template variable {name!r}" for name in sorted(unknown - _known_names())]
    if "params" in unknown:  # i.e. the template does not assign it itself
        messages += _params_problems(ast, declared)
    if "upstream" in unknown:
        messages += _upstream_problems(ast, upstream)
    messages += _unsafe_problems(ast)
    messages += template_bounds.problems(ast)
    return [FieldProblem(path=path, message=message) for message in messages]


def _params_problems(ast: nodes.Template, declared: frozenset[str]) -> list[str]:
    """``params.X`` / ``params['X']`` where the task declares no param X."""
    declares = f"the task declares {', '.join(sorted(declared))}" if declared else "none declared"
    return [
        f"unknown param {name!r} ({declares})"
        for name in _keys_of(ast, "params")
        if name not in declared and name not in _MAPPING_METHODS
    ]


def _upstream_problems(ast: nodes.Template, upstream: frozenset[str]) -> list[str]:
    """``upstream['t']`` where t is not named in an ``after`` trigger."""
    return [
        f"{name!r} is not an upstream task (not named in an 'after' trigger)"
        for name in _keys_of(ast, "upstream")
        if name not in upstream and name not in _MAPPING_METHODS
    ]


def _unsafe_problems(ast: nodes.Template) -> list[str]:
    messages = [
        f"access to attribute {node.attr!r} is not allowed"
        for node in ast.find_all(nodes.Getattr)
        if node.attr.startswith("_")
    ]
    if any(True for _ in ast.find_all(_REFERENCES)):
        messages.append("include, import and extends are not available")
    return messages


def _keys_of(ast: nodes.Template, variable: str) -> list[str]:
    """Constant keys read from a top-level variable, in order, without repeats."""
    keys: dict[str, None] = {}  # a dict keeps the order of first use
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        key = _constant_key(node)
        target = getattr(node, "node", None)
        if key is not None and isinstance(target, nodes.Name) and target.name == variable:
            keys[key] = None
    return list(keys)


def _constant_key(node: nodes.Node) -> str | None:
    """The key of ``x.key`` or ``x['key']``; None when computed at render time."""
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return node.arg.value if isinstance(node.arg.value, str) else None
    return None


def _known_names() -> frozenset[str]:
    return CONTEXT_NAMES | frozenset(_ENV.globals)
