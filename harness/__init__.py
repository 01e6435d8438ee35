"""Hydra as real processes, for the tests, the benchmarks and the chaos tool.

Not part of the ``hydra`` wheel: it lives at the repository root, beside
``tests/`` and ``bench/``, which import it.

- :mod:`harness.wait`: one deadline-bound wait, and the harness's errors.
- :mod:`harness.net`: free ports and whether one listens.
- :mod:`harness.processes`: child processes in sessions of their own, logged
  to files and always stopped; clean environments; /proc helpers.
- :mod:`harness.postgres`: the embedded PostgreSQL server, or an external one.
- :mod:`harness.hydra`: ``hydra coordinator``, ``hydra agent`` and ``hydractl``.
"""
