"""Computed arguments: a task's templated fields rendered for one run.

Templates are Jinja2 in a sandbox with strict undefined. They see these
variables, all computed from the run, never from the wall clock:

===================  =============================================================
``occurrence``       the run's occurrence, an aware datetime in the task's zone
                     (the zone of its first cron trigger, else UTC)
``ds``               its local date, ``2026-03-08``
``ds_nodash``        ``20260308``
``ts``               ISO 8601 local time with offset, ``2026-03-08T03:00:00-04:00``
                     (microseconds only when the occurrence has them: manual runs)
``ts_nodash``        local time to the second, no offset: ``20260308T030000``
``params``           the run's params (task defaults, overridden by the run)
``run.id``           the run's id
``attempt``          the attempt number, from 1
``task.name``        the task's name
``upstream['t']``    ``.outputs``: the JSON outputs of upstream task ``t`` for the
                     same occurrence (only tasks named in an ``after`` trigger)
===================  =============================================================

``params.NAME`` reads a param; use ``params['NAME']`` for names that are not
identifiers or that are also dict methods (``keys``, ``items``, ``get`` ...).
Each command element is rendered on its own: rendering never splits or joins
elements.

Rendering is bounded (:mod:`hydra.coordinator.sandbox`: operators, ``range``,
``lipsum`` and the size of every rendered field); a template that only outputs
variables renders here, anything else in a worker process that a time limit can
kill (:mod:`hydra.coordinator.rendering`, decided by :func:`needs_worker`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple

import jinja2
from jinja2 import nodes

from hydra.coordinator.sandbox import (
    MAX_FIELD_BYTES,
    MAX_RENDERED_BYTES,
    BoundedSandbox,
    size_text,
    too_large_message,
)
from hydra.coordinator.schedule import zone_info
from hydra.domain import CommandCheck, FileCheck, HttpCheck, Precondition, TaskSpec
from hydra.errors import HydraError

_EMPTY: Mapping[str, Any] = MappingProxyType({})
#: The top-level names a template may use.
CONTEXT_NAMES = frozenset(
    {
        "occurrence",
        "ds",
        "ds_nodash",
        "ts",
        "ts_nodash",
        "params",
        "run",
        "attempt",
        "task",
        "upstream",
    }
)
# Methods of a dict, which ``params.NAME`` finds before a param NAME.
_MAPPING_METHODS = frozenset(name for name in dir(dict) if not name.startswith("_"))
_REFERENCES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


class RenderError(HydraError):
    """A template could not be rendered."""

    status_code_name = "INVALID_ARGUMENT"

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True, kw_only=True, slots=True)
class RenderContext:
    """What a run's templates are rendered against.

    Attributes:
        task_name: The task's name.
        occurrence: The run's occurrence, aware (normally UTC).
        timezone: IANA zone the template sees it in: the first cron trigger's
            (``TaskSpec.timezone``), else UTC.
        params: The run's params; :func:`render_command` lays them over the
            task's defaults, :func:`render_string` uses them as they are.
        run_id: The run's id.
        attempt: The attempt number, from 1.
        upstream: Upstream task name to its outputs for the same occurrence.
    """

    task_name: str
    occurrence: datetime
    timezone: str
    params: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    run_id: str
    attempt: int
    upstream: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        if self.occurrence.tzinfo is None or self.occurrence.utcoffset() is None:
            raise ValueError(f"occurrence must be aware, not {self.occurrence!r}")
        zone_info(self.timezone)


@dataclass(frozen=True, kw_only=True, slots=True)
class Rendered:
    """A command ready to run."""

    argv: tuple[str, ...]
    env: dict[str, str]
    workdir: str


@dataclass(frozen=True, kw_only=True, slots=True)
class RenderedRun:
    """Everything of a run that is rendered: its command and its preconditions."""

    command: Rendered
    preconditions: list[Precondition]


class TemplatedField(NamedTuple):
    """One templated field of a spec."""

    path: str  # as hydra.spec names it: ``command[1]``, ``env.DAY``, ``preconditions[0].file``
    source: str
    #: Rendered with the task's default params under the run's (command, env and
    #: workdir); preconditions see the run's params as they are.
    with_defaults: bool


# --- the environment --------------------------------------------------------------


class _Namespace(dict[str, Any]):
    """A dict that names itself when a template asks it for a missing key."""

    __slots__ = ("_label",)  # underscored: out of the sandbox's reach

    def __init__(self, items: Mapping[str, Any], label: str) -> None:
        super().__init__(items)
        self._label = label


class _StrictUndefined(jinja2.StrictUndefined):
    """StrictUndefined whose message names our variables: ``'params' has no attribute 'x'``."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        owner, name = self._undefined_obj, self._undefined_name
        if self._undefined_hint is None and isinstance(owner, _Namespace):
            return f"{owner._label!r} has no attribute {name!r}"
        return super()._undefined_message


# Immutable: a template must not change what the next field sees.
_ENV = BoundedSandbox(undefined=_StrictUndefined, autoescape=False, keep_trailing_newline=True)
#: What a template that needs no worker may consist of: output of variable lookups.
_INLINE_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Const,
)


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def needs_rendering(source: str) -> bool:
    """Whether a field has template syntax at all (else it is its own value)."""
    return "{" in source or "\r" in source  # Jinja normalises newlines


@functools.lru_cache(maxsize=4096)
def needs_worker(source: str) -> bool:
    """Whether rendering ``source`` may cost more than its inputs: anything but the
    output of variable lookups (``{{ ds }}``, ``{{ params.x }}``) renders in a worker
    process under the time limit. A syntax error renders (and fails) here."""
    if not needs_rendering(source):
        return False
    try:
        ast = _ENV.parse(source)
    except jinja2.TemplateSyntaxError:
        return False
    return not all(isinstance(node, _INLINE_NODES) for node in _walk(ast))


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


# --- rendering ------------------------------------------------------------------


def render_run(
    spec: TaskSpec, ctx: RenderContext, rendered: Mapping[str, str] = _EMPTY
) -> RenderedRun:
    """Render a run's command, env, workdir and preconditions, within the size limits.

    Args:
        spec: The task's spec.
        ctx: The run.
        rendered: Fields already rendered elsewhere (by a worker), by path.

    Raises:
        RenderError: naming the field, or the total size over MAX_RENDERED_BYTES.
    """
    result = RenderedRun(
        command=render_command(spec, ctx, rendered),
        preconditions=render_preconditions(spec, ctx, rendered),
    )
    _check_total(result)
    return result


def render_command(
    spec: TaskSpec, ctx: RenderContext, rendered: Mapping[str, str] = _EMPTY
) -> Rendered:
    """Render a task's command, env and workdir for one attempt.

    Each command element renders on its own; with ``shell`` the single element
    becomes ``/bin/sh -c <element>``. Fields in ``rendered`` (by path) are taken as
    they are.

    Raises:
        RenderError: naming the field, e.g. ``command[2]: 'params' has no attribute 'region'``.
    """
    render = _field_renderer(ctx, {**spec.params, **ctx.params}, rendered)
    argv = tuple(render(source, f"command[{index}]") for index, source in enumerate(spec.command))
    if spec.shell:
        if len(argv) != 1:
            raise RenderError("command", "with shell: true, command must be one element")
        argv = ("/bin/sh", "-c", argv[0])
    env = {key: render(value, f"env.{key}") for key, value in spec.plain_env.items()}
    workdir = render(spec.workdir, "workdir")
    return Rendered(argv=argv, env=env, workdir=workdir)


def _field_renderer(
    ctx: RenderContext, params: Mapping[str, str], rendered: Mapping[str, str]
) -> Callable[[str, str], str]:
    """render(source, path) for the fields of one run: taken from ``rendered`` if there,
    else rendered here, the variables computed once, when a field first needs them."""
    variables: dict[str, Any] = {}

    def render(source: str, path: str) -> str:
        value = rendered.get(path)
        if value is not None:
            return value
        if "{" not in source and "\r" not in source:  # needs_rendering, inline: the hot path
            return source
        if not variables:
            variables.update(_variables(ctx, params))
        return _render(source, variables, path)

    return render


def render_string(source: str, ctx: RenderContext, path: str) -> str:
    """Render one templated field (e.g. a precondition's path) against ``ctx``.

    Raises:
        RenderError: naming ``path``.
    """
    return _render(source, _variables(ctx, ctx.params), path)


def render_text(source: str, variables: Mapping[str, Any], path: str) -> str:
    """Render one template over plain JSON values (a notification's body), within
    the sandbox and the size limit of one field.

    Raises:
        RenderError: naming ``path``.
    """
    return _render(source, variables, path)


def render_fields(
    fields: Iterable[TemplatedField], ctx: RenderContext, defaults: Mapping[str, str]
) -> Iterator[str]:
    """Render fields one by one (what a render worker does), each with its params.

    Raises:
        RenderError: naming the field that failed; the fields before it were yielded.
    """
    with_defaults = _variables(ctx, {**defaults, **ctx.params})
    as_given = _variables(ctx, ctx.params)
    for path, source, defaulted in fields:
        yield _render(source, with_defaults if defaulted else as_given, path)


def _variables(ctx: RenderContext, params: Mapping[str, str]) -> dict[str, Any]:
    local = ctx.occurrence.astimezone(zone_info(ctx.timezone))
    upstream = {
        name: _Namespace(
            {"outputs": _Namespace(outputs, f"upstream[{name!r}].outputs")}, f"upstream[{name!r}]"
        )
        for name, outputs in ctx.upstream.items()
    }
    return {
        "occurrence": local,
        "ds": f"{local:%Y-%m-%d}",
        "ds_nodash": f"{local:%Y%m%d}",
        "ts": local.isoformat(),
        "ts_nodash": f"{local:%Y%m%dT%H%M%S}",
        "params": _Namespace(params, "params"),
        "run": _Namespace({"id": ctx.run_id}, "run"),
        "attempt": ctx.attempt,
        "task": _Namespace({"name": ctx.task_name}, "task"),
        "upstream": _Namespace(upstream, "upstream"),
    }


def _render(source: str, variables: Mapping[str, Any], path: str) -> str:
    if "{" not in source and "\r" not in source:
        return source  # no template syntax: Jinja would give it back unchanged
    try:
        value = _compile(source).render(variables)
    except jinja2.TemplateSyntaxError as error:
        raise RenderError(path, syntax_message(error)) from error
    except jinja2.TemplateError as error:  # undefined names, sandbox violations, limits
        raise RenderError(path, error.message or type(error).__name__) from error
    except MemoryError:
        raise  # a render worker names its memory limit
    except Exception as error:  # whatever a method called by the template raised
        raise RenderError(path, f"{type(error).__name__}: {error}") from error
    if len(value) * 4 > MAX_FIELD_BYTES:  # else short enough whatever it holds: no encoding
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_FIELD_BYTES:
            raise RenderError(path, too_large_message(size))
    return value


def _check_total(run: RenderedRun) -> None:
    command = run.command
    texts = [*command.argv, *command.env, *command.env.values(), command.workdir]
    for check in run.preconditions:
        texts += _check_texts(check)
    if sum(map(len, texts)) * 4 <= MAX_RENDERED_BYTES:
        return  # short enough whatever the texts hold: no encoding
    total = sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)
    if total > MAX_RENDERED_BYTES:
        raise RenderError(
            "command, env, workdir and preconditions",
            f"rendered to {total:,} bytes together; at most {size_text(MAX_RENDERED_BYTES)}",
        )


def _check_texts(check: Precondition) -> tuple[str, ...]:
    match check:
        case CommandCheck():
            return check.argv
        case FileCheck():
            return (check.path,)
        case HttpCheck():
            return (check.url,)
        case _:
            return ()


def templated_fields(spec: TaskSpec) -> Iterator[TemplatedField]:
    """Every templated field of a spec; paths use the YAML names, as hydra.spec."""
    for index, element in enumerate(spec.command):
        yield TemplatedField(f"command[{index}]", element, True)
    for key, value in spec.plain_env.items():  # secret references are not templates
        yield TemplatedField(f"env.{key}", value, True)
    yield TemplatedField("workdir", spec.workdir, True)
    for index, check in enumerate(spec.preconditions):
        prefix = f"preconditions[{index}]"
        if isinstance(check, CommandCheck):
            for position, element in enumerate(check.argv):
                yield TemplatedField(f"{prefix}.command[{position}]", element, False)
        elif isinstance(check, FileCheck):
            yield TemplatedField(f"{prefix}.file", check.path, False)
        elif isinstance(check, HttpCheck):
            yield TemplatedField(f"{prefix}.http", check.url, False)


def render_preconditions(
    spec: TaskSpec, context: RenderContext, rendered: Mapping[str, str] = _EMPTY
) -> list[Precondition]:
    """The spec's preconditions with their templated fields rendered for one run
    (those in ``rendered``, by path, taken as they are)."""
    if not spec.preconditions:
        return []
    render = _field_renderer(context, context.params, rendered)
    return [
        _render_check(check, render, f"preconditions[{i}]")
        for i, check in enumerate(spec.preconditions)
    ]


def _render_check(
    check: Precondition, render: Callable[[str, str], str], path: str
) -> Precondition:
    match check:
        case CommandCheck():
            argv = tuple(render(arg, f"{path}.command[{i}]") for i, arg in enumerate(check.argv))
            return replace(check, argv=argv)
        case FileCheck():
            return replace(check, path=render(check.path, f"{path}.file"))
        case HttpCheck():
            return replace(check, url=render(check.url, f"{path}.http"))
        case _:
            return check


def syntax_message(error: jinja2.TemplateSyntaxError) -> str:
    """A template syntax error for people: its line and reason."""
    reason = (error.message or "invalid syntax").rstrip(".")
    return f"template syntax error on line {error.lineno}: {reason}"
