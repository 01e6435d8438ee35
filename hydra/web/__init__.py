"""`hydra web`: the web UI and the HTTP JSON API (docs/web.md).

An ASGI application (Starlette, served by uvicorn) that talks to the
coordinators over gRPC like any other client, with the caller's own
credential on every call. It holds no database connection and no credential of
its own, so it can do nothing the public contract forbids: the coordinators
check every call (docs/security.md).

- :mod:`hydra.web.backend`: the gRPC channel to the coordinators.
- :mod:`hydra.web.api`: ``/api/v1/``, one endpoint per RPC, and its OpenAPI document.
- :mod:`hydra.web.ui`: the server-rendered pages.
- :mod:`hydra.web.server`: binding, TLS and uvicorn.
"""
