"""TLS as the coordinators serve it: certificate files re-read when they change
(rotation without a restart), and the rule that plaintext stays on loopback."""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc

from hydra.errors import HydraError, InvalidArgument

log = logging.getLogger("hydra.coordinator.tls")

#: A file's identity and version: a replaced or rewritten file has another.
_Signature = tuple[int, int, int]


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerTls:
    """The coordinator's certificate files (PEM)."""

    #: Certificate (chain) presented to clients (``--tls-cert``).
    cert: Path
    #: Its private key (``--tls-key``).
    key: Path
    #: CA(s) of client certificates; when set, clients must present one (``--tls-client-ca``).
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        """True when client certificates are required (mTLS)."""
        return self.client_ca is not None


class InsecureListen(HydraError):
    """The coordinator would serve plaintext beyond loopback."""

    status_code_name = "FAILED_PRECONDITION"


def is_loopback(listen: str) -> bool:
    """True when ``host:port`` binds only loopback (127.0.0.0/8, ::1, localhost)."""
    host = listen.rsplit(":", 1)[0].strip("[]") if ":" in listen else listen
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or empty (every interface): not provably loopback


def check_listen(listen: str, *, tls: ServerTls | None, insecure: bool) -> None:
    """Refuse plaintext beyond loopback unless ``insecure``.

    Raises:
        InsecureListen: saying what to add.
    """
    if tls is None and not insecure and not is_loopback(listen):
        raise InsecureListen(
            f"refusing to serve plaintext on {listen}, which is not a loopback address: "
            "add --tls-cert and --tls-key (HYDRA_TLS_CERT, HYDRA_TLS_KEY) to serve TLS, or "
            "--insecure (HYDRA_INSECURE=1) to serve plaintext without authentication"
        )


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """Credentials that re-read the files when they change.

    Raises:
        InvalidArgument: a file is missing or not what its flag needs, naming the flag.
    """
    files = CertificateFiles(tls)
    # grpc documents None as "no change"; types-grpcio's stub leaves it out.
    fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", files.fetch)
    return grpc.dynamic_ssl_server_credentials(
        files.initial, fetch, require_client_authentication=tls.mutual
    )


class CertificateFiles:
    """The last good configuration of a coordinator's certificate files.

    gRPC calls :meth:`fetch` before each handshake (on its own threads). A file
    that changed is loaded and checked first; one that does not load (say, half
    written) is logged once, and the last good configuration stays in use.
    """

    def __init__(self, tls: ServerTls) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._seen = self._signature()
        #: The configuration served first, from the files as they are at start.
        self.initial = load_configuration(tls)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration if the files changed and load; else None (keep the current)."""
        with self._lock:
            signature = self._signature()
            if signature == self._seen:
                return None
            self._seen = signature
            try:
                configuration = load_configuration(self._tls)
            except InvalidArgument as error:
                log.warning("TLS files changed but do not load; serving the last good: %s", error)
                return None
        log.info("TLS files changed: serving the new certificate to new connections")
        return configuration

    def _signature(self) -> tuple[_Signature, ...]:
        paths = [self._tls.cert, self._tls.key, self._tls.client_ca]
        return tuple(_stat(path) for path in paths if path is not None)


def _stat(path: Path) -> _Signature:
    try:
        status = os.stat(path)
    except OSError:
        return (0, 0, -1)
    return (status.st_ino, status.st_mtime_ns, status.st_size)


def load_configuration(tls: ServerTls) -> grpc.ServerCertificateConfiguration:
    """The files, checked with the ``ssl`` module as a handshake would load them.

    Raises:
        InvalidArgument: naming the flag whose file is wrong.
    """
    cert = _pem(tls.cert, "--tls-cert", "CERTIFICATE")
    key = _pem(tls.key, "--tls-key", "PRIVATE KEY")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as error:
        raise InvalidArgument(
            f"{tls.key} is not the key of the certificate in {tls.cert} ({error.reason})",
            path="--tls-key",
        ) from None
    client_ca = None
    if tls.client_ca is not None:
        client_ca = _pem(tls.client_ca, "--tls-client-ca", "CERTIFICATE")
        _check_ca(context, tls.client_ca)
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)


def _check_ca(context: ssl.SSLContext, path: Path) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as error:
        raise InvalidArgument(
            f"{path} holds no usable CA certificate ({error.reason})", path="--tls-client-ca"
        ) from None


def _pem(path: Path, flag: str, kind: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InvalidArgument(f"cannot read {path}: {error.strerror}", path=flag) from None
    if f"-----BEGIN {kind}".encode() not in data and f" {kind}-----".encode() not in data:
        raise InvalidArgument(f"{path} holds no PEM {kind.lower()}", path=flag)
    return data
