"""What an attempt's process produces: its output streams and ``$HYDRA_OUTPUT``."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import NoReturn

from hydra.agent.attempt import OutputStream

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

    Blocking (file I/O): call it through ``asyncio.to_thread``.

    Raises:
        OutputsError: the file is over ``MAX_OUTPUTS_BYTES`` or is not a JSON
            object (NaN and Infinity are refused too: PostgreSQL's jsonb has
            no place for them).
    """
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_OUTPUTS_BYTES + 1)
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


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def outputs_path(directory: str) -> str:
    """Where the process of an attempt whose temporary directory is ``directory`` writes."""
    return os.path.join(directory, "outputs.json")
