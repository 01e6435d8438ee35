"""The server-rendered pages (docs/web.md).

Not built yet: see issue 14.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from hydra.web.state import WebState


def routes(state: WebState) -> list[BaseRoute]:
    """The pages' routes."""
    return []


def install(app: Starlette, state: WebState) -> None:
    """Middleware and error handlers of the pages (sessions, CSRF)."""
