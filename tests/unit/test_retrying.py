"""The one retry policy: which gRPC codes are retried, and where."""

from __future__ import annotations

import grpc
import pytest

from hydra.retrying import is_reconnectable, is_retryable


class _Error(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


@pytest.mark.parametrize(
    ("code", "retry", "reconnect"),
    [
        (grpc.StatusCode.UNAVAILABLE, True, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True, True),
        (grpc.StatusCode.INTERNAL, False, True),  # a transport glitch as a coordinator dies
        (grpc.StatusCode.UNKNOWN, False, True),
        (grpc.StatusCode.ALREADY_EXISTS, False, True),  # the agent id's old session may end
        (grpc.StatusCode.UNAUTHENTICATED, False, False),  # configuration: retrying cannot fix
        (grpc.StatusCode.INVALID_ARGUMENT, False, False),
        (grpc.StatusCode.UNIMPLEMENTED, False, False),
    ],
)
def test_codes(code: grpc.StatusCode, retry: bool, reconnect: bool) -> None:
    assert is_retryable(_Error(code)) is retry
    assert is_reconnectable(_Error(code)) is reconnect


def test_other_exceptions_are_never_retried() -> None:
    assert not is_retryable(ValueError()) and not is_reconnectable(ValueError())


def test_a_connection_tls_refused_is_not_retried() -> None:
    from hydra.client._transport import CallError

    refused = CallError(grpc.StatusCode.UNAVAILABLE, "wrong CA", "x:1", sent=False, tls=True)
    unreachable = CallError(grpc.StatusCode.UNAVAILABLE, "refused", "x:1", sent=False)
    assert not is_retryable(refused)
    assert is_retryable(unreachable)
