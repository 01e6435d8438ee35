"""Test certificates, made in memory by trustme and written as PEM files: a CA, a
server certificate for 127.0.0.1 and localhost, client certificates, a second
CA, and an expired server certificate."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme

from hydra.coordinator.tls import ServerTls
from hydra.tls import ClientTls

SERVER_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True, kw_only=True, slots=True)
class Pair:
    """A certificate (chain) file and its key file."""

    cert: Path
    key: Path


@dataclass(frozen=True, kw_only=True, slots=True)
class Certs:
    """Every file the TLS tests use, in one directory."""

    ca: Path
    server: Pair
    client: Pair
    #: Another CA, which signed nothing the coordinators present.
    other_ca: Path
    #: A client certificate of the other CA.
    other_client: Pair
    #: A server certificate of ``ca`` that expired yesterday.
    expired_server: Pair

    def server_tls(self, *, mutual: bool = False, pair: Pair | None = None) -> ServerTls:
        """The coordinator's files; with ``mutual``, client certificates of ``ca`` required."""
        pair = pair or self.server
        return ServerTls(cert=pair.cert, key=pair.key, client_ca=self.ca if mutual else None)

    def client_tls(self, *, mutual: bool = False, ca: Path | None = None) -> ClientTls:
        """A client trusting ``ca`` (default: this CA); with ``mutual``, the client cert."""
        client = self.client if mutual else None
        return ClientTls(
            ca=ca or self.ca,
            cert=client.cert if client else None,
            key=client.key if client else None,
        )


def write_ca(ca: trustme.CA, path: Path) -> Path:
    """The CA's certificate as a PEM file."""
    ca.cert_pem.write_to_path(str(path))
    return path


def write_pair(leaf: trustme.LeafCert, directory: Path, name: str) -> Pair:
    """A leaf certificate (with its chain) and key as PEM files ``name.pem``, ``name.key``."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return Pair(cert=cert, key=key)


def make_certs(directory: Path) -> Certs:
    """Fresh certificates in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    expired = ca.issue_cert(
        *SERVER_NAMES, not_before=yesterday - datetime.timedelta(days=30), not_after=yesterday
    )
    return Certs(
        ca=write_ca(ca, directory / "ca.pem"),
        server=write_pair(ca.issue_cert(*SERVER_NAMES), directory, "server"),
        client=write_pair(ca.issue_cert("agent-0", "hydractl@example"), directory, "client"),
        other_ca=write_ca(other, directory / "other-ca.pem"),
        other_client=write_pair(other.issue_cert("intruder"), directory, "other-client"),
        expired_server=write_pair(expired, directory, "expired"),
    )
