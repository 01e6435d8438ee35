"""Secret values, read on the agent from its secrets directory (``--secrets-dir``).

One file per secret, named as the secret, holding its value with at most one
trailing newline (stripped), as Kubernetes and systemd mount them (links are
followed: Kubernetes mounts through ``..data`` links). Coordinators only ever
have the names.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from hydra.domain import secret_name_problem

#: Largest secret file read.
MAX_SECRET_BYTES = 64 * 1024


class SecretError(Exception):
    """A secret the attempt needs cannot be read."""


def resolve_secrets(secret_env: Mapping[str, str], directory: str | None) -> dict[str, bytes]:
    """The value of each variable's secret (variable name to value).

    Raises:
        SecretError: a secret is missing, unreadable, too big or not a valid name;
            the message names the secret and the directory.
    """
    if not secret_env:
        return {}
    if directory is None:
        names = ", ".join(sorted(set(secret_env.values())))
        raise SecretError(f"secret {names} needed, but this agent has no --secrets-dir")
    return {variable: read_secret(directory, name) for variable, name in secret_env.items()}


def read_secret(directory: str, name: str) -> bytes:
    """One secret's value, its one trailing newline stripped.

    Raises:
        SecretError: see :func:`resolve_secrets`.
    """
    if (problem := secret_name_problem(name)) is not None:
        raise SecretError(problem)
    path = os.path.join(directory, name)
    try:
        raw = _read_regular_file(path)
    except FileNotFoundError:
        where = "" if os.path.isdir(directory) else " (the directory does not exist)"
        raise SecretError(f"secret {name!r} not found in {directory}{where}") from None
    except OSError as error:
        raise SecretError(f"secret {name!r} in {directory}: {error.strerror or error}") from None
    value = raw.removesuffix(b"\n")
    if b"\x00" in value:
        raise SecretError(f"secret {name!r} in {directory} holds a NUL byte")
    return value


def _read_regular_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO in its place cannot block us
    with open(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        raw = file.read(MAX_SECRET_BYTES + 1)
    if len(raw) > MAX_SECRET_BYTES:
        raise OSError(0, f"larger than {MAX_SECRET_BYTES // 1024} KiB")
    return raw
