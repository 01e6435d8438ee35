"""What every request handler of `hydra web` shares."""

from __future__ import annotations

from hydra.web.backend import Backend
from hydra.web.config import WebConfig


class WebState:
    """What every request handler shares: the settings and the gRPC backend."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self._backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("the web application has not started")
        return self._backend

    @backend.setter
    def backend(self, backend: Backend) -> None:
        self._backend = backend
