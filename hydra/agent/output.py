"""What an attempt's process produces: its output streams and ``$HYDRA_OUTPUT``.

Output reaches the coordinator twice. As it is written, in batches, up to the
head of the attempt's output limit (:func:`hydra.domain.output_budget`); the
first batch that cannot be sent (the stream is backed up or gone) ends this
live part, so what the coordinator holds of each stream is always a prefix of
it. And with the attempt's end: the last bytes of each stream, kept in a ring
as they pass, with the count of bytes written. The coordinator stores what its
head lacks of that tail, and a marker for the bytes in between.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from typing import NoReturn

from hydra.agent.attempt import AttemptSpec, OutputStream, StreamTail
from hydra.domain import OutputBudget

log = logging.getLogger("hydra.agent")

#: A batch is sent once it holds this many bytes ...
MAX_BATCH_BYTES = 32 * 1024
#: ... or once its oldest byte has waited this long, whichever comes first.
MAX_BATCH_DELAY = 0.1
#: Largest ``$HYDRA_OUTPUT`` file accepted.
MAX_OUTPUTS_BYTES = 64 * 1024
#: What an attempt whose ``$HYDRA_OUTPUT`` grew too big is told.
OUTPUTS_EXCEEDED = f"outputs file exceeded {MAX_OUTPUTS_BYTES // 1024} KiB ($HYDRA_OUTPUT)"
#: Name of the ``$HYDRA_OUTPUT`` file in its attempt's directory.
OUTPUTS_FILE_NAME = "outputs.json"

#: Receives one batch of one stream; False if it could not be sent (it is then lost).
OutputSink = Callable[[OutputStream, bytes], bool]


class OutputBatcher:
    """Collects pipe data and hands it on in batches.

    A batch leaves when it reaches ``max_bytes`` (never bigger) or when its
    oldest byte is ``max_delay`` old, so a chatty process costs a few messages
    a second and a quiet one still shows its lines promptly. Nothing is sent
    before ``release``. Timers run on the event loop; nothing here blocks.
    """

    def __init__(
        self,
        sink: Callable[[OutputStream, bytes], object],
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


class OutputRecorder:
    """One attempt's output: sent live up to the head, and the true end of each stream.

    ``add`` takes every batch in order. While the output is live, batches go to
    ``sink`` until the head is used up (the batch that crosses it is cut) or a
    batch could not be sent; nothing is sent live after that. Every byte also
    passes through a ring per stream, so that :meth:`tails` can give the last
    bytes of each stream at the end.
    """

    def __init__(self, sink: OutputSink, budget: OutputBudget) -> None:
        self._sink = sink
        self._budget = budget
        self._rings = {stream: _Ring(budget.tail) for stream in OutputStream}
        self._totals = dict.fromkeys(OutputStream, 0)
        self._sent = 0
        self._live = True

    def add(self, stream: OutputStream, data: bytes) -> None:
        """Records a batch; sends it (or what fits of it) while live."""
        self._totals[stream] += len(data)
        self._rings[stream].add(data)
        if not self._live or not data:
            return
        part = data[: self._budget.head - self._sent]
        if part and self._sink(stream, part):
            self._sent += len(part)
        else:
            self._live = False
        if len(part) < len(data):
            self._live = False

    def stop_live(self) -> None:
        """Sends nothing more live (what was sent may not all have arrived)."""
        self._live = False

    def tails(self) -> tuple[StreamTail, ...]:
        """The end of each stream that had output, within the tail budget together.

        Each stream may use half the budget; what one of them does not need,
        the other may.
        """
        sizes = {stream: min(total, self._budget.tail) for stream, total in self._totals.items()}
        half = self._budget.tail // 2
        shares = {stream: min(size, half) for stream, size in sizes.items()}
        spare = self._budget.tail - sum(shares.values())
        for stream, size in sizes.items():
            extra = min(size - shares[stream], spare)
            shares[stream] += extra
            spare -= extra
        return tuple(
            StreamTail(
                stream=stream, total_bytes=total, data=self._rings[stream].last(shares[stream])
            )
            for stream, total in self._totals.items()
            if total
        )


class _Ring:
    """The last ``size`` bytes (at least) of what was added, as the chunks added."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._chunks: collections.deque[bytes] = collections.deque()
        self._bytes = 0

    def add(self, data: bytes) -> None:
        if not data or self._size <= 0:
            return
        self._chunks.append(data)
        self._bytes += len(data)
        while self._bytes - len(self._chunks[0]) >= self._size:
            self._bytes -= len(self._chunks.popleft())

    def last(self, size: int) -> bytes:
        """The last ``size`` bytes added (fewer if fewer were)."""
        if size <= 0:
            return b""
        return b"".join(self._chunks)[-size:]


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
    except OSError as error:  # ELOOP: a link
        raise OutputsError(f"$HYDRA_OUTPUT: cannot be read ({error.strerror})") from None
    if len(raw) > MAX_OUTPUTS_BYTES:
        raise OutputsError(OUTPUTS_EXCEEDED)
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
    # No link followed: run as another user, the process owns its directory and
    # could put a link to a file of the agent's in the file's place.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputsError("$HYDRA_OUTPUT: not a regular file")
    with open(fd, "rb") as file:
        return file.read(limit)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def outputs_size(path: str) -> int:
    """Bytes in an attempt's ``$HYDRA_OUTPUT`` now (0 if there is none); never follows a link."""
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def discard_outputs(path: str) -> None:
    """Empties an oversized ``$HYDRA_OUTPUT`` at once, giving its memory back.

    Only a regular file is truncated (a link put in its place is left alone: the
    file it names is not the agent's).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


class OutputsDirectory:
    """The agent's directory of ``$HYDRA_OUTPUT`` files: one private directory per attempt.

    The agent's directory is ``hydra-agent-<agent id>.<pid>`` in memory when it
    can be (see :func:`memory_backed_tmp`), created on first use with mode
    0700 and removed by :meth:`close`; each attempt gets a directory of its own
    in it (also 0700), holding its ``outputs.json``, removed with the attempt.
    With an ``owner`` (the user attempts run as, ``--run-as``), each attempt's
    directory and file belong to that user, and the agent's directory is 0711:
    the user can reach the attempt's directory, whose name it is told, but not
    list the others.
    An agent that died leaves its directory behind: :meth:`remove_stale`
    (called when an agent starts) removes those of its own id whose process is
    gone. Every operation is a syscall or two on a local file system, so they
    are made on the event loop, not through threads.
    """

    def __init__(
        self,
        agent_id: str = "agent",
        *,
        base: str | None = None,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self._prefix = f"hydra-agent-{_file_safe(agent_id)}."
        self._base = base
        self._owner = owner
        self._path: str | None = None
        self._closed = False

    @property
    def path(self) -> str | None:
        """The agent's directory, once created."""
        return self._path

    def remove_stale(self) -> list[str]:
        """Removes the directories of earlier processes of this agent id that are gone.

        Returns what was removed. Only directories of this user are touched.
        """
        base = self._base_dir()
        removed = []
        try:
            names = os.listdir(base)
        except OSError:
            return []
        for name in names:
            pid = name.removeprefix(self._prefix)
            if pid == name or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
                continue
            path = os.path.join(base, name)
            if _own_directory(path):
                shutil.rmtree(path, ignore_errors=True)
                log.info("removed %s, left by an agent process that is gone", path)
                removed.append(path)
        return removed

    def new_file(self, spec: AttemptSpec) -> str:
        """Creates an attempt's directory and its empty ``$HYDRA_OUTPUT`` file; its path.

        Raises:
            OSError: it cannot be created, or the directory was closed.
        """
        prefix = f"{_file_safe(spec.run_id)}-{spec.attempt}-"
        try:
            return self._create(prefix)
        except FileNotFoundError:  # the directory was removed under us: make another
            self._path = None
            return self._create(prefix)

    def remove(self, path: str) -> None:
        """Removes an attempt's file and its directory (gone already is fine)."""
        directory = os.path.dirname(path)
        if self._path is None or os.path.dirname(directory) != self._path:
            log.warning("not removing %s: not an attempt's directory", directory)
            return
        try:
            # The usual case in two system calls: the file, then the emptied directory;
            # rmtree (a walk, several times dearer) only for what the process left there.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            try:
                os.rmdir(directory)
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as error:  # e.g. the process made something it cannot be removed from
            log.warning("cannot remove %s (%s); it goes when the agent stops", directory, error)

    def close(self) -> None:
        """Removes the directory and what is left in it; no file can be created after."""
        self._closed = True
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None

    def _create(self, prefix: str) -> str:
        if self._closed:
            raise OSError("the agent is stopping: its outputs directory is closed")
        if self._path is None:
            self._path = self._make_own_directory()
        directory = tempfile.mkdtemp(prefix=prefix, dir=self._path)
        path = os.path.join(directory, OUTPUTS_FILE_NAME)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        if self._owner is not None:
            os.chown(path, *self._owner)
            os.chown(directory, *self._owner)
        return path

    def _make_own_directory(self) -> str:
        path = os.path.join(self._base_dir(), f"{self._prefix}{os.getpid()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # left by an earlier process with this pid
            if not _own_directory(path):
                raise
            shutil.rmtree(path)
            os.mkdir(path, 0o700)
        if self._owner is not None:
            os.chmod(path, 0o711)  # mkdir's mode is cut by the umask; this is not
        return path

    def _base_dir(self) -> str:
        return self._base or memory_backed_tmp() or tempfile.gettempdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _own_directory(path: str) -> bool:
    """A directory (not a link to one) of this user."""
    try:
        status = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid()


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
