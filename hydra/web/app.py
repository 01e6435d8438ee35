"""The ASGI application: the JSON API under /api/v1/ and the pages everywhere else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from hydra.web import api, ui
from hydra.web.backend import Backend
from hydra.web.config import WebConfig
from hydra.web.state import WebState


def create_app(config: WebConfig) -> Starlette:
    """The application for ``config``; its gRPC channel opens with the app's lifespan."""
    state = WebState(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.backend = Backend(config.coordinators, config.coordinator_tls)
        try:
            yield
        finally:
            await state.backend.close()

    routes = [
        Route("/healthz", _healthz, methods=["GET"]),
        Mount("/api/v1", routes=api.routes(state)),
        *ui.routes(state),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    ui.install(app, state)
    return app


async def _healthz(request: Request) -> PlainTextResponse:
    """Liveness of the web process itself (not of the coordinators)."""
    return PlainTextResponse("ok\n")
