"""Runs a program as another user: ``python -I -S _run_as.py UID GID GROUPS -- ARGV...``.

Where ``setpriv`` (util-linux) is missing, the agent starts attempts under
``--run-as`` through this instead (see :mod:`hydra.agent.isolation`): the
supplementary groups (comma-separated, maybe none), then the group, then the
user are set, and the program is exec'd in place, keeping the pid, session and
process group the agent watches. Only ``os`` and ``sys``: it starts in a few
milliseconds.
"""

import os
import sys
import warnings  # noqa: F401 - os.execvp imports it, and after setuid it may be out of reach


def main(argv: list[str]) -> None:
    """Drops to the user and execs the program; exits 127 if it cannot be run."""
    uid, gid, groups, separator, *command = argv
    if separator != "--" or not command:
        sys.exit("usage: _run_as.py UID GID GROUPS -- ARGV...")
    os.setgroups([int(group) for group in groups.split(",") if group])
    os.setgid(int(gid))
    os.setuid(int(uid))
    try:
        os.execvp(command[0], command)
    except OSError as error:
        sys.stderr.write(f"hydra: cannot run {command[0]}: {error.strerror}\n")
        os._exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
