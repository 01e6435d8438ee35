"""Hydra: a distributed scheduler with an exact record of every run."""

from __future__ import annotations

import os

# gRPC's core logs every failed TLS handshake on stderr at INFO; Hydra says what
# went wrong itself, in one line (hydra.tls). A GRPC_VERBOSITY of the user's wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

__version__ = "0.1.0"
