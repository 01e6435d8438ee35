"""A run's output as pieces a page shows: text per attempt, and the marker
where the coordinator dropped bytes between the head and the tail it keeps."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hydra.v1 import run_service_pb2 as run_pb


@dataclass(frozen=True, kw_only=True, slots=True)
class LogPiece:
    attempt: int
    #: "out", "err" or "dropped".
    kind: str
    text: str

    def json(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "kind": self.kind, "text": self.text}


def log_pieces(chunks: Iterable[run_pb.LogChunk]) -> list[LogPiece]:
    """One piece per chunk (bytes decoded as UTF-8, undecodable bytes replaced)."""
    pieces = []
    for chunk in chunks:
        if chunk.dropped_bytes:
            text = (
                f"… {chunk.dropped_bytes:,} bytes dropped here (the head and the tail are kept) …\n"
            )
            pieces.append(LogPiece(attempt=chunk.attempt, kind="dropped", text=text))
        elif chunk.data:
            kind = "err" if chunk.stream == run_pb.OUTPUT_STREAM_STDERR else "out"
            text = chunk.data.decode("utf-8", errors="replace")
            pieces.append(LogPiece(attempt=chunk.attempt, kind=kind, text=text))
    return pieces
