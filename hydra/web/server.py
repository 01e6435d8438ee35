"""Serving the web application: the listening socket, TLS, uvicorn."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import uvicorn

from hydra.coordinator.tls import is_loopback
from hydra.errors import InvalidArgument
from hydra.web.app import create_app
from hydra.web.config import WebConfig

log = logging.getLogger("hydra.web")


def check_config(config: WebConfig) -> None:
    """Refuse what must not start: plaintext beyond loopback without --insecure,
    half of a certificate pair.

    Raises:
        InvalidArgument: naming the flag.
    """
    if (config.tls_cert is None) != (config.tls_key is None):
        raise InvalidArgument("give --tls-cert and --tls-key together", path="--tls-cert")
    if not config.https and not config.insecure and not is_loopback(config.listen):
        raise InvalidArgument(
            f"refusing to serve plaintext HTTP on {config.listen}, which is not a loopback "
            "address: add --tls-cert and --tls-key to serve HTTPS, or --insecure",
            path="--listen",
        )


def bind(listen: str) -> socket.socket:
    """A listening socket on ``listen`` (port 0: any free port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidArgument(f"{listen!r} is not HOST:PORT", path="--listen")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as error:
        sock.close()
        problem = f"cannot listen on {listen}: {error.strerror}"
        raise InvalidArgument(problem, path="--listen") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url(config: WebConfig, sock: socket.socket) -> str:
    """The base URL the socket serves."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if config.https else 'http'}://{shown}:{port}/"


async def run_web(config: WebConfig) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    check_config(config)
    sock = bind(config.listen)
    app = create_app(config)
    server = _Server(
        lambda: _announce(config, sock, app.state.dev_logins.issue),
        uvicorn.Config(
            app,
            log_level=config.log_level,
            ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
            ssl_keyfile=str(config.tls_key) if config.tls_key else None,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        ),
    )
    try:
        await server.serve(sockets=[sock])
    except asyncio.CancelledError:
        pass
    finally:
        sock.close()
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, saying so once it accepts requests."""

    def __init__(self, started: Callable[[], None], config: uvicorn.Config) -> None:
        super().__init__(config)
        self._started = started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._started()


def _announce(config: WebConfig, sock: socket.socket, dev_code: Callable[[], str]) -> None:
    """The line `hydra dev` users and the tests read: the URL, once it accepts requests;
    with --dev-login-credential, a one-time sign-in URL (a code, never the credential)."""
    base = url(config, sock)
    targets = ", ".join(config.coordinators)
    print(f"hydra web: serving {base} for coordinators {targets}", flush=True)
    log.info("serving %s", base)
    if config.dev_login_credential is not None:
        link = f"{base}login/dev?code={dev_code()}"
        print(f"hydra web: sign in as the local admin: {link}", flush=True)
