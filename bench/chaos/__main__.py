"""``python -m bench.chaos``: see :mod:`bench.chaos.main`."""

from __future__ import annotations

import sys

from bench.chaos.main import main

if __name__ == "__main__":
    sys.exit(main())
