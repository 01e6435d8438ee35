"""The HTTP JSON API under /api/v1/: one endpoint per RPC (docs/http-api.md).

An endpoint is a thin translation: the caller's ``Authorization: Bearer`` goes
to the coordinator as it came, the JSON (or the query) becomes the request
message, the response message becomes JSON, a gRPC status becomes an HTTP
status. The coordinator decides everything else, so the API can never do what
the gRPC contract forbids.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from hydra.errors import InvalidArgument
from hydra.limits import MAX_MESSAGE_BYTES, format_bytes
from hydra.web import openapi, streams
from hydra.web.endpoints import Endpoint, endpoints
from hydra.web.http_errors import ApiError, api_error, from_rpc_error, invalid
from hydra.web.json_mapping import from_json, from_query, to_json
from hydra.web.state import WebState

log = logging.getLogger("hydra.web.api")

#: Largest request body: the gRPC message limit, which the request must fit anyway.
MAX_BODY_BYTES = MAX_MESSAGE_BYTES
#: Media types a body may be sent as. ``application/x-www-form-urlencoded`` is
#: what ``curl -d`` says it sends; the body is read as JSON all the same. This is
#: safe from cross-site forms: the API reads a credential only from the
#: Authorization header, which a form cannot set, never from a cookie.
_BODY_TYPES = ("application/json", "application/x-www-form-urlencoded")

Handler = Callable[[Request], Awaitable[Response]]


def routes(state: WebState) -> list[BaseRoute]:
    """The API's routes, mounted under /api/v1."""
    every = endpoints()
    found: list[BaseRoute] = [
        Route(endpoint.path, _Asgi(_handler(state, endpoint))) for endpoint in every
    ]
    document = openapi.document(every)
    found.append(
        Route("/openapi.json", _Asgi(_guarded(("GET",), _constant(document), name="openapi.json")))
    )
    found.append(Route("/{path:path}", _Asgi(_no_endpoint)))
    return found


class _Asgi:
    """A handler as an ASGI app, so that its route takes every HTTP method and
    the handler answers a wrong one with the API's error body (Starlette's own
    405 is plain text)."""

    def __init__(self, handle: Handler) -> None:
        self._handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._handle(Request(scope, receive))
        await response(scope, receive, send)


def _handler(state: WebState, endpoint: Endpoint) -> Handler:
    async def call(request: Request) -> Response:
        token = bearer_token(request)
        message = await _request_message(request, endpoint)
        if endpoint.streaming:
            return await streams.respond(state, endpoint, message, token=token, request=request)
        service, method = endpoint.service, endpoint.method.name
        reply = await state.backend.call(service, method, message, token=token)
        return JSONResponse(to_json(reply))

    return _guarded(endpoint.http_methods, call, name=endpoint.name)


def _guarded(methods: tuple[str, ...], handle: Handler, *, name: str) -> Handler:
    """``handle`` for ``methods`` only; every failure answered as the API's error body."""

    async def guarded(request: Request) -> Response:
        try:
            if request.method not in methods:
                allowed = ", ".join(methods)
                raise ApiError(
                    status=405,
                    code="UNIMPLEMENTED",
                    message=f"{request.method} is not allowed here; use {allowed}",
                    headers={"Allow": allowed},
                )
            return await handle(request)
        except ApiError as error:
            return error.response()
        except InvalidArgument as error:
            return invalid(error).response()
        except grpc.aio.AioRpcError as error:
            return from_rpc_error(error).response()
        except Exception:
            log.exception("%s failed", name)  # the request is not logged: it may carry secrets
            return api_error("INTERNAL", "internal error in hydra web; see its log").response()

    return guarded


def bearer_token(request: Request) -> str | None:
    """The caller's credential from ``Authorization: Bearer …``; None without the
    header (the coordinator then answers UNAUTHENTICATED, unless --insecure)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not (token.isascii() and token.isprintable()):
        raise api_error("UNAUTHENTICATED", "the Authorization header must be 'Bearer <credential>'")
    return token


async def _request_message(request: Request, endpoint: Endpoint) -> Message:
    if request.method == "GET":
        return from_query(request.query_params.multi_items(), endpoint.request())
    if request.query_params:
        first = next(iter(request.query_params))
        raise InvalidArgument("query parameters are for GET; send the fields as JSON", first)
    return from_json(await _json_body(request), endpoint.request())


async def _json_body(request: Request) -> object:
    """The body as JSON (an empty body is ``{}``), refused when too large or not JSON."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media not in _BODY_TYPES and not media.endswith("+json"):
        raise ApiError(
            status=415,
            code="INVALID_ARGUMENT",
            message=f"the body must be application/json, not {media}",
        )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise api_error("INVALID_ARGUMENT", f"the body is not JSON: {error}") from None


def _too_large() -> ApiError:
    limit = format_bytes(MAX_BODY_BYTES)
    return ApiError(
        status=413, code="RESOURCE_EXHAUSTED", message=f"the body is larger than {limit}"
    )


def _constant(document: dict[str, object]) -> Handler:
    async def serve(request: Request) -> Response:
        return JSONResponse(document)

    return serve


async def _no_endpoint(request: Request) -> Response:
    message = f"no endpoint {request.url.path}; see /api/v1/openapi.json"
    return api_error("NOT_FOUND", message).response()
