"""Credentials: one interceptor checks every call against the role table before
its handler runs, and binds the caller for the handler (api/caller.py).

Health is open; reflection needs any valid credential; every other method
needs the role the table (api/roles.py) gives it, and some an unscoped
credential. A refused call never reads its request. With ``insecure`` nothing
is checked and every call runs as ``ANONYMOUS``.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from hydra.coordinator.api.caller import ANONYMOUS, Caller, RefusedCall, bound
from hydra.coordinator.api.errors import status_of
from hydra.coordinator.api.identities import Identities
from hydra.coordinator.api.roles import (
    ANY_CREDENTIAL_SERVICES,
    OPEN_SERVICES,
    ROLES,
    UNSCOPED_ONLY,
    service_of,
    short_name,
)
from hydra.domain import Credential, Role
from hydra.errors import HydraError, PermissionDenied, Unauthenticated

log = logging.getLogger("hydra.coordinator.auth")

Context = grpc.aio.ServicerContext[Any, Any]
#: The agents' stream: the one call a client certificate may authenticate.
CONNECT = "/hydra.v1.AgentService/Connect"
#: Told of every call refused for its credential (the audit log's sink).
OnRefused = Callable[[RefusedCall], Awaitable[None] | None]


class CredentialInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates and authorizes every call (None `identities`: insecure, no check)."""

    def __init__(self, identities: Identities | None, *, on_refused: OnRefused | None = None):
        self._identities = identities
        self._on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or service_of(method) in OPEN_SERVICES:
            return handler
        if self._identities is None:
            return _binding(handler, ANONYMOUS)
        metadata = dict(handler_call_details.invocation_metadata or ())
        try:
            secret = _bearer(str(metadata.get("authorization", "")))
            if not secret and method == CONNECT:
                return self._by_certificate(handler, method)
            credential = await self._identities.authenticate(secret)
        except HydraError as error:  # Unauthenticated, or Unavailable
            return self._denying(handler, method, error, None)
        caller = caller_of(credential)
        try:
            if service_of(method) not in ANY_CREDENTIAL_SERVICES:
                authorize(caller, method)
        except PermissionDenied as error:
            return self._denying(handler, method, error, caller)
        return _binding(handler, caller)

    def _denying(self, handler: Any, method: str, error: HydraError, caller: Caller | None) -> Any:
        async def deny(context: Context) -> None:
            await self._refuse(context, method, error, caller)

        return _denying(handler, deny)

    async def _refuse(
        self, context: Context, method: str, error: HydraError, caller: Caller | None
    ) -> None:
        """Report a refusal for the audit log, then end the call with its status."""
        code = status_of(error)
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            refused = RefusedCall(
                method=method, caller=caller, peer=context.peer(), code=code.name,
                message=error.message,
            )  # fmt: skip
            await self._report(refused)
        await context.abort(code, error.message)

    def _by_certificate(self, handler: Any, method: str) -> Any:
        """An agent's Connect without a token: under mTLS its client certificate's
        Common Name names the agent id, and stands for the live agent credential
        of that id (docs/security.md). The stream is read only once it is known."""
        assert self._identities is not None
        identities, behaviour = self._identities, handler.stream_stream

        async def connect(requests: Any, context: Context) -> AsyncIterator[Any]:
            try:
                credential = await identities.for_certificate(_common_name(context))
            except HydraError as error:
                await self._refuse(context, method, error, None)
                return
            caller = dataclasses.replace(caller_of(credential), peer=context.peer())
            with bound(caller):
                async for response in behaviour(requests, context):
                    yield response

        return handler._replace(stream_stream=connect)

    async def _report(self, refused: RefusedCall) -> None:
        if self._on_refused is None:
            return
        try:
            result = self._on_refused(refused)
            if result is not None:
                await result
        except Exception:  # the refusal stands whatever its record does
            log.exception("recording a refused call failed")


def caller_of(credential: Credential) -> Caller:
    """The caller a credential makes."""
    return Caller(
        name=credential.name,
        role=credential.role,
        scope=credential.scope,
        agent_id=credential.agent_id,
        labels=None if credential.labels is None else dict(credential.labels),
        max_capacity=credential.max_capacity,
    )


def authorize(caller: Caller, method: str) -> None:
    """Refuse `caller` a call of `method` unless the role table allows it.

    Raises:
        PermissionDenied: naming the role needed and the credential's role (or scope).
    """
    needed = ROLES.get(method)
    if needed is None:
        raise PermissionDenied(f"{short_name(method)} is not in the role table")
    if not caller.role.includes(needed):
        raise PermissionDenied(
            f"{short_name(method)} needs role {needed.value}; "
            f"credential {caller.name!r} has role {caller.role.value}"
            + (" (agent credentials may only connect)" if caller.role is Role.AGENT else ""),
        )
    if caller.scope and method in UNSCOPED_ONLY:
        raise PermissionDenied(
            f"{short_name(method)} needs an unscoped credential; credential "
            f"{caller.name!r} is limited to tasks under scope {caller.scope!r}",
        )


def _common_name(context: Context) -> str:
    """The Common Name of the peer's verified client certificate ("" without one)."""
    name = next(iter(context.auth_context().get("x509_common_name") or ()), b"")
    return name.decode(errors="replace")


def _bearer(authorization: str) -> str:
    scheme, _, secret = authorization.partition(" ")
    if authorization and scheme.lower() != "bearer":
        raise Unauthenticated("the authorization header must be `Bearer <secret>`")
    return secret.strip()


def _binding(handler: Any, caller: Caller) -> Any:
    """The handler, each of its behaviours running as `caller` (its peer filled in)."""
    kind = (
        "stream" if handler.request_streaming else "unary",
        "stream" if handler.response_streaming else "unary",
    )
    name = f"{kind[0]}_{kind[1]}"
    return handler._replace(**{name: _bind(getattr(handler, name), caller)})


def _bind(behaviour: Callable[..., Any], caller: Caller) -> Callable[..., Any]:
    def who(context: Context) -> Caller:
        return dataclasses.replace(caller, peer=context.peer())

    if inspect.isasyncgenfunction(behaviour):

        async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
            with bound(who(context)):
                async for response in behaviour(request, context):
                    yield response

        return streaming

    async def single(request: Any, context: Context) -> Any:
        with bound(who(context)):
            return await behaviour(request, context)

    return single


def _denying(handler: Any, deny: Callable[[Context], Awaitable[None]]) -> Any:
    """A handler that refuses the call without reading its request.

    It takes the request as a stream whatever the method's kind (the wire is the
    same), and never reads it: gRPC then neither receives nor parses the body, so
    an unauthenticated caller cannot make the coordinator hold large requests.
    """

    async def deny_unary(requests: Any, context: Context) -> None:
        await deny(context)

    async def deny_streaming(requests: Any, context: Context) -> Any:
        await deny(context)
        yield  # pragma: no cover - abort raises

    if handler.response_streaming:
        make, refuse = grpc.stream_stream_rpc_method_handler, deny_streaming
    else:
        make, refuse = grpc.stream_unary_rpc_method_handler, deny_unary
    return make(
        refuse, request_deserializer=_unread, response_serializer=handler.response_serializer
    )


def _unread(data: bytes) -> None:
    """Never called for a refused call (its request is not read); parses nothing if it were."""
