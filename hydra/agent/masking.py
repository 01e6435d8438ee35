"""Secret values masked as ``***`` in what an attempt's output shows, as CI systems do.

Output arrives in chunks cut anywhere, so :class:`StreamMasker` holds back the
end of a chunk while it could be the start of a secret, and masks every byte
covered by any occurrence of any secret: overlapping occurrences, and a secret
that is a prefix of another, leave no part of either in view. A run of masked
bytes becomes one ``***``. Once a chunk is passed on, its last bytes are kept
(unshown) as context, so that an occurrence that began in it is still found.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from hydra.agent.attempt import OutputStream

MASK = b"***"


class StreamMasker:
    """Masks the secrets in one stream of bytes, fed in chunks."""

    def __init__(self, secrets: Iterable[bytes]) -> None:
        self._secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
        self._longest = len(self._secrets[0]) if self._secrets else 0
        self._context = b""  # the last bytes passed on, unmasked, to find occurrences across
        self._pending = bytearray()  # bytes not passed on yet
        self._masking = False  # the last byte passed on was masked

    def feed(self, data: bytes) -> bytes:
        """What of the stream so far can be shown now, masked."""
        if not self._secrets:
            return data
        self._pending += data
        return self._release(final=False)

    def flush(self) -> bytes:
        """The rest of the stream, masked (it has ended)."""
        return self._release(final=True) if self._secrets else b""

    def _release(self, *, final: bool) -> bytes:
        text = self._context + bytes(self._pending)
        offset = len(self._context)
        end = len(text) if final else max(offset, self._hold_point(text))
        shown = bytearray()
        position = offset
        for start, stop in _covered(text, self._secrets, offset, end):
            shown += text[position:start]
            if start > position or not self._masking:
                shown += MASK
            position = stop
            self._masking = True
        if position < end:
            shown += text[position:end]
            self._masking = False
        del self._pending[: end - offset]
        self._context = text[max(0, end - self._longest + 1) : end]
        return bytes(shown)

    def _hold_point(self, text: bytes) -> int:
        """Where the end that may still become a secret begins (``len(text)`` if none)."""
        return min((_partial_start(text, secret) for secret in self._secrets), default=len(text))


def _partial_start(text: bytes, secret: bytes) -> int:
    """The first position from which the rest of ``text`` is a proper prefix of ``secret``."""
    end = len(text)
    start = text.find(secret[:1], max(0, end - len(secret) + 1))
    while start != -1:
        if text.endswith(secret[: end - start]):
            return start
        start = text.find(secret[:1], start + 1)
    return end


def _covered(text: bytes, secrets: Iterable[bytes], start: int, end: int) -> list[tuple[int, int]]:
    """The runs of [start, end) that occurrences of secrets cover, merged, in order."""
    spans = [span for secret in secrets for span in _occurrences(text, secret, start, end)]
    merged: list[tuple[int, int]] = []
    for span_start, span_stop in sorted(spans):
        if merged and span_start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], span_stop))
        else:
            merged.append((span_start, span_stop))
    return merged


def _occurrences(text: bytes, secret: bytes, start: int, end: int) -> Iterator[tuple[int, int]]:
    """What the occurrences of one secret cover of [start, end), overlapping ones joined.

    Of the occurrences that overlap one, only the last matters (it reaches
    furthest), so each step jumps to it: linear even for ``aaaa`` in ``aaaaaaaa``.
    """
    size = len(secret)
    found = text.find(secret, max(0, start - size + 1), end + size - 1)
    while found != -1:
        first = found
        while (later := text.rfind(secret, found + 1, found + 2 * size - 1)) != -1:
            found = later
        yield max(first, start), min(found + size, end)
        found = text.find(secret, found + size, end + size - 1)


class OutputMasker:
    """A :class:`StreamMasker` per stream in front of a sink of (stream, bytes)."""

    def __init__(self, secrets: Iterable[bytes], sink: Callable[[OutputStream, bytes], None]):
        secrets = tuple(secrets)
        self._sink = sink
        self._streams = {stream: StreamMasker(secrets) for stream in OutputStream}

    def add(self, stream: OutputStream, data: bytes) -> None:
        """Passes on what can be shown of ``data`` now."""
        shown = self._streams[stream].feed(data)
        if shown or not data:
            self._sink(stream, shown)

    def flush(self) -> None:
        """Passes on what was held back: the streams have ended."""
        for stream, masker in self._streams.items():
            if rest := masker.flush():
                self._sink(stream, rest)


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret in it masked (see :class:`StreamMasker`)."""
    masker = StreamMasker(secret.encode("utf-8", "surrogateescape") for secret in secrets)
    data = text.encode("utf-8", "surrogateescape")
    return (masker.feed(data) + masker.flush()).decode("utf-8", "surrogateescape")


def mask_outputs(outputs_json: str, secrets: Iterable[str]) -> str:
    """An outputs JSON object with the secrets masked in its strings (keys too) and
    numbers; as it was if none is in it."""
    secrets = tuple(secret for secret in secrets if secret)
    if not secrets or not outputs_json:
        return outputs_json
    value = json.loads(outputs_json)
    masked = _mask_json(value, secrets)
    return outputs_json if masked == value else json.dumps(masked, ensure_ascii=False)


def _mask_json(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return mask_text(value, secrets)
    if isinstance(value, dict):
        return {_mask_json(key, secrets): _mask_json(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_json(item, secrets) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        shown = json.dumps(value)
        return mask_text(shown, secrets) if mask_text(shown, secrets) != shown else value
    return value
