"""What an attempt or a command check gets from the agent: which variables, which user.

A process the agent spawns sees none of the agent's own environment but a
small allow-list (:data:`DEFAULT_PASSED`, the ``LC_*`` variables, and what
``--pass-env`` adds), so that a credential or a cloud key in the agent's
environment stays there. With ``--run-as USER``, it runs as that user, with
the user's primary and supplementary groups, and ``HOME``, ``USER`` and
``LOGNAME`` set to the user's; the agent itself may stay root.

The user is changed by a launcher exec'd in the process's place (``setpriv``,
else :mod:`hydra.agent._run_as`), not by ``subprocess``'s ``user=``: that
makes ``subprocess`` fork rather than vfork, and a fork of the agent, whose
gRPC threads are running, now and then dies of SIGSEGV or SIGABRT in gRPC's
fork handlers before it reaches ``exec`` (a few in a hundred, measured).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import pwd
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Variables of the agent's environment that every process it spawns gets.
DEFAULT_PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "LC_*")
#: Agent settings that the processes it runs must not see, even when asked.
AGENT_ONLY_VARIABLES = frozenset({"HYDRA_TOKEN"})


class IsolationError(ValueError):
    """The agent cannot isolate its processes as configured."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunAs:
    """A user to run processes as: its ids, groups and home."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    #: What runs a program as the user: ``(*launcher, *argv)``.
    launcher: tuple[str, ...] = ()

    @classmethod
    def lookup(cls, user: str, *, setpriv: str | None = shutil.which("setpriv")) -> RunAs:
        """The user of that name (or uid), checked to be one this agent can run as.

        Raises:
            IsolationError: no such user, or the agent is neither root nor that user.
        """
        entry = _password_entry(user)
        if os.geteuid() not in (0, entry.pw_uid):
            raise IsolationError(
                f"--run-as {user}: the agent must run as root to run processes as another "
                f"user (it runs as uid {os.geteuid()})"
            )
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        ids = (entry.pw_uid, entry.pw_gid, groups)
        return cls(
            user=entry.pw_name,
            uid=entry.pw_uid,
            gid=entry.pw_gid,
            groups=groups,
            home=entry.pw_dir,
            launcher=_setpriv(setpriv, *ids) if setpriv else _python_launcher(*ids),
        )

    @property
    def switches(self) -> bool:
        """Whether spawning changes user (it does not when the agent already is that user)."""
        return os.geteuid() != self.uid

    def command(self, argv: Sequence[str]) -> list[str]:
        """What to spawn so that ``argv`` runs as this user."""
        return [*self.launcher, *argv] if self.switches else list(argv)

    def identity(self) -> dict[str, str]:
        """The variables that say who the process is."""
        return {"HOME": self.home, "USER": self.user, "LOGNAME": self.user}


def _setpriv(setpriv: str, uid: int, gid: int, groups: Sequence[int]) -> tuple[str, ...]:
    listed = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    return (setpriv, f"--reuid={uid}", f"--regid={gid}", listed, "--")


def _python_launcher(uid: int, gid: int, groups: Sequence[int]) -> tuple[str, ...]:
    script = str(Path(__file__).with_name("_run_as.py"))
    listed = ",".join(map(str, groups))
    return (sys.executable, "-I", "-S", script, str(uid), str(gid), listed, "--")


def _password_entry(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise IsolationError(f"--run-as {user}: no such user") from None


@dataclass(frozen=True, kw_only=True, slots=True)
class Isolation:
    """How the agent isolates the processes it spawns (attempts and command checks)."""

    #: Names (or ``fnmatch`` patterns such as ``AWS_REGION`` or ``PIP_*``) passed on
    #: from the agent's environment, besides :data:`DEFAULT_PASSED`.
    pass_env: tuple[str, ...] = ()
    #: The user processes run as; None: the agent's own.
    run_as: RunAs | None = None
    #: Where secrets are read from, one file per secret; None: no secrets here.
    secrets_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pass_env", tuple(self.pass_env))
        for name in self.pass_env:
            if name in AGENT_ONLY_VARIABLES:
                raise IsolationError(f"--pass-env {name}: the agent's credential is never passed")

    def environment(self, base: Mapping[str, str] = os.environ) -> dict[str, str]:
        """The variables a spawned process starts with, before the task's own."""
        # The names are matched once per set of names (the agent's environment does
        # not change between attempts), not once per attempt: fnmatch is slow.
        passed = _passed(frozenset(base), (*DEFAULT_PASSED, *self.pass_env))
        env = {name: base[name] for name in passed}
        if self.run_as is not None:
            env.update(self.run_as.identity())
        return env

    def command(self, argv: Sequence[str]) -> list[str]:
        """What to spawn so that ``argv`` runs as the user processes run as."""
        return self.run_as.command(argv) if self.run_as is not None else list(argv)

    @property
    def owner(self) -> tuple[int, int] | None:
        """(uid, gid) that the attempt's files must belong to, when it is not the agent."""
        run_as = self.run_as
        return (run_as.uid, run_as.gid) if run_as is not None and run_as.switches else None


@functools.lru_cache(maxsize=8)
def _passed(names: frozenset[str], patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Of `names`, those passed on to spawned processes."""
    return tuple(
        sorted(
            name for name in names if name not in AGENT_ONLY_VARIABLES and _matches(name, patterns)
        )
    )


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
