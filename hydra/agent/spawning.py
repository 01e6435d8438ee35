"""Starting a program as ``subprocess.Popen`` would, with ``os.posix_spawn``: cheaper.

What :mod:`hydra.agent.process` gives ``Popen`` (stdin from /dev/null, a new
session, ``close_fds``, ``restore_signals``, the program looked up on the
``PATH`` of the environment it is given), :func:`posix_spawn` does with
``posix_spawn``'s file actions and attributes, and raises the errors ``Popen``
raises. It cannot change the working directory: ``Popen`` remains for that.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterator, Mapping, Sequence

#: What ``Popen(restore_signals=True)`` gives back their default: the agent
#: ignores them (Python does), and an ignored signal stays ignored across exec.
#: Signals the agent handles go back to their default at exec anyway. (One
#: difference remains: glibc leaves the two signals below SIGRTMIN that it keeps
#: for itself ignored in the child, where Popen's come to their default; a C
#: library installs its own handlers for them at start, and they are not
#: signals one can send through Python's ``signal``.)
_SIGNALS_TO_DEFAULT = frozenset(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name)
)
#: Errors of one candidate on ``PATH`` after which the next is tried, as execvp does.
_NOT_HERE = frozenset({errno.ENOENT, errno.ENOTDIR})


def posix_spawn(argv: Sequence[str], env: Mapping[str, str], stdout: int, stderr: int) -> int:
    """``Popen(argv, env=env, stdin=DEVNULL, start_new_session=True, close_fds=True)``, cheaper.

    The program is looked up on the ``PATH`` of ``env``, not the agent's; the
    error raised is the one ``Popen`` raises (the first that is not "not
    there", else the last), naming ``argv[0]``. Only 0, 1 and 2 are passed
    on: every other descriptor of the agent is close-on-exec (Python makes its
    own so, and so does gRPC; :func:`keep_inherited_fds_back` sees to those
    the agent was started with).
    """
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    if not _inherited_fds_kept_back:
        keep_inherited_fds_back()
    args = list(argv)
    first: int | None = None
    last = errno.ENOENT
    for path in _candidates(args[0], env):
        try:
            return os.posix_spawn(
                path,
                args,
                env,
                file_actions=actions,
                setsid=True,
                setsigmask=(),
                setsigdef=_SIGNALS_TO_DEFAULT,
            )
        except OSError as error:
            last = error.errno or errno.ENOENT
            if first is None and last not in _NOT_HERE:
                first = last
    code = first if first is not None else last
    raise OSError(code, os.strerror(code), args[0])


_inherited_fds_kept_back = False


def keep_inherited_fds_back() -> None:
    """Makes close-on-exec every descriptor above 2 that is not, once: those the agent inherited.

    What the agent opens itself is close-on-exec already (Python's and gRPC's
    descriptors are), so that ``posix_spawn``, which closes nothing, passes on
    0, 1 and 2 only, as ``Popen(close_fds=True)`` does.
    """
    global _inherited_fds_kept_back
    with contextlib.suppress(FileNotFoundError):  # no /proc: nothing inherited to find
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own descriptor, gone already
                if int(name) > 2 and os.get_inheritable(int(name)):
                    os.set_inheritable(int(name), False)
    _inherited_fds_kept_back = True


def _candidates(program: str, env: Mapping[str, str]) -> Iterator[str]:
    """Where to exec ``program`` from, in order: ``PATH`` of ``env`` unless it holds a slash.

    A candidate that ``stat`` says is not there is skipped rather than spawned;
    a spawn costs a hundred times more.
    """
    if os.path.dirname(program):
        yield program
        return
    directories = os.get_exec_path(env)
    for index, directory in enumerate(directories):
        path = os.path.join(directory, program)
        if index < len(directories) - 1:  # the last one is tried regardless: its error is raised
            try:
                os.stat(path)
            except OSError as error:
                if error.errno in _NOT_HERE:
                    continue
        yield path
