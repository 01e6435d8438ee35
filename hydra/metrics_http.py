"""The `/metrics` endpoint of a coordinator or an agent (`--metrics-listen`).

A small threaded WSGI server (prometheus_client's) in a thread of its own, so
a scrape never runs on the event loop; it serves one process's registry, not
the global one, so several coordinators in one process each have their own.
Secure by default like the gRPC port: plaintext only on loopback unless the
process is insecure (or TLS files are given), and with an `authorize` check
(a coordinator that authenticates) every scrape needs `Authorization: Bearer`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from hydra.errors import HydraError, InvalidArgument

log = logging.getLogger("hydra.metrics")

#: Answers a scrape's `Authorization` header: None to serve it, else (HTTP status, why).
Authorize = Callable[[str], tuple[int, str] | None]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_REASONS = {401: "401 Unauthorized", 403: "403 Forbidden", 503: "503 Service Unavailable"}


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricsTls:
    """The certificate a metrics endpoint serves TLS with."""

    cert: Path
    key: Path


def parse_listen(address: str, *, flag: str = "--metrics-listen") -> tuple[str, int]:
    """HOST:PORT (IPv6 hosts in brackets) as (host, port).

    Raises:
        InvalidArgument: naming `flag`, when it is not HOST:PORT with a port 0-65535.
    """
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(f"expected HOST:PORT, got {address!r}", path=flag)
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_metrics_listen(
    address: str,
    *,
    tls: MetricsTls | None,
    insecure: bool,
    flag: str = "--metrics-listen",
    insecure_flag: str = "--insecure",
) -> tuple[str, int]:
    """(host, port) of a metrics address, refused beyond loopback without TLS or insecure.

    Raises:
        InvalidArgument: naming `flag`.
    """
    host, port = parse_listen(address, flag=flag)
    if not is_loopback(host) and tls is None and not insecure:
        raise InvalidArgument(
            f"{host} is not a loopback address: serving metrics there in plaintext needs "
            f"{insecure_flag} (or TLS)",
            path=flag,
        )
    return host, port


class CannotServeMetrics(HydraError):
    """The metrics endpoint cannot listen on its address."""

    status_code_name = "UNAVAILABLE"


class MetricsServer:
    """Serves `registry` on `/metrics` at host:port, in a thread; `stop` ends it."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        authorize: Authorize | None = None,
        tls: MetricsTls | None = None,
    ) -> None:
        self._app = _guarded(make_wsgi_app(registry), authorize)
        self._host = host
        self._requested_port = port
        self._tls = tls
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        #: The port bound (the one asked for, or the system's choice for 0).
        self.port = 0

    @property
    def address(self) -> str:
        """host:port it serves on."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread.

        Raises:
            CannotServeMetrics: the address is taken or not this machine's.
        """
        try:
            server = make_server(
                self._host, self._requested_port, self._app, _server_class(self._host),
                handler_class=_SilentHandler,
            )  # fmt: skip
        except OSError as error:
            raise CannotServeMetrics(
                f"cannot serve metrics on {self._host}:{self._requested_port}: {error.strerror} "
                "(choose another address with --metrics-listen)"
            ) from None
        if self._tls is not None:
            server.socket = _tls_context(self._tls).wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever, name="hydra-metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics on %s://%s/metrics", "https" if self._tls else "http", self.address)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None


def _server_class(host: str) -> type[WSGIServer]:
    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return Server


def _tls_context(tls: MetricsTls) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile=str(tls.cert), keyfile=str(tls.key))
    return context


def _guarded(app: Callable[..., Iterable[bytes]], authorize: Authorize | None) -> Any:
    """`app` on /metrics only, behind `authorize` if there is one."""

    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/metrics", "/metrics/"):
            return _plain(start_response, "404 Not Found", "only /metrics is served here\n")
        if authorize is not None:
            refused = authorize(str(environ.get("HTTP_AUTHORIZATION", "")))
            if refused is not None:
                status, why = refused
                return _plain(start_response, _REASONS.get(status, str(status)), why + "\n")
        return app(environ, start_response)

    return guarded


def _plain(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    if status.startswith("401"):
        headers.append(("WWW-Authenticate", 'Bearer realm="hydra"'))
    start_response(status, headers)
    return [text.encode()]
