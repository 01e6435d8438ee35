"""The server-rendered pages (docs/web.md).

- :mod:`.sessions`, :mod:`.devlogin`, :mod:`.auth`: sign-in, the encrypted
  session cookie, `hydra dev`'s one-time link.
- :mod:`.pages`: what every page shares (CSRF, rendering, friendly errors).
- :mod:`.tasks`, :mod:`.task_actions`, :mod:`.graph`, :mod:`.runs`,
  :mod:`.cluster`: the pages by area.
"""

from __future__ import annotations

import weakref

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hydra.web.state import WebState
from hydra.web.ui import auth, cluster, graph, runs, task_actions, tasks
from hydra.web.ui.pages import Ui

_UIS: weakref.WeakKeyDictionary[WebState, Ui] = weakref.WeakKeyDictionary()

#: Headers on every response: no framing, no inline scripts, no referrer (the
#: dev sign-in code must not leak through one).
SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


def _ui(state: WebState) -> Ui:
    if state not in _UIS:
        _UIS[state] = Ui(state)
    return _UIS[state]


def routes(state: WebState) -> list[BaseRoute]:
    """The pages' routes."""
    ui = _ui(state)
    return [
        Route("/", _home, methods=["GET"]),
        Mount("/static", StaticFiles(packages=[("hydra.web.ui", "static")]), name="static"),
        *auth.routes(ui),
        *tasks.routes(ui),
        *task_actions.routes(ui),
        *graph.routes(ui),
        *runs.routes(ui),
        *cluster.routes(ui),
    ]


def install(app: Starlette, state: WebState) -> None:
    """Security headers on every response; `hydra dev`'s sign-in codes where the
    server finds them (``app.state.dev_logins``)."""
    app.state.dev_logins = _ui(state).dev_logins
    app.add_middleware(_SecurityHeaders)


async def _home(request: Request) -> Response:
    return RedirectResponse("/tasks", status_code=303)


class _SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
