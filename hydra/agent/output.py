"""What an attempt's process produces: its output streams and ``$HYDRA_OUTPUT``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from typing import NoReturn

from hydra.agent.attempt import AttemptSpec, OutputStream

log = logging.getLogger("hydra.agent")

#: A batch is sent once it holds this many bytes ...
MAX_BATCH_BYTES = 32 * 1024
#: ... or once its oldest byte has waited this long, whichever comes first.
MAX_BATCH_DELAY = 0.1
#: Largest ``$HYDRA_OUTPUT`` file accepted.
MAX_OUTPUTS_BYTES = 64 * 1024

#: Receives one batch of one stream.
OutputSink = Callable[[OutputStream, bytes], None]


class OutputBatcher:
    """Collects pipe data and hands it on in batches.

    A batch leaves when it reaches ``max_bytes`` (never bigger) or when its
    oldest byte is ``max_delay`` old, so a chatty process costs a few messages
    a second and a quiet one still shows its lines promptly. Nothing is sent
    before ``release``. Timers run on the event loop; nothing here blocks.
    """

    def __init__(
        self,
        sink: OutputSink,
        *,
        max_bytes: int = MAX_BATCH_BYTES,
        max_delay: float = MAX_BATCH_DELAY,
    ) -> None:
        self._sink = sink
        self._max_bytes = max_bytes
        self._max_delay = max_delay
        self._buffers = {stream: bytearray() for stream in OutputStream}
        self._timer: asyncio.TimerHandle | None = None
        self._held = True

    def release(self) -> None:
        """Starts sending; until then everything is only buffered."""
        self._held = False
        for stream in OutputStream:
            self.add(stream, b"")

    def add(self, stream: OutputStream, data: bytes) -> None:
        """Buffers ``data``; sends full batches at once and arms the timer for the rest."""
        buffer = self._buffers[stream]
        buffer += data
        if self._held:
            return
        while len(buffer) >= self._max_bytes:
            self._sink(stream, bytes(buffer[: self._max_bytes]))
            del buffer[: self._max_bytes]
        if buffer and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_delay, self.flush)

    def flush(self) -> None:
        """Sends whatever is buffered, held or not."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream, buffer in self._buffers.items():
            if buffer:
                self._sink(stream, bytes(buffer))
                buffer.clear()


class OutputsError(ValueError):
    """$HYDRA_OUTPUT is invalid."""


def read_outputs(path: str) -> str:
    """The JSON object a process wrote to ``$HYDRA_OUTPUT``, or "" if it wrote nothing.

    Cheap enough for the event loop: a local file, at most ``MAX_OUTPUTS_BYTES``
    read, and opened so that nothing but a regular file is read (a FIFO put in
    its place cannot block the agent).

    Raises:
        OutputsError: the file is over ``MAX_OUTPUTS_BYTES``, is not a regular
            file, or is not a JSON object (NaN and Infinity are refused too:
            PostgreSQL's jsonb has no place for them).
    """
    try:
        raw = _read_regular_file(path, MAX_OUTPUTS_BYTES + 1)
    except FileNotFoundError:
        return ""
    if len(raw) > MAX_OUTPUTS_BYTES:
        raise OutputsError(f"$HYDRA_OUTPUT: over {MAX_OUTPUTS_BYTES} bytes")
    if not raw.strip():
        return ""
    try:
        text = raw.decode("utf-8").strip()
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:  # UnicodeDecodeError is one too
        raise OutputsError(f"$HYDRA_OUTPUT: not a JSON object ({error})") from None
    if not isinstance(value, dict):
        raise OutputsError(f"$HYDRA_OUTPUT: not a JSON object (got {type(value).__name__})")
    return text


def _read_regular_file(path: str, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``path``; refuses what is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputsError("$HYDRA_OUTPUT: not a regular file")
    with open(fd, "rb") as file:
        return file.read(limit)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


class OutputsDirectory:
    """The agent's private directory of ``$HYDRA_OUTPUT`` files, one per attempt.

    Created on first use (by ``mkdtemp``: mode 0700), in memory when it can
    be (see :func:`memory_backed_tmp`), and removed by :meth:`close`. Every
    operation is a syscall or two on a local file system, so they are made on
    the event loop, not through threads.
    """

    def __init__(self) -> None:
        self._path: str | None = None
        self._closed = False

    @property
    def path(self) -> str | None:
        """The directory, once created."""
        return self._path

    def new_file(self, spec: AttemptSpec) -> str:
        """Creates an empty file for an attempt's ``$HYDRA_OUTPUT``; returns its path.

        Raises:
            OSError: it cannot be created, or the directory was closed.
        """
        name = f"{_file_safe(spec.run_id)}-{spec.attempt}-{secrets.token_hex(4)}.json"
        try:
            return self._create(name)
        except FileNotFoundError:  # the directory was removed under us: make another
            self._path = None
            return self._create(name)

    def remove(self, path: str) -> None:
        """Removes an attempt's file (gone already is fine)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:  # e.g. the process put a directory there
            log.warning("cannot remove %s (%s); it goes when the agent stops", path, error)

    def close(self) -> None:
        """Removes the directory and what is left in it; no file can be created after."""
        self._closed = True
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None

    def _create(self, name: str) -> str:
        if self._closed:
            raise OSError("the agent is stopping: its outputs directory is closed")
        if self._path is None:
            self._path = tempfile.mkdtemp(prefix="hydra-agent-", dir=memory_backed_tmp())
        path = os.path.join(self._path, name)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        return path


def memory_backed_tmp(environ: Mapping[str, str] = os.environ) -> str | None:
    """A writable memory-backed directory for short-lived files, if there is one:
    ``$XDG_RUNTIME_DIR``, else ``/dev/shm``; None for the default temporary
    directory. Creating a file on a disk-backed /tmp can cost a quarter of a
    millisecond (measured on this project's CI machines); on tmpfs, microseconds."""
    for candidate in (environ.get("XDG_RUNTIME_DIR", ""), "/dev/shm"):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


def _file_safe(text: str) -> str:
    """``text`` usable in a file name: other characters become ``_``; at most 64 of them."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64]
