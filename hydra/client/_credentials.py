"""Credentials on the command line: the flags of `create` (shared by hydractl and
`hydra credentials`), how credentials are shown, and where a new secret goes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hydra import config
from hydra.client._render import JSONObject, _pairs, dumps, iso, local, table
from hydra.domain import Credential, NewCredential, Role
from hydra.spec import parse_duration

_NONE = "-"
WARNING = "Store this secret now: it is not shown again (only its hash is kept)."


def add_create_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of `credentials create`."""
    parser.add_argument("--name", required=True, help="unique name, e.g. ci or agent-web-1")
    parser.add_argument(
        "--role", required=True, choices=[role.value for role in Role], help="what it may do"
    )
    parser.add_argument("--scope", default="", metavar="PREFIX", help="only tasks under PREFIX")
    parser.add_argument("--expires", metavar="DURATION", help="expires after this, e.g. 90d")
    parser.add_argument("--agent-id", metavar="ID", help="role agent: the agent id it connects as")
    parser.add_argument(
        "--label", action="append", default=None, metavar="KEY=VALUE",
        help="role agent: a label its agent must announce; repeatable (default: any labels)",
    )  # fmt: skip
    parser.add_argument(
        "--max-capacity",
        type=int,
        metavar="N",
        help="role agent: the most capacity it may announce",
    )
    parser.add_argument(
        "--output-file", metavar="PATH", help="write the secret to PATH (mode 0600), not stdout"
    )


def create_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of a create call, from the flags."""
    expires_at = None
    if args.expires:
        expires_at = datetime.now(UTC) + parse_duration(args.expires, "--expires")
    return {
        "name": args.name,
        "role": Role(args.role),
        "scope": args.scope,
        "expires_at": expires_at,
        "agent_id": args.agent_id,
        "labels": None if args.label is None else config.labels(args.label),
        "max_capacity": args.max_capacity,
    }


def report_created(args: argparse.Namespace, created: NewCredential) -> None:
    """Show a new credential and hand over its secret: to --output-file, else stdout."""
    if args.output_file:
        write_secret(Path(args.output_file), created.secret)
    secret = None if args.output_file else created.secret
    if args.output == "json":
        data = credential_json(created.credential)
        data.update(secret=secret, secret_file=args.output_file)
        print(dumps(data), flush=True)
    else:
        print(f"credential {created.credential.name} created ({created.credential.role})")
        print(f"secret written to {args.output_file}" if secret is None else secret, flush=True)
    if secret is not None:
        print(WARNING, file=sys.stderr)


def write_secret(path: Path, secret: str) -> None:
    """Write a secret readable by its owner only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(fd, 0o600)  # also when the file existed with another mode
        file.write(secret + "\n")


def report_list(args: argparse.Namespace, credentials: list[Credential]) -> None:
    """Credentials as a table or JSON."""
    if args.output == "json":
        print(dumps([credential_json(c) for c in credentials]), flush=True)
    else:
        print(credentials_table(credentials), flush=True)


def report_revoked(args: argparse.Namespace, credential: Credential) -> None:
    """A revoked credential."""
    if args.output == "json":
        print(dumps(credential_json(credential)), flush=True)
    else:
        print(f"credential {credential.name} revoked", flush=True)


def credential_json(credential: Credential) -> JSONObject:
    """A credential as JSON (it has no secret)."""
    return {
        "name": credential.name,
        "role": credential.role.value,
        "scope": credential.scope,
        "agent_id": credential.agent_id,
        "labels": None if credential.labels is None else dict(credential.labels),
        "max_capacity": credential.max_capacity,
        "created_by": credential.created_by,
        "created_at": iso(credential.created_at),
        "expires_at": iso(credential.expires_at),
        "revoked_at": iso(credential.revoked_at),
        "last_used_at": iso(credential.last_used_at),
    }


def credentials_table(credentials: Iterable[Credential]) -> str:
    """Credentials, one per line."""
    headers = ["NAME", "ROLE", "SCOPE", "AGENT", "CREATED BY", "CREATED", "EXPIRES"]
    headers += ["LAST USED", "REVOKED"]
    rows = [
        [
            c.name,
            c.role.value,
            c.scope or _NONE,
            _agent(c),
            c.created_by,
            local(c.created_at),
            local(c.expires_at),
            local(c.last_used_at),
            local(c.revoked_at),
        ]
        for c in credentials
    ]
    return table(headers, rows)


def _agent(credential: Credential) -> str:
    if credential.agent_id is None:
        return _NONE
    parts = [credential.agent_id]
    if credential.labels is not None:
        parts.append(_pairs(credential.labels) if credential.labels else "(no labels)")
    if credential.max_capacity is not None:
        parts.append(f"max {credential.max_capacity}")
    return " ".join(parts)


# --- hydractl credentials ... ---------------------------------------------------


def hydractl_create(args: argparse.Namespace, client: Any) -> int:
    """``credentials create``."""
    report_created(args, client.create_credential(**create_arguments(args)))
    return 0


def hydractl_list(args: argparse.Namespace, client: Any) -> int:
    """``credentials list``."""
    report_list(args, client.list_credentials(include_revoked=args.all))
    return 0


def hydractl_revoke(args: argparse.Namespace, client: Any) -> int:
    """``credentials revoke NAME``."""
    report_revoked(args, client.revoke_credential(args.name))
    return 0
