"""`python -m hydra` is the `hydra` command."""

from __future__ import annotations

from hydra.cli import main

raise SystemExit(main())
