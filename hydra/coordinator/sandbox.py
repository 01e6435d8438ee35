"""The bounded Jinja2 sandbox templates render in, and the limits it enforces.

Jinja's ImmutableSandboxedEnvironment keeps templates away from Python's
internals but not from the CPU or the memory: ``'x' * 200000000`` builds
200 MB, ``lipsum(n=100000)`` takes seconds, and the compiler folds constant
expressions (filters included) at compile time, so even checking such a
template at apply time would evaluate it. This sandbox bounds what an
operator, a global or the output of a template can cost; what it cannot bound
statically (loops, mostly) is bounded in time by running in a worker process
(:mod:`hydra.coordinator.rendering`).

Every limit is here, named, so the coordinator, the render workers and the
apply-time checks agree on one number each.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sized
from datetime import timedelta
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

KIB = 1024
MIB = 1024 * KIB

#: Longest rendered field (one argv element, env value, workdir or precondition
#: field), in UTF-8 bytes.
MAX_FIELD_BYTES = 256 * KIB
#: Longest total of a run's rendered fields (argv, env keys and values, workdir
#: and preconditions together), in UTF-8 bytes: well below the 4 MiB gRPC message
#: limit of coordinator and agent, so a lease offer always fits.
MAX_RENDERED_BYTES = 1 * MIB
#: Items one ``range()`` may have (as Jinja's own sandbox MAX_RANGE).
MAX_RANGE = 100_000
#: Iterations of nested literal ``range`` loops refused at apply time: more would
#: not finish within the render time limit anyway.
MAX_LOOP_ITERATIONS = 1_000_000
#: ``lipsum``: at most this many paragraphs (``n``) ...
MAX_LIPSUM_PARAGRAPHS = 100
#: ... of at most this many words each (``min``, ``max``).
MAX_LIPSUM_WORDS = 100
#: ``a ** b`` on integers may have at most this many bits (about 1,200 digits).
MAX_POWER_BITS = 4096
#: How long one run's templates may take to render, by default (``--render-timeout``).
DEFAULT_RENDER_TIMEOUT = timedelta(seconds=1)
#: Address space of a render worker process: a memory bomb dies there.
WORKER_MEMORY_BYTES = 512 * MIB


def size_text(size: int) -> str:
    """``262144`` -> ``256 KiB``: how limits are named in messages."""
    for unit, name in ((MIB, "MiB"), (KIB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


class LimitExceeded(SecurityError):
    """A template went over one of the sandbox's limits."""


def checked_binop(symbol: str, left: Any, right: Any) -> Any:
    """``left <symbol> right``, refused before it is computed if the result would go
    over a limit. Used by the sandbox at render time and by the apply-time checks.

    Raises:
        LimitExceeded: naming the limit.
    """
    if symbol == "*":
        _check_repeat(left, right)
        return operator.mul(left, right)
    if symbol == "**":
        _check_power(left, right)
        return operator.pow(left, right)
    return BoundedSandbox.default_binop_table[symbol](left, right)


def _check_repeat(left: Any, right: Any) -> None:
    sequence, times = (left, right) if isinstance(right, int) else (right, left)
    if not isinstance(times, int) or isinstance(sequence, int) or not isinstance(sequence, Sized):
        return
    check_repeat_size(len(sequence), times, text=isinstance(sequence, str))


def check_repeat_size(length: int, times: int, *, text: bool) -> None:
    """Refuse ``sequence * times`` whose result would be over MAX_FIELD_BYTES items."""
    size = length * times
    if size > MAX_FIELD_BYTES:
        kind = f"string of {size:,} characters" if text else f"sequence of {size:,} items"
        raise LimitExceeded(
            f"'*' would make a {kind}; a rendered field is at most {size_text(MAX_FIELD_BYTES)}"
        )


def _check_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int)) or abs(base) < 2 or exponent < 0:
        return
    if exponent * (abs(base).bit_length() - 1) > MAX_POWER_BITS:
        raise LimitExceeded(
            f"'**' with exponent {exponent:,} is too large (results are at most "
            f"{MAX_POWER_BITS} bits)"
        )


def bounded_range(*args: int) -> range:
    """``range`` with at most MAX_RANGE items."""
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise LimitExceeded(f"range() of {len(items):,} items is over the limit of {MAX_RANGE:,}")
    return items


def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja's ``lipsum`` with at most MAX_LIPSUM_PARAGRAPHS of MAX_LIPSUM_WORDS words."""
    check_lipsum(n=n, min=min, max=max)
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


def check_lipsum(**counts: Any) -> None:
    """Refuse lipsum arguments over the limits (n: paragraphs, min/max: words)."""
    for name, value in counts.items():
        limit = MAX_LIPSUM_PARAGRAPHS if name == "n" else MAX_LIPSUM_WORDS
        if isinstance(value, int) and value > limit:
            unit = "paragraphs" if name == "n" else "words"
            raise LimitExceeded(f"lipsum: {name}={value:,} is over the limit of {limit} {unit}")


def bounded_concat(chunks: Iterable[str]) -> str:
    """Join a template's output, refusing it as soon as it passes MAX_FIELD_BYTES.

    Counts characters, each at least one UTF-8 byte, so it stops early without
    encoding; the exact byte size is checked on the result.
    """
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_FIELD_BYTES:
            raise LimitExceeded(too_large_message(size, exact=False))
        parts.append(chunk)
    return "".join(parts)


def too_large_message(size: int, *, exact: bool = True) -> str:
    """The message of a rendered field over MAX_FIELD_BYTES."""
    amount = f"{size:,} bytes" if exact else f"more than {MAX_FIELD_BYTES:,} characters"
    return f"rendered to {amount}; a rendered field is at most {size_text(MAX_FIELD_BYTES)}"


class _NoFoldingCodeGenerator(CodeGenerator):
    """Jinja's compiler without constant folding of expressions.

    Folding evaluates ``{{ 'x'|center(100000000) }}`` while compiling, outside any
    time limit (and at apply time, on the coordinator's event loop). Literal text
    and constants are still emitted as they are.
    """

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if not isinstance(node, nodes.TemplateData | nodes.Const):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)


class _TrackingCodeGenerator(meta.TrackingCodeGenerator, _NoFoldingCodeGenerator):
    """Jinja's introspection (``meta.find_undeclared_variables``), which compiles too,
    without constant folding."""

    def __init__(self, environment: jinja2.Environment) -> None:
        super().__init__(environment)
        self.optimizer = None  # it would fold too (``optimized`` is not passed on)


def undeclared_variables(ast: nodes.Template) -> set[str]:
    """The names a parsed template reads but does not set (as Jinja's meta module)."""
    generator = _TrackingCodeGenerator(ast.environment)  # type: ignore[arg-type]
    generator.visit(ast)
    return generator.undeclared_identifiers


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with bounded ``*``, ``**``, ``range``, ``lipsum`` and output."""

    # Intercepted operators are also never folded at compile time (BinExpr.as_const).
    intercepted_binops = frozenset({"*", "**"})
    code_generator_class = _NoFoldingCodeGenerator
    concat = staticmethod(bounded_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(optimized=False, **options)
        self.globals["range"] = bounded_range
        self.globals["lipsum"] = bounded_lipsum

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        return checked_binop(operator, left, right)
