"""``--tls``: certificates for one benchmark run (a CA and a server certificate
for 127.0.0.1, made by trustme in a temporary directory), and the flags and
client settings that use them, so TLS's cost can be measured."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme

from hydra.tls import ClientTls


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchTls:
    """The CA and the coordinators' certificate files."""

    ca: Path
    cert: Path
    key: Path

    def coordinator_flags(self) -> list[str]:
        """``hydra coordinator`` serving TLS."""
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key)]

    def agent_flags(self) -> list[str]:
        """``hydra agent`` verifying the coordinator."""
        return ["--tls-ca", str(self.ca)]

    def client(self) -> ClientTls:
        """The SDK verifying the coordinator."""
        return ClientTls(ca=self.ca)


def make_tls(directory: Path | None = None) -> BenchTls:
    """Fresh certificates in ``directory`` (default: a new temporary one, left for the OS)."""
    where = directory or Path(tempfile.mkdtemp(prefix="hydra-bench-tls-"))
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = BenchTls(ca=where / "ca.pem", cert=where / "server.pem", key=where / "server.key")
    ca.cert_pem.write_to_path(str(files.ca))
    leaf.private_key_pem.write_to_path(str(files.key))
    files.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return files
