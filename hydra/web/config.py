"""What `hydra web` is told: where to listen, which coordinators, which TLS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydra.tls import ClientTls

#: Where `hydra web` and `hydra dev` serve by default.
DEFAULT_LISTEN = "127.0.0.1:7080"


@dataclass(frozen=True, kw_only=True, slots=True)
class WebConfig:
    """Settings of one `hydra web` process."""

    #: host:port to serve on; port 0 picks a free one (the URL printed says which).
    listen: str = DEFAULT_LISTEN
    #: Coordinator addresses, tried in order (failover).
    coordinators: tuple[str, ...] = ("127.0.0.1:7070",)
    #: How to reach the coordinators over TLS; None for plaintext.
    coordinator_tls: ClientTls | None = None
    #: Serve HTTPS with this certificate and key (both, or neither).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Serve plaintext beyond loopback (the operator said --insecure).
    insecure: bool = False
    #: File of the key that signs and encrypts session cookies; None: a random
    #: key per process (sessions end when it restarts). Several `hydra web`
    #: behind one load balancer must share one.
    session_key_file: Path | None = None
    #: `hydra dev` only: a file holding the local admin's credential, for the
    #: one-time sign-in URL printed at start.
    dev_login_credential: Path | None = None
    #: uvicorn's log level.
    log_level: str = "info"

    @property
    def https(self) -> bool:
        return self.tls_cert is not None
