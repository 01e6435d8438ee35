"""A render worker process: renders templated fields for its coordinator, one
request at a time, so that a runaway template can be killed with the process.

:class:`hydra.coordinator.rendering.RenderPool` starts it as ``python -m
hydra.coordinator.render_worker MEMORY_BYTES`` and talks to it over its stdin and
stdout in frames: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.

- The worker first sends ``{"ready": PID}``.
- A request is ``{"context": ..., "defaults": {...}, "fields": [[path, source,
  with_defaults], ...]}`` (see :func:`encode_request`).
- A text request is ``{"text": [path, source], "variables": {...}}`` (a
  notification's body); it is answered like one field.
- The worker answers each field in turn with ``{"value": TEXT}``, or stops the
  request at the first field that fails with ``{"path": PATH, "error": REASON}``.

It limits its own address space (``RLIMIT_AS``) before importing anything large,
so a memory bomb ends in a MemoryError here, and dies with its coordinator.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import struct
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, BinaryIO

from hydra.coordinator.sandbox import size_text
from hydra.coordinator.templates import (
    RenderContext,
    RenderError,
    TemplatedField,
    render_fields,
    render_text,
)

_HEADER = struct.Struct(">I")
#: Bytes of a frame's header.
HEADER_BYTES = _HEADER.size


def frame(message: Any) -> bytes:
    """One message, framed."""
    body = json.dumps(message).encode("ascii")  # escapes all but ASCII, lone surrogates too
    return _HEADER.pack(len(body)) + body


def body_size(header: bytes) -> int:
    """The body length a frame header announces."""
    return int(_HEADER.unpack(header)[0])


def main(argv: Sequence[str]) -> int:
    """Serve render requests on stdin until it closes."""
    memory_limit = int(argv[1])
    _limit_memory(memory_limit)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the coordinator, which stops us
    # Answers go to a private copy of stdout; anything printed goes to stderr.
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    answers.write(frame({"ready": os.getpid()}))
    while (request := _read(sys.stdin.buffer)) is not None:
        _serve(request, answers, memory_limit)
    return 0


def _serve(request: dict[str, Any], answers: BinaryIO, memory_limit: int) -> None:
    if "text" in request:
        _serve_text(request, answers, memory_limit)
        return
    fields = [TemplatedField(*item) for item in request["fields"]]
    context = decode_context(request["context"])
    done = 0
    try:
        for value in render_fields(fields, context, request["defaults"]):
            answers.write(frame({"value": value}))
            done += 1
    except RenderError as error:
        answers.write(frame({"path": error.path, "error": error.reason}))
    except MemoryError:
        reason = f"rendering exceeded its memory limit of {size_text(memory_limit)}"
        answers.write(frame({"path": fields[done].path, "error": reason}))


def _serve_text(request: dict[str, Any], answers: BinaryIO, memory_limit: int) -> None:
    path, source = request["text"]
    try:
        answers.write(frame({"value": render_text(source, request["variables"], path)}))
    except RenderError as error:
        answers.write(frame({"path": error.path, "error": error.reason}))
    except MemoryError:
        reason = f"rendering exceeded its memory limit of {size_text(memory_limit)}"
        answers.write(frame({"path": path, "error": reason}))


def encode_context(context: RenderContext) -> dict[str, Any]:
    """A RenderContext as JSON."""
    return {
        "task_name": context.task_name,
        "occurrence": context.occurrence.isoformat(),
        "timezone": context.timezone,
        "params": dict(context.params),
        "run_id": context.run_id,
        "attempt": context.attempt,
        "upstream": {name: dict(outputs) for name, outputs in context.upstream.items()},
    }


def decode_context(data: dict[str, Any]) -> RenderContext:
    """The RenderContext of encode_context's JSON."""
    return RenderContext(**(data | {"occurrence": datetime.fromisoformat(data["occurrence"])}))


def _read(stream: BinaryIO) -> Any | None:
    header = stream.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        return None  # the coordinator closed our stdin: stop
    body = stream.read(body_size(header))
    return json.loads(body)


def _limit_memory(limit: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _die_with_parent() -> None:
    """On Linux, be SIGKILLed when the coordinator dies (even by SIGKILL)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
