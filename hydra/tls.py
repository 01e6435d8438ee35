"""TLS as a client of the coordinators (agents, hydractl, the SDK): channel
credentials from PEM files, and one clear line for a connection that TLS broke.

Shared by the agent and the client, so it imports nothing from either.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from hydra import config
from hydra.errors import InvalidArgument, Unavailable

#: What a failed connection's details say, read from grpcio 1.85 (BoringSSL), by what it means.
_WRONG_VERSION = "WRONG_VERSION_NUMBER"
_UNTRUSTED = re.compile(
    r"unable to get local issuer certificate|self.signed certificate|unable to get issuer"
    r"|certificate signature failure|unable to verify the first certificate"
)
_EXPIRED = re.compile(r"certificate has expired|certificate is not yet valid")
_NAME_MISMATCH = "Hostname Verification Check failed"
#: A server that refused the handshake just closes the socket: this is all a client sees.
_CLOSED = re.compile(r"Socket closed|Connection reset by peer|Broken pipe|end of file", re.I)


class TlsProblem(Unavailable):
    """A coordinator could not be reached because TLS did not agree."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientTls:
    """How a client verifies coordinators and, for mTLS, proves who it is.

    The files are read each time a channel is built, so certificates rotated
    on disk are picked up on the next reconnect.
    """

    #: PEM file of the CA(s) that signed the coordinators' certificates; None: the system store.
    ca: Path | None = None
    #: PEM client certificate (chain) for mTLS; given with ``key``.
    cert: Path | None = None
    #: PEM private key of ``cert``.
    key: Path | None = None
    #: The name the coordinators' certificates must carry, instead of the target's host.
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            missing = "--tls-key" if self.key is None else "--tls-cert"
            message = "a client certificate needs both --tls-cert and --tls-key"
            raise InvalidArgument(message, path=missing)

    @property
    def mutual(self) -> bool:
        """True when a client certificate is presented (mTLS)."""
        return self.cert is not None

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials from the files as they are now.

        Raises:
            InvalidArgument: a file cannot be read, naming its flag.
        """
        root = _read(self.ca, "--tls-ca") if self.ca is not None else None
        if self.cert is None or self.key is None:
            return grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=_read(self.key, "--tls-key"),
            certificate_chain=_read(self.cert, "--tls-cert"),
        )

    def channel_options(self) -> tuple[tuple[str, str], ...]:
        """gRPC channel options: the server-name override, if any."""
        if self.server_name is None:
            return ()
        return (("grpc.ssl_target_name_override", self.server_name),)


def client_tls(
    *,
    ca: Path | None = None,
    system_store: bool = False,
    cert: Path | None = None,
    key: Path | None = None,
    server_name: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ClientTls | None:
    """TLS from flags, each falling back to its ``HYDRA_TLS_*`` variable; None: plaintext.

    TLS is on when any of them is set (``--tls``/``HYDRA_TLS=1`` alone: the system store).
    """
    settings = ClientTls(
        ca=ca or config.tls_ca(environ),
        cert=cert or config.tls_client_cert(environ),
        key=key or config.tls_client_key(environ),
        server_name=server_name or config.tls_server_name(environ),
    )
    wanted = system_store or config.tls(environ)
    return settings if wanted or settings != ClientTls() else None


def client_tls_from_flags(args: argparse.Namespace) -> ClientTls | None:
    """TLS from the flags `hydra agent` and hydractl share (``--tls-ca``, ``--tls``,
    ``--tls-cert``, ``--tls-key``, ``--tls-server-name``), then HYDRA_TLS_*."""
    return client_tls(
        ca=args.tls_ca,
        system_store=args.tls,
        cert=args.tls_cert,
        key=args.tls_key,
        server_name=args.tls_server_name,
    )


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidArgument(f"cannot read {path}: {error.strerror}", path=flag) from None


def connection_problem(target: str, details: str, tls: ClientTls | None) -> str | None:
    """One line naming ``target`` and what to do, when ``details`` (of a failed
    connection) show that TLS did not agree; None when they show something else.
    """
    if tls is None:
        if _CLOSED.search(details):
            return (
                f"{target} closed the connection during setup: it probably serves TLS; "
                "connect with --tls-ca CA.pem (HYDRA_TLS_CA), or --tls for the system store"
            )
        return None
    return _tls_problem(target, details, tls)


def _tls_problem(target: str, details: str, tls: ClientTls) -> str | None:
    trusted = f"the CA in {tls.ca}" if tls.ca is not None else "the system's CAs"
    if _WRONG_VERSION in details:
        return (
            f"{target} does not speak TLS (a plaintext coordinator?): start it with "
            "--tls-cert/--tls-key, or connect without --tls/--tls-ca"
        )
    if _EXPIRED.search(details):
        return (
            f"the certificate of {target} has expired (or is not valid yet): "
            "renew the coordinator's --tls-cert (it is re-read without a restart)"
        )
    if _UNTRUSTED.search(details):
        return (
            f"the certificate of {target} is not signed by {trusted}: "
            "pass the CA that signed it with --tls-ca (HYDRA_TLS_CA)"
        )
    if _NAME_MISMATCH in details:
        return _name_mismatch(target, tls)
    if _CLOSED.search(details):
        return _refused_client(target, tls)
    return None


def _name_mismatch(target: str, tls: ClientTls) -> str:
    name = tls.server_name or target.rsplit(":", 1)[0].strip("[]")
    return (
        f"the certificate of {target} is not for {name!r}: add that name to its "
        "subjectAltName, or pass the name it has with --tls-server-name"
    )


def _refused_client(target: str, tls: ClientTls) -> str:
    if not tls.mutual:
        return (
            f"{target} requires a client certificate (mTLS) and closed the connection: "
            "pass --tls-cert and --tls-key (HYDRA_TLS_CLIENT_CERT, HYDRA_TLS_CLIENT_KEY)"
        )
    return (
        f"{target} refused the client certificate {tls.cert}: it must be signed by "
        "the coordinator's --tls-client-ca and be valid now"
    )
