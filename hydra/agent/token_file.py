"""The agent's credential in a file (``--token-file``), rather than in its environment.

A process's environment stays readable in ``/proc/<pid>/environ`` by every
process of the same user, the agent's own attempts included; a file readable by
the agent only does not. The file is read again at every connection, so a
rotated credential is used from the next reconnect on.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping

log = logging.getLogger("hydra.agent")

#: Longest token file read.
MAX_TOKEN_BYTES = 16 * 1024


class TokenFileError(ValueError):
    """The token file cannot be used."""


def read_token_file(path: str) -> str:
    """The credential in the file, whitespace stripped.

    Raises:
        TokenFileError: the file is missing, unreadable, too big or empty.
    """
    try:
        with open(path, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise TokenFileError(f"--token-file {path}: not a regular file")
            raw = file.read(MAX_TOKEN_BYTES + 1)
    except OSError as error:
        raise TokenFileError(f"--token-file {path}: {error.strerror or error}") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise TokenFileError(f"--token-file {path}: larger than {MAX_TOKEN_BYTES // 1024} KiB")
    token = raw.decode("utf-8", "replace").strip()
    if not token:
        raise TokenFileError(f"--token-file {path}: the file is empty")
    return token


def check_token_file(path: str) -> None:
    """Reads the file once (a start error if it cannot be used) and warns if others may read it.

    Raises:
        TokenFileError: see :func:`read_token_file`.
    """
    read_token_file(path)
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "--token-file %s can be read by its group or others (mode %04o); chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )


def warn_of_token_in_environment(environ: Mapping[str, str], *, tasks_run_as_agent: bool) -> None:
    """Warns when ``HYDRA_TOKEN`` is in the agent's environment and tasks could read it."""
    if "HYDRA_TOKEN" in environ and tasks_run_as_agent:
        log.warning(
            "HYDRA_TOKEN is in the agent's environment: tasks running as the same user can "
            "read it from /proc/%d/environ; pass the credential with --token-file instead",
            os.getpid(),
        )
