"""The HTTP JSON API under /api/v1/ (docs/web.md): one endpoint per RPC.

Not built yet: see issue 14.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from hydra.web.state import WebState


def routes(state: WebState) -> list[BaseRoute]:
    """The API's routes, mounted under /api/v1."""
    return []
