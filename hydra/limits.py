"""The one message-size policy of Hydra's gRPC traffic, shared by the coordinator's
server, the agent's channel and the client's.

Every side sends and receives at most :data:`MAX_MESSAGE_BYTES`, so a message one
side accepts to send is one the other side accepts to receive: nothing can make
a stream break on the far side for its size alone. The limit follows from the
largest thing a request carries, a spec (at most ``MAX_SPEC_BYTES`` of strings),
with room for its encoding and a rendered command (bounded below it).
"""

from __future__ import annotations

from hydra.spec import MAX_SPEC_BYTES

#: Largest gRPC message sent or received by a coordinator, an agent or a client: 4 MiB.
MAX_MESSAGE_BYTES = 4 * MAX_SPEC_BYTES


def message_size_options() -> list[tuple[str, int]]:
    """gRPC channel and server options applying :data:`MAX_MESSAGE_BYTES` both ways."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]


def format_bytes(size: int) -> str:
    """``4 MiB``, ``1.5 MiB``, ``900 KiB``, ``12 bytes``: a size for messages to people."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"
