"""`hydra web`: its flags, and starting it (the server's modules load only then,
so `hydra agent` needs no web framework)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from hydra import config
from hydra.tls import client_tls
from hydra.web.config import DEFAULT_LISTEN, WebConfig


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "web", help="serve the web UI and the HTTP JSON API (talks to coordinators over gRPC)"
    )
    parser.add_argument(
        "--listen", default=os.environ.get("HYDRA_WEB_LISTEN", DEFAULT_LISTEN), metavar="HOST:PORT",
        help=f"where to serve (HYDRA_WEB_LISTEN; default {DEFAULT_LISTEN}; port 0: any free port)",
    )  # fmt: skip
    parser.add_argument(
        "--coordinator", action="append", default=None, metavar="ADDR",
        help="coordinator address (repeatable; HYDRA_COORDINATORS)",
    )  # fmt: skip
    parser.add_argument(
        "--tls-cert", type=Path, default=_path("HYDRA_WEB_TLS_CERT"), metavar="PEM",
        help="serve HTTPS with this certificate chain (HYDRA_WEB_TLS_CERT)",
    )  # fmt: skip
    parser.add_argument(
        "--tls-key", type=Path, default=_path("HYDRA_WEB_TLS_KEY"), metavar="PEM",
        help="private key of --tls-cert (HYDRA_WEB_TLS_KEY)",
    )  # fmt: skip
    parser.add_argument(
        "--insecure", action="store_true", default=config.insecure(),
        help="allow plaintext HTTP beyond loopback (HYDRA_INSECURE=1)",
    )  # fmt: skip
    parser.add_argument(
        "--session-key-file", type=Path, default=_path("HYDRA_WEB_SESSION_KEY_FILE"),
        metavar="PATH",
        help="key that signs session cookies, shared by every `hydra web` behind one "
        "address (HYDRA_WEB_SESSION_KEY_FILE; default: a new key per start, which signs "
        "everyone out on restart)",
    )  # fmt: skip
    trust = parser.add_argument_group("TLS to the coordinators")
    trust.add_argument(
        "--coordinator-tls-ca", type=Path, default=None, metavar="PEM",
        help="verify coordinators against this CA; turns TLS on (HYDRA_TLS_CA)",
    )  # fmt: skip
    trust.add_argument(
        "--coordinator-tls", action="store_true",
        help="TLS to coordinators verified against the system's CAs (HYDRA_TLS=1)",
    )  # fmt: skip
    trust.add_argument(
        "--coordinator-tls-cert", type=Path, default=None, metavar="PEM",
        help="client certificate for coordinators that require one (HYDRA_TLS_CLIENT_CERT)",
    )  # fmt: skip
    trust.add_argument(
        "--coordinator-tls-key", type=Path, default=None, metavar="PEM",
        help="private key of --coordinator-tls-cert (HYDRA_TLS_CLIENT_KEY)",
    )  # fmt: skip
    trust.add_argument(
        "--coordinator-tls-server-name", default=None, metavar="NAME",
        help="name the coordinators' certificates carry (HYDRA_TLS_SERVER_NAME)",
    )  # fmt: skip
    parser.add_argument("--dev-login-credential", type=Path, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def _path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def web_config(args: argparse.Namespace) -> WebConfig:
    """WebConfig from the flags, then the environment."""
    coordinators = [
        part.strip() for flag in args.coordinator or [] for part in flag.split(",") if part.strip()
    ] or config.coordinators()
    tls = client_tls(
        ca=args.coordinator_tls_ca,
        system_store=args.coordinator_tls,
        cert=args.coordinator_tls_cert,
        key=args.coordinator_tls_key,
        server_name=args.coordinator_tls_server_name,
    )
    if tls is not None:
        tls.credentials()  # read the files now: a missing one is an error at start
    return WebConfig(
        listen=args.listen,
        coordinators=tuple(coordinators),
        coordinator_tls=tls,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure=args.insecure,
        session_key_file=args.session_key_file,
        dev_login_credential=args.dev_login_credential,
        log_level=args.log_level,
    )


def run(args: argparse.Namespace) -> int:
    from hydra.web.server import check_config, run_web

    settings = web_config(args)
    check_config(settings)
    return asyncio.run(run_web(settings))
